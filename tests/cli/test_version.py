"""`notifier --version` says ``notifier.__version__``, the one place the version is written (the
wheel's metadata reads it too: tests/test_wheel.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import notifier

from support.helpers import CLEAN_ENV

SCRIPT = Path(sys.executable).parent / "notifier"  # the console script pyproject declares


def test_notifier_version_prints_the_packages_version(tmp_path: Path) -> None:
    """`notifier --version` prints `notifier <notifier.__version__>` and exits 0."""
    done = subprocess.run(
        [SCRIPT, "--version"],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (0, f"notifier {notifier.__version__}\n") == (done.returncode, done.stdout)
