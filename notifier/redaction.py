"""Keeping a Redis password out of everything the notifier prints, logs, raises or serves.

The password lives in the URL (``redis://user:password@host`` or ``?password=``). Text we write
ourselves shows the URL through ``redact_url``; text we did not write (an exception's message)
goes through ``scrub`` with the passwords that ``url_secrets`` found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
# password=, and the sentinels' sentinel_password= (notifier/topology/urls.py).
_QUERY_PASSWORD = re.compile(r"(?i)([?&][a-z_]*password=)[^&#]*")


def _mask_userinfo(url: str) -> str:
    at = url.rfind("@")
    if at == -1:
        return _mask_query(url)
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    return url[:start] + "***" + _mask_query(url[at:])


def _mask_query(url: str) -> str:
    return _QUERY_PASSWORD.sub(r"\1***", url)


def url_secrets(url: str) -> tuple[str, ...]:
    """Every password a Redis URL carries (the userinfo's, ``password=``, ``sentinel_password=``),
    so that they can be scrubbed from text we did not write."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        for key, value in parse_qsl(parts.query):
            if key.lower().endswith("password") and value:
                found.append(value)
        if parts.password:
            found.append(parts.password)
    except ValueError:
        pass
    return tuple(found)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``: for text we did not write."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def describe(exc: BaseException, secrets: Iterable[str]) -> str:
    """``"ExcType: message"`` for an exception, scrubbed of the secrets."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return scrub(text, secrets)
