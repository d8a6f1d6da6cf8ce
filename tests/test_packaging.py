"""The npm package and the gateway serve one browser client (the wheel: tests/test_wheel.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_npm_package_ships_the_gateways_own_client() -> None:
    """clients/js/index.js is notifier/gateway/client.js (copy it after a change)."""
    served = (ROOT / "notifier" / "gateway" / "client.js").read_bytes()
    assert served == (ROOT / "clients" / "js" / "index.js").read_bytes()


def test_the_django_app_ships_the_gateways_own_client() -> None:
    """notifier/django/static/notifier/client.js is notifier/gateway/client.js (a link to it)."""
    served = (ROOT / "notifier" / "gateway" / "client.js").read_bytes()
    assert (
        served == (ROOT / "notifier" / "django" / "static" / "notifier" / "client.js").read_bytes()
    )
