"""``python -m examples.gateway [--host HOST] [--port PORT] [--config PATH]``.

Host and port come from the arguments, else ``$GATEWAY_HOST`` and ``$GATEWAY_PORT``, else
127.0.0.1:8000. The notifier configuration is read as ``load_config`` does: ``--config``, else
``$NOTIFIER_CONFIG``, else ``./config.toml``, else the defaults; ``$NOTIFIER_REDIS_URL`` overrides
``redis.url``.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from examples.gateway.app import create_app
from notifier import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.gateway",
        description="Stream task notifications to browsers over WebSockets.",
    )
    parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("GATEWAY_PORT", "8000"))
    parser.add_argument("--config", help="notifier config file (see config.toml)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"gateway on http://{args.host}:{args.port}/ for Redis {config.redis.safe_url}",
        file=sys.stderr,
    )
    # Open WebSockets are closed at shutdown; a few seconds lets them say goodbye.
    uvicorn.run(create_app(config), host=args.host, port=args.port, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
