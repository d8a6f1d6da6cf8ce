"""``notifier gateway``: the gateway standalone, on uvicorn.

Without ``[gateway] secret`` (or ``$NOTIFIER_GATEWAY_SECRET``) it serves on loopback only, and
says so; another host is refused then unless ``allow_anonymous = true``. uvicorn's access log is
off: it would write each request's URL, token included. The gateway logs what it needs itself.
"""

from __future__ import annotations

import gc
import ipaddress
import sys

import uvicorn

from notifier.config import NotifierConfig
from notifier.exceptions import NotifierError
from notifier.gateway.app import create_app


def serve(config: NotifierConfig, host: str, port: int) -> None:
    """Run the gateway until interrupted. NotifierError for a host it must not bind."""
    gateway = config.gateway
    anonymous = not gateway.secret
    if anonymous and not gateway.allow_anonymous and not is_loopback(host):
        raise NotifierError(
            f"refusing to serve on {host} without a gateway secret: set [gateway] secret (or "
            "$NOTIFIER_GATEWAY_SECRET), or allow_anonymous = true to serve without tokens"
        )
    shown = f"[{host}]" if ":" in host else host
    say(f"gateway on http://{shown}:{port}/ for Redis {config.redis.safe_url}")
    if anonymous:
        who = "anyone who can reach it" if gateway.allow_anonymous else "loopback clients only"
        say(f"no [gateway] secret: every task is readable without a token, by {who}")
    # This process is the gateway's own: thousands of long-lived connections make a big heap,
    # and the collector's default thresholds scan it often (pauses of hundreds of ms were
    # measured at 10,000 streams; bench/gateway.py). Young collections 70x rarer.
    gc.set_threshold(50_000, 20, 100)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        backlog=4096,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def say(text: str) -> None:
    print(f"notifier: {text}", file=sys.stderr, flush=True)
