"""Keeping a Redis password out of everything the notifier prints, logs, raises or serves.

The password lives in the URL (``redis://user:password@host``, ``?password=``,
``?sentinel_password=``). Text we write ourselves shows the URL through ``redact_url``; text we
did not write (an exception's message) goes through ``scrub`` with what ``url_secrets`` found.
Both mask the same things: the userinfo's password, and the value of every query option that is
not plainly harmless (``SHOWN_OPTIONS``), since a misspelled ``?pasword=`` holds a password too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus, urlsplit

# Query options whose values are shown as written: none is a secret. The topology's flags, file
# paths and user names (notifier.config.urls; a user name shows in the userinfo too), and
# redis-py's options that must parse as a number or a flag. Every other option's value is
# masked: a password, a token, or the value of a key misspelled or unknown, which may be either.
SHOWN_OPTIONS = frozenset(
    {
        "db",
        "username",
        "tls",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "sentinel_username",
        "sentinel_tls",
        "protocol",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "max_connections",
        "retry_on_timeout",
    }
)
MASK = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/{0,2}")
# A key that is a name; any other key (``sentinel_password:hunter2``) is masked whole.
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def redact_url(url: str) -> str:
    """The URL with its password and every query value not in ``SHOWN_OPTIONS`` replaced by
    ``***``; safe for logs, reprs and errors.

    Also for URLs too malformed to parse: whatever stands between the scheme and the last ``@``
    is then masked whole, since which part of it is the password cannot be told.
    """
    return _redact(url)[0]


def url_secrets(url: str) -> tuple[str, ...]:
    """Everything ``redact_url`` masks in a Redis URL (the password, every query value not in
    ``SHOWN_OPTIONS``), as written and percent-decoded, longest first: for ``scrub``."""
    found = {secret for secret in _redact(url)[1] if secret}
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def _redact(url: str) -> tuple[str, list[str]]:
    """``url`` with its secrets masked, and the secrets."""
    secrets: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or ("@" in url and "@" not in parts.netloc):
        at = url.rfind("@")
        if at == -1:
            return _redact_rest(url, secrets), secrets
        scheme = _SCHEME.match(url)
        start = scheme.end() if scheme else 0
        userinfo = url[start:at]
        secrets += _forms(userinfo) + _forms(userinfo.partition(":")[2])
        if parts is not None:
            # Also what a URL parser (redis-py's, ours) makes of it, for the text they write:
            # a netloc cut short at a "/", "?" or "#" in the password, and the query's values.
            netloc = parts.netloc
            secrets += _forms(netloc, plus=False) + _forms(netloc.partition(":")[2], plus=False)
            _redact_rest(url, secrets)
        return url[:start] + MASK + _redact_rest(url[at:], secrets), secrets
    if "@" not in parts.netloc:
        return _redact_rest(url, secrets), secrets
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostinfo}"
        secrets += _forms(parts.password, plus=False)
    return _redact_rest(parts._replace(netloc=netloc).geturl(), secrets), secrets


def _redact_rest(text: str, secrets: list[str]) -> str:
    """``text`` (a URL, or what follows its userinfo) with the query values not in
    ``SHOWN_OPTIONS`` masked, and the fragment (which no Redis URL has, but a ``#`` in an
    unquoted password starts) masked whole."""
    text, hash_mark, fragment = text.partition("#")
    if fragment:
        secrets += _forms(fragment)
        fragment = MASK
    head, question_mark, query = text.partition("?")
    options = [_redact_option(option, secrets) for option in query.split("&")]
    return head + question_mark + "&".join(options) + hash_mark + fragment


def _redact_option(option: str, secrets: list[str]) -> str:
    key, equals, value = option.partition("=")
    name = unquote_plus(key)
    if not option or name in SHOWN_OPTIONS:
        return option
    if equals and _OPTION_NAME.fullmatch(name):
        secrets += _forms(value)
        return f"{key}={MASK}" if value else option
    secrets += _forms(option) + _forms(key) + _forms(value)
    return MASK


def _forms(text: str, *, plus: bool = True) -> list[str]:
    """``text`` as written and percent-decoded (``+`` as a space in a query, as redis-py reads
    it there)."""
    return [text, unquote_plus(text) if plus else unquote(text)]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``: for text we did not write."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def describe(exc: BaseException, secrets: Iterable[str]) -> str:
    """``"ExcType: message"`` for an exception, scrubbed of the secrets."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return scrub(text, secrets)
