"""The ``notifier`` command line: write or check a configuration, query the health endpoint,
listen to events, publish one, serve the gateway. Reading the health endpoint's answer is
``health_check``'s.

Errors are one line on stderr with exit status 1, never a traceback; usage errors exit with 2,
as argparse does. The library's own log events stay quiet unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import structlog

from notifier import __version__
from notifier import schema as schemas
from notifier.cli.health_check import default_health_url, fetch_report, health_url, summary
from notifier.cli.listen import Listener
from notifier.config import DEFAULT_PATH, default_toml
from notifier.config.loader import load_config
from notifier.exceptions import NotifierError
from notifier.publisher import Notifier
from notifier.workflows import ids as workflows

HTTP_TIMEOUT = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status."""
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        status: int = args.run(args)
    except NotifierError as exc:  # ConfigError, InvalidEvent and our own messages
        print(f"notifier: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`notifier listen --all | head -3`): no traceback,
        # and none either when the interpreter flushes stdout on its way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


# Commands ---------------------------------------------------------------------------------


def init(args: argparse.Namespace) -> int:
    """Write the commented config file; an existing file is left alone unless --force."""
    try:
        # "x" fails if the file exists, in the same system call that would create it.
        with open(args.path, "w" if args.force else "x", encoding="utf-8") as fh:
            fh.write(default_toml())
    except FileExistsError:
        raise NotifierError(f"{args.path} already exists (--force overwrites it)") from None
    except OSError as exc:
        raise NotifierError(f"{args.path}: cannot be written: {exc.strerror or exc}") from None
    print(f"wrote {args.path}")
    return 0


def check_config(args: argparse.Namespace) -> int:
    config = load_config(args.path or args.config)
    print(f"{config.path}: OK" if config.path else "defaults: OK")
    return 0


def health(args: argparse.Namespace) -> int:
    url = health_url(args.url) if args.url else default_health_url(load_config(args.config))
    status, report = fetch_report(url, args.timeout)
    print(summary(url, status, report))
    return 0 if status == 200 and report["status"] == "ok" else 1


def listen(args: argparse.Namespace) -> int:
    """Print events as they arrive. A lost connection is made again, with the [reconnect]
    backoff, until Ctrl-C or --timeout; each outage is said on stderr when it starts and ends.
    Pub/sub keeps nothing: what was published during an outage is not printed."""
    task_id = None if args.all else args.task_id
    if args.workflow is not None:
        task_id = workflows.channel_id(args.workflow)
    listener = Listener(load_config(args.config), task_id, args.count, args.timeout)
    try:
        listener.run()
    except KeyboardInterrupt:
        return 0
    return listener.verdict()


def gateway(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        from notifier.gateway.server import serve  # the gateway extra: Starlette, uvicorn, PyJWT
    except ImportError as exc:
        raise NotifierError(
            f"the gateway needs the gateway extra (pip install 'celery-notifier[gateway]'): {exc}"
        ) from None
    host = config.gateway.host if args.host is None else args.host
    port = config.gateway.port if args.port is None else args.port
    # A spawned worker process starts without this command's logging: it sets it up again.
    serve(config, host, port, args.workers, setup=partial(_configure_logging, args.verbose))
    return 0


def publish(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # One event from a terminal: this process must not serve (or try to bind) the health port.
    config = replace(config, health=replace(config.health, enabled=False))
    data = _json_object(args.data)
    timeout = config.shutdown.drain_timeout if args.timeout is None else args.timeout
    notifier = Notifier(config)
    try:
        notifier.publish(args.task_id, args.type, data)
    finally:
        notifier.close(timeout)
    stats = notifier.stats()
    channel = config.redis.channel_prefix + args.task_id
    if stats["published"] == 1:
        print(f"published {args.type} to {channel}")
        return 0
    why = ", ".join(stats["dropped_by_reason"]) or "unknown"
    detail = f"; last error: {stats['last_error']}" if stats["last_error"] else ""
    raise NotifierError(
        f"not published to {channel} at {config.redis.safe_url} within {timeout}s "
        f"(dropped: {why}){detail}"
    )


def schema(args: argparse.Namespace) -> int:
    """Print one schema as its file holds it; without a name, each schema's name and file."""
    if args.name is None:
        for name in schemas.SCHEMAS:
            print(f"{name}\t{schemas.path(name)}")
        return 0
    sys.stdout.write(schemas.text(args.name))
    return 0


# Helpers ----------------------------------------------------------------------------------


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise NotifierError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NotifierError(f"--data must be a JSON object, got {type(data).__name__}")
    return data


def _configure_logging(verbose: bool) -> None:
    """This command line is an application: it decides where the library's log events go
    (stderr) and, unless --verbose, keeps all but errors out of the way."""
    threshold = logging.DEBUG if verbose else logging.ERROR

    def keep(_logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if logging.getLevelNamesMapping().get(method.upper(), logging.ERROR) < threshold:
            raise structlog.DropEvent
        return event

    structlog.configure(
        processors=[
            keep,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


# Arguments --------------------------------------------------------------------------------


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _count(text: str) -> int:
    """A whole number, 0 or more (0: as many as there are cores)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an int: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier", description="Task notifications over Redis pub/sub: operator tools."
    )
    parser.add_argument("--version", action="version", version=f"notifier {__version__}")
    # Accepted before or after the command; SUPPRESS keeps a subcommand from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    for p, default in ((parser, None), (common, argparse.SUPPRESS)):
        p.add_argument(
            "--config",
            metavar="PATH",
            default=default,
            help="config file (default: $NOTIFIER_CONFIG, else ./config.toml, else defaults)",
        )
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=False if default is None else default,
            help="show the library's log events on stderr",
        )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], doc: str) -> Any:
        sub = commands.add_parser(name, parents=[common], help=doc, description=doc)
        sub.set_defaults(run=run)
        return sub

    start = command("init", init, "Write a commented config file, every key at its default.")
    start.add_argument(
        "path", nargs="?", default=DEFAULT_PATH, help=f"the file (default: ./{DEFAULT_PATH})"
    )
    start.add_argument("--force", action="store_true", help="overwrite an existing file")

    check = command("check-config", check_config, "Validate a config file; exit 1 if invalid.")
    check.add_argument("path", nargs="?", help="the file (default: --config, or the lookup)")

    probe = command("health", health, "Query the health endpoint; exit 0 healthy, 1 not.")
    probe.add_argument("--url", help="the endpoint (default: from [health] host and port)")
    probe.add_argument("--timeout", type=_positive(float), default=HTTP_TIMEOUT, metavar="S")

    sub = command("listen", listen, "Print each event as it arrives, one JSON line each.")
    which = sub.add_mutually_exclusive_group(required=True)
    which.add_argument("task_id", nargs="?", help="one task's events")
    which.add_argument("--all", action="store_true", help="every task's events")
    which.add_argument("--workflow", metavar="ID", help="one workflow's events (a canvas's id)")
    sub.add_argument("--count", type=_positive(int), metavar="N", help="exit after N events")
    sub.add_argument("--timeout", type=_positive(float), metavar="S", help="exit after S seconds")

    serve = command("gateway", gateway, "Serve task events to browsers: SSE, WebSocket, a page.")
    serve.add_argument("--host", help="address to bind (default: [gateway] host)")
    serve.add_argument("--port", type=int, help="port (default: [gateway] port)")
    serve.add_argument(
        "--workers",
        type=_count,
        metavar="N",
        help="processes serving the port (default: [gateway] workers; 0: one per core)",
    )

    shown = command("schema", schema, "Print the events' JSON Schema (draft 2020-12).")
    shown.add_argument("name", nargs="?", choices=sorted(schemas.SCHEMAS), help="one schema")

    pub = command("publish", publish, "Publish one event through a notifier; exit 1 if lost.")
    pub.add_argument("task_id")
    pub.add_argument("--type", required=True, help="event type, e.g. progress")
    pub.add_argument("--data", metavar="JSON", help="a JSON object (default: {})")
    pub.add_argument(
        "--timeout",
        type=_positive(float),
        metavar="S",
        help="seconds to deliver it (default: shutdown.drain_timeout)",
    )
    return parser
