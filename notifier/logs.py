"""The notifier's logger. The library never configures structlog; the application does.

``[logging] level`` filters the notifier's own events before they reach the application's
processors, so a chatty level here never changes how the application's other loggers behave.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger


def get_logger(level: str, **context: Any) -> FilteringBoundLogger:
    """A lazy logger: the application's structlog configuration is looked up at each call (so
    ``capture_logs()`` sees our events), never frozen by an early ``bind()``."""
    logger: FilteringBoundLogger = structlog.wrap_logger(
        None,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory_args=("notifier",),
        **context,
    )
    return logger
