"""``notifier gateway``: the gateway standalone, on uvicorn, in one or more worker processes.

Without ``[gateway] secret`` (or ``$NOTIFIER_GATEWAY_SECRET``) it serves on loopback only, and
says so; another host is refused then unless ``allow_anonymous = true``. uvicorn's access log is
off: it would write each request's URL, token included. The gateway logs what it needs itself.

``--workers N`` (else ``[gateway] workers``; 0: one per core) processes serve one port. One
worker is this process. More are run by uvicorn's own supervisor: it spawns them, checks each
every half second and starts a new one for one that died, and on SIGTERM or SIGINT stops them
all (SIGHUP replaces them one by one). Each worker builds its own app, so it has its own hub:
one Redis pub/sub connection per worker, and ``[gateway] max_connections`` and
``max_connections_per_client`` count the streams of that worker only. How the workers share the
port is ``listening.py``'s.

At start it says whether Redis answers. It serves either way: a Redis that is down may come
back, and each stream waits for it (``subscription.py``); the workers log the outages they
meet and their ends (``hub.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import cast

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from notifier.config import GatewayConfig, NotifierConfig
from notifier.exceptions import NotifierError
from notifier.gateway.app import GatewayApp, create_app
from notifier.gateway.door import is_loopback
from notifier.gateway.hub import Hub
from notifier.gateway.listening import REUSE_PORT, parent_socket
from notifier.gateway.protocol import GatewayProtocol, GatewayWebSocketProtocol
from notifier.gateway.subscription import OPEN_PATIENCE
from notifier.logs import get_logger

# Bytes of one WebSocket message at most. Clients send the gateway nothing it needs; anything
# bigger is closed with 1009 by the websockets library (uvicorn's default takes 16 MiB).
WS_MAX_SIZE = 65_536


def serve(
    config: NotifierConfig,
    host: str,
    port: int,
    workers: int | None = None,
    *,
    setup: Callable[[], object] | None = None,
) -> None:
    """Run the gateway until interrupted, in ``workers`` processes (None: ``[gateway]
    workers``); ``setup`` is called first in each of them (the application's logging: a spawned
    worker has none), so it must pickle. NotifierError for a host it must not bind, or a worker
    that could not start."""
    gateway = config.gateway
    anonymous = not gateway.secret
    if anonymous and not gateway.allow_anonymous and not is_loopback(host):
        raise NotifierError(
            f"refusing to serve on {host} without a gateway secret: set [gateway] secret (or "
            "$NOTIFIER_GATEWAY_SECRET), or allow_anonymous = true to serve without tokens"
        )
    count = worker_count(gateway, workers)
    server = _server_config(partial(worker_app, config, setup), host, port, count, gateway)
    if count == 1:
        _announce(config, host, port)
        say("1 worker process: this one")
        _serve_here(server)
        return
    with parent_socket(server) as sock:
        _announce(config, host, sock.getsockname()[1])  # port 0: the one the kernel gave
        if REUSE_PORT:
            say(f"{count} worker processes, each listening on its own SO_REUSEPORT socket")
        else:
            say(
                f"{count} worker processes on one shared socket (no SO_REUSEPORT here: "
                "connections may spread unevenly over them)"
            )
        supervisor = Multiprocess(server, sockets=[sock])
        supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        raise NotifierError("a gateway worker failed to start (its error is above)")


def worker_count(gateway: GatewayConfig, flag: int | None = None) -> int:
    """The worker processes to run: ``--workers`` when given, else ``[gateway] workers``; 0
    from either means one per core."""
    count = gateway.workers if flag is None else flag
    return count or os.cpu_count() or 1


def worker_app(config: NotifierConfig, setup: Callable[[], object] | None = None) -> GatewayApp:
    """The app, built in the worker process that serves it (uvicorn's factory)."""
    if setup is not None:
        setup()
    # This process is the gateway's own: thousands of long-lived connections make a big heap,
    # and the collector's default thresholds scan it often (pauses of hundreds of ms at 10,000
    # streams, the load bench/gateway.py runs). Young collections 70x rarer.
    gc.set_threshold(50_000, 20, 100)
    return create_app(config)


def _server_config(
    factory: Callable[[], GatewayApp], host: str, port: int, workers: int, gateway: GatewayConfig
) -> uvicorn.Config:
    """uvicorn's configuration. It is pickled to each spawned worker: the app's factory and the
    protocol are partials of module-level names (NotifierConfig pickles: a frozen dataclass)."""
    protocol = partial(
        GatewayProtocol,
        header_timeout=gateway.header_timeout,
        max_header_bytes=gateway.max_header_bytes,
    )
    return uvicorn.Config(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # uvicorn calls it as it would the class, with the same arguments.
        http=cast("type[asyncio.Protocol]", protocol),
        ws=GatewayWebSocketProtocol,
        ws_max_size=WS_MAX_SIZE,
        access_log=False,
        # X-Forwarded-For is believed only from [gateway] trusted_proxies (door.py); uvicorn's
        # own rewriting would believe any local peer.
        proxy_headers=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        backlog=4096,
    )


def _serve_here(server: uvicorn.Config) -> None:
    """One worker: this process serves, as ``uvicorn.run`` would."""
    process = uvicorn.Server(server)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises SIGINT again once it stopped
        process.run()
    if not process.started:
        sys.exit(STARTUP_FAILURE)


def _announce(config: NotifierConfig, host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    say(f"gateway on http://{shown}:{port}/ for Redis {config.redis.safe_url}")
    problem = asyncio.run(_probe(config))
    if problem is None:
        say("Redis answers")
    else:
        say(
            f"Redis does not answer ({problem}); serving anyway: a stream waits up to "
            f"{OPEN_PATIENCE:g} s for it, then gets 503, and each new stream tries it again"
        )
    gateway = config.gateway
    if not gateway.secret:
        who = "anyone who can reach it" if gateway.allow_anonymous else "loopback clients only"
        say(f"no [gateway] secret: every task is readable without a token, by {who}")


async def _probe(config: NotifierConfig) -> str | None:
    """What is wrong with Redis now, or None: it answers."""
    hub = Hub(config, get_logger(config.logging.level))
    try:
        return await hub.probe()
    finally:
        await hub.close()


def say(text: str) -> None:
    print(f"notifier: {text}", file=sys.stderr, flush=True)
