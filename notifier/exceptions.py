"""The notifier's one exception hierarchy.

Transport problems never surface as exceptions to callers: a publish call returns False and the
event is counted as dropped. These exceptions are for programming and configuration errors, raised
at the call site so that they show up in tests, not in production logs.
"""

from __future__ import annotations


class NotifierError(Exception):
    """Root of every exception the notifier raises on purpose."""


class ConfigError(NotifierError, ValueError):
    """A configuration value is missing, mistyped or out of range.

    The message names the file (when there is one) and the dotted key, for example
    ``config.toml: queue.maxsize must be a positive integer, got -5``.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)

    def in_file(self, path: str) -> ConfigError:
        """The same error, attributed to the file it came from."""
        return ConfigError(self.reason, path=path, key=self.key)


class InvalidEvent(NotifierError, ValueError):
    """An event cannot be published as given: bad task id or type, unencodable or oversized data."""
