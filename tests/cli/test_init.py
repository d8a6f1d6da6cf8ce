"""`notifier init [PATH]`: the commented config file, the same text as the repository's
config.toml, written for a user who installed the package and has no checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from notifier import NotifierConfig, load_config

from support.helpers import CLEAN_ENV

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "notifier"  # the console script pyproject declares


def run_notifier(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=30
    )


def test_init_writes_the_repositorys_config_toml_which_check_config_accepts(
    tmp_path: Path,
) -> None:
    """Without a path, ./config.toml: the repository's file to the byte, and the lookup of
    `notifier check-config` finds it and accepts it."""
    written = run_notifier("init", cwd=tmp_path)
    assert (0, "wrote config.toml\n", "") == (written.returncode, written.stdout, written.stderr)
    # If the template changed on purpose, `notifier init --force config.toml` at the
    # repository's root writes it there too.
    assert (ROOT / "config.toml").read_text() == (tmp_path / "config.toml").read_text()
    checked = run_notifier("check-config", cwd=tmp_path)
    assert (0, "config.toml: OK\n") == (checked.returncode, checked.stdout), checked.stderr


def test_init_writes_to_the_path_given_every_key_at_its_default(tmp_path: Path) -> None:
    """`notifier init PATH` writes PATH; loaded, it is the built-in defaults, and
    `notifier check-config PATH` says OK."""
    path = tmp_path / "settings.toml"
    assert 0 == run_notifier("init", path, cwd=tmp_path).returncode
    assert NotifierConfig(path=str(path)) == load_config(path)
    checked = run_notifier("check-config", path, cwd=tmp_path)
    assert (0, f"{path}: OK\n") == (checked.returncode, checked.stdout)


def test_init_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    """An existing file is left as it was, with exit 1 and one line saying so; --force
    overwrites it."""
    path = tmp_path / "config.toml"
    path.write_text('[redis]\nurl = "redis://cache:6379/0"\n')
    refused = run_notifier("init", cwd=tmp_path)
    assert (1, "", "notifier: config.toml already exists (--force overwrites it)\n") == (
        refused.returncode,
        refused.stdout,
        refused.stderr,
    )
    assert '[redis]\nurl = "redis://cache:6379/0"\n' == path.read_text()
    forced = run_notifier("init", "--force", path, cwd=tmp_path)
    assert (0, f"wrote {path}\n") == (forced.returncode, forced.stdout)
    assert (ROOT / "config.toml").read_text() == path.read_text()


def test_init_into_a_missing_folder_is_one_error_line(tmp_path: Path) -> None:
    """A path that cannot be written is exit 1 and one line naming it, no traceback."""
    path = tmp_path / "missing" / "config.toml"
    done = run_notifier("init", path, cwd=tmp_path)
    expected = f"notifier: {path}: cannot be written: No such file or directory\n"
    assert (1, expected) == (done.returncode, done.stderr)
