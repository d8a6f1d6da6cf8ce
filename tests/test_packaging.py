"""What `pip install .` installs: the notifier package and its own dependencies, nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of the checkout (so the checkout gets no build files)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "notifier", source / "notifier", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("tasks", "tests", "bench", "examples"):  # present, as in a clone
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (built,) = out.glob("celery_notifier-*.whl")  # the distribution is celery-notifier
    return zipfile.ZipFile(built)


@pytest.mark.timeout(300)
def test_the_wheel_ships_the_notifier_package_only(wheel: zipfile.ZipFile) -> None:
    """No top-level tasks package (it would shadow every Celery project's own tasks.py), nor
    tests, bench or examples."""
    top_level = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert {"notifier"} == {name for name in top_level if not name.endswith(".dist-info")}
    assert "notifier/py.typed" in wheel.namelist()
    assert "notifier/schema/task-event.json" in wheel.namelist()  # `notifier schema`'s files
    assert "notifier/gateway/client.js" in wheel.namelist()  # the gateway's /client.js


def test_the_npm_package_ships_the_gateways_own_client() -> None:
    """clients/js/index.js is notifier/gateway/client.js (copy it after a change)."""
    root = Path(__file__).resolve().parent.parent
    served = (root / "notifier" / "gateway" / "client.js").read_bytes()
    assert served == (root / "clients" / "js" / "index.js").read_bytes()


@pytest.mark.timeout(300)
def test_the_library_depends_on_neither_sqlalchemy_nor_celery(wheel: zipfile.ZipFile) -> None:
    """SQLAlchemy and Celery come only with extras (app, celery); the library itself needs
    neither."""
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.split(":", 1)[1].strip()
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    core = sorted(r.split(">")[0].split("[")[0].lower() for r in requires if "extra ==" not in r)
    assert ["janus", "orjson", "prometheus_client", "redis", "structlog"] == core
    assert any(r.startswith("sqlalchemy") and 'extra == "app"' in r for r in requires)
