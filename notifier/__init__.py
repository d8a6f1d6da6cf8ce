"""notifier: thread-isolated, fire-and-forget task notifications over Redis pub/sub.

One notifier thread per process owns its own event loop and Redis connection; callers on any
thread, or inside any event loop, hand events over without blocking.
"""

# health attaches itself (through notifier.seams) to every notifier whose [health] is enabled.
from notifier import health  # noqa: F401 - imported for that registration only
from notifier.config import NotifierConfig
from notifier.config.loader import load_config
from notifier.default import (
    aflush,
    ashutdown,
    configure,
    flush,
    get_notifier,
    publish,
    publish_completed,
    publish_failed,
    publish_progress,
    shutdown,
)
from notifier.exceptions import ConfigError, InvalidEvent, NotifierError
from notifier.publisher import Notifier

# The one place the version is written: the package metadata (pyproject.toml reads it at build
# time) and `notifier --version` both come from here.
__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidEvent",
    "Notifier",
    "NotifierConfig",
    "NotifierError",
    "aflush",
    "ashutdown",
    "configure",
    "flush",
    "get_notifier",
    "load_config",
    "publish",
    "publish_completed",
    "publish_failed",
    "publish_progress",
    "shutdown",
]
