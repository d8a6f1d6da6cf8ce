"""``notifier health``: fetch the health endpoint's report and put it in a few readable lines.

The exit status is the command line's (``notifier.cli``); the report itself is made by the
serving process (``notifier.health.report``).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from notifier.config import NotifierConfig
from notifier.exceptions import NotifierError


def summary(url: str, status: int, report: dict[str, Any], now: float | None = None) -> str:
    """The health report as a few readable lines: the verdict, then one line per process.
    ``now``: the wall time to give errors their age by (default: the clock)."""
    now = time.time() if now is None else now
    lines = [f"{report.get('status')} (HTTP {status} from {url})"]
    processes = report.get("processes") or []
    if not processes:
        lines += [f"  {reason}" for reason in report.get("reasons") or []]
    for p in processes:
        verdict = "healthy" if p.get("healthy") else "UNHEALTHY: " + "; ".join(p.get("reasons", []))
        by_reason = p.get("dropped_by_reason") or {}
        dropped = str(p.get("dropped"))
        if by_reason:
            dropped += " (" + ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) + ")"
        lag = p.get("loop_lag")
        fields = [
            f"pid {p.get('pid')}",
            verdict,
            "connected" if p.get("connected") else "not connected",
            f"queue {p.get('queue_size')}/{p.get('queue_capacity')}",
            f"published {p.get('published')}",
            f"dropped {dropped}",
            f"lag {lag:.3f}s" if isinstance(lag, int | float) else f"lag {lag}",
        ]
        if p.get("last_error"):
            fields.append(_last_error(p, now))
        lines.append("  " + ", ".join(fields))
    return "\n".join(lines)


def _last_error(process: dict[str, Any], now: float) -> str:
    """The last error, marked resolved (with its age) when the notifier is connected again: an
    old error beside a healthy line would read as a current one."""
    at = process.get("last_error_at")
    age = f" {max(0.0, now - at):.0f}s ago" if isinstance(at, int | float) else ""
    if process.get("connected"):
        return f"resolved error{age}: {process['last_error']}"
    return f"last error{age}: {process['last_error']}"


def default_health_url(config: NotifierConfig) -> str:
    health = config.health
    if health.port == 0:
        raise NotifierError(
            "health.port is 0 (any free port): pass the endpoint's address with --url"
        )
    # A server bound to every address answers on loopback too.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(health.host, health.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{health.port}/health"


def health_url(url: str) -> str:
    """``--url`` as given, with /health added when it names only the server."""
    return url.rstrip("/") + "/health" if urlsplit(url).path in ("", "/") else url


def fetch_report(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the health report it carries; NotifierError when there is none."""
    status, body = _fetch(url, timeout)
    try:
        report = json.loads(body)
    except ValueError:
        report = None
    if not isinstance(report, dict) or "status" not in report:
        raise NotifierError(f"{url} answered HTTP {status} without a health report")
    return status, report


def _fetch(url: str, timeout: float) -> tuple[int, bytes]:
    """Status and body; a 503 carries its report too. NotifierError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise NotifierError(f"cannot reach the health endpoint at {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise NotifierError(f"cannot reach the health endpoint at {url}: {exc}") from None
