"""The release artifacts: ``python -m build`` makes an sdist and a wheel that pass ``twine check``,
and the wheel, installed alone into a fresh venv, imports, answers ``notifier --version``,
writes a config ``notifier check-config`` accepts, and publishes to a real redis-server.

The build runs on a copy of what a clone holds (tracked and untracked, not ignored files), so the
checkout gets no build files and a file missing from git is missing here too.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import notifier
from notifier.testing import EventCollector, RedisServer

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Artifacts:
    sdist: Path
    wheel: Path


def clone_files(root: Path) -> list[str]:
    """The files a clone of ``root`` would have, plus untracked ones not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # A file deleted or moved in the working tree but not yet in the index is not there.
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """The sdist and the wheel of the working tree, as ``python -m build`` makes them (the
    wheel is built from the sdist, so a file the sdist lacks is missing from the wheel)."""
    source = tmp_path_factory.mktemp("source")
    for name in clone_files(ROOT):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert 0 == done.returncode, done.stdout[-2000:] + done.stderr[-2000:]
    (sdist,) = out.glob("celery_notifier-*.tar.gz")
    (wheel,) = out.glob("celery_notifier-*-py3-none-any.whl")
    return Artifacts(sdist, wheel)


def test_twine_check_passes_the_sdist_and_the_wheel(artifacts: Artifacts) -> None:
    """Both artifacts have metadata PyPI accepts and a README it renders."""
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", artifacts.sdist, artifacts.wheel],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert 0 == done.returncode, done.stdout + done.stderr


def test_the_wheel_is_celery_notifier_at_the_packages_version(artifacts: Artifacts) -> None:
    """The distribution is celery-notifier, its version notifier.__version__, and it installs
    the notifier command."""
    with zipfile.ZipFile(artifacts.wheel) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        fields = email.parser.Parser().parsestr(wheel.read(metadata).decode())
        (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
    assert ("celery-notifier", notifier.__version__) == (fields["Name"], fields["Version"])
    assert "notifier = notifier.cli:main" in scripts


def test_the_library_depends_on_neither_sqlalchemy_nor_celery(artifacts: Artifacts) -> None:
    """SQLAlchemy and Celery come only with extras (app, celery); the library itself needs
    neither, and an extra that brings another names celery-notifier, not the PyPI notifier."""
    with zipfile.ZipFile(artifacts.wheel) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        requires = email.parser.Parser().parsestr(wheel.read(metadata).decode())
    requires_dist = requires.get_all("Requires-Dist") or []
    core = sorted(
        r.split(">")[0].split("[")[0].lower() for r in requires_dist if "extra ==" not in r
    )
    assert ["janus", "orjson", "prometheus_client", "redis", "structlog"] == core
    assert any(r.startswith("sqlalchemy") and 'extra == "app"' in r for r in requires_dist)
    assert 'celery-notifier[celery]; extra == "app"' in requires_dist
    assert [] == [r for r in requires_dist if r.startswith("notifier")]


def test_the_wheel_ships_the_package_data_and_no_checkout_folders(artifacts: Artifacts) -> None:
    """The gateway's page and client, the schemas, the config template, py.typed and the
    licence are in; the reference application (tasks/: a top-level ``tasks`` would shadow every
    Celery project's own), the tests, bench/ and examples/ are not."""
    with zipfile.ZipFile(artifacts.wheel) as wheel:
        names = set(wheel.namelist())
    for data in (
        "notifier/gateway/page.html",
        "notifier/gateway/client.js",
        "notifier/schema/task-event.json",
        "notifier/schema/workflow-event.json",
        "notifier/config/default.toml",
        "notifier/py.typed",
    ):
        assert data in names
    assert [] != [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    top_level = {name.split("/", 1)[0] for name in names if ".dist-info/" not in name}
    assert {"notifier"} == top_level
    assert [] == [n for n in names if "/tests/" in n or "/tasks/" in n]


def test_the_sdist_carries_the_changelog_readme_and_licence(artifacts: Artifacts) -> None:
    """What a packager reads beside the code is in the sdist (the changelog needs MANIFEST.in)."""
    with tarfile.open(artifacts.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"CHANGELOG.md", "README.md", "LICENSE", "pyproject.toml"} <= names


def test_the_wheel_runs_alone_in_a_fresh_venv(
    artifacts: Artifacts, tmp_path: Path, redis_server: RedisServer, collector: EventCollector
) -> None:
    """Installed with its dependencies only, away from the checkout: it imports from the venv,
    `notifier --version` prints the version, `notifier init` writes a file `notifier
    check-config` accepts, and an event published there reaches a subscriber here."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python, command = venv / "bin" / "python", venv / "bin" / "notifier"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    done = subprocess.run(
        [*install, "--quiet", "--disable-pip-version-check", artifacts.wheel],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert 0 == done.returncode, done.stderr[-2000:]
    # Nothing of the checkout or of this test's environment may be found from there.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NOTIFIER_"))}
    env["NOTIFIER_REDIS_URL"] = redis_server.url
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=60)

    version = run(command, "--version")
    assert (0, f"notifier {notifier.__version__}\n") == (version.returncode, version.stdout)
    assert 0 == run(command, "init").returncode
    checked = run(command, "check-config")
    assert (0, "config.toml: OK\n") == (checked.returncode, checked.stdout), checked.stderr

    smoke = (
        "import notifier\n"
        "n = notifier.Notifier()\n"  # defaults and $NOTIFIER_REDIS_URL
        "n.publish_completed('wheel-smoke', result={'rows': 10})\n"
        "n.close(10.0)\n"
        "print(notifier.__file__)\n"
        "raise SystemExit(0 if n.stats()['published'] == 1 else 1)\n"
    )
    published = run(python, "-c", smoke)
    assert 0 == published.returncode, published.stderr[-2000:]
    # The last line: structlog, unconfigured, prints the notifier's log events to stdout too.
    assert Path(published.stdout.splitlines()[-1]).is_relative_to(venv), published.stdout
    (event,) = collector.wait_for(1)
    assert ("completed", "wheel-smoke", {"rows": 10}) == (
        event["type"],
        event["task_id"],
        event["data"]["result"],
    )
