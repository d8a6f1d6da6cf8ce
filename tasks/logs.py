"""structlog set-up for the worker: JSON lines, or a readable console format on a terminal.

The application configures logging; the notifier library never does.

Prefork children share the worker's stderr, so a line must reach it whole: structlog's
``WriteLogger`` writes each line, newline included, in one ``write()`` call (``PrintLogger``'s
``print`` makes two once Python runs unbuffered, as with ``PYTHONUNBUFFERED=1``, and two children's
lines then run together). A write of up to ``PIPE_BUF`` bytes (4096 on Linux) to a pipe is never
interleaved with another process's writes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def configure_logging(level: str = "info") -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            # Tracebacks as data, without local variables: those may hold secrets.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
            if not sys.stderr.isatty()
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def add_pid(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Prefork children share one stream: say which process wrote each line."""
    event["pid"] = os.getpid()
    return event
