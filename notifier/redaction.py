"""Keeping a Redis password out of everything the notifier prints, logs, raises or serves.

The password lives in the URL (``redis://user:password@host`` or ``?password=``). Text we write
ourselves shows the URL through ``redact_url``; text we did not write (an exception's message)
goes through ``scrub`` with the password that ``url_password`` found.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``; safe for logs, reprs and errors.

    Also for URLs too malformed to parse: whatever stands between the scheme and the last ``@``
    is then masked whole, since which part of it is the password cannot be told.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _mask_userinfo(url)
    if "@" not in parts.netloc:
        return _mask_userinfo(url) if "@" in url else _mask_query(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    return _mask_query(parts._replace(netloc=netloc).geturl())


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/{0,2}")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def _mask_userinfo(url: str) -> str:
    at = url.rfind("@")
    if at == -1:
        return _mask_query(url)
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    return url[:start] + "***" + _mask_query(url[at:])


def _mask_query(url: str) -> str:
    return _QUERY_PASSWORD.sub(r"\1***", url)


def url_password(url: str) -> str | None:
    """The password a Redis URL carries, so that it can be scrubbed from text we did not write."""
    try:
        parts = urlsplit(url)
        for key, value in parse_qsl(parts.query):
            if key.lower() == "password" and value:
                return value
        return parts.password or None
    except ValueError:
        return None


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` replaced by ``***``: for error text we did not write ourselves."""
    return text.replace(secret, "***") if secret else text
