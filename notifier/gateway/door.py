"""The gateway's front door: who a request comes from, whether its page's origin may read, where
its token is, and how many streams each client may hold open. Plain checks on a request's
headers, plus one counter per process; the routes (``app.py``) turn a refusal into a response.

- **Origin.** A browser sends ``Origin`` with every WebSocket handshake and every cross-origin
  request. What it says decides whether the request is served and whether it may carry
  credentials (the token cookie), as ``Origin`` names:

  ============  =====================================================  =======  ===========
  ``Origin``    when                                                   served   the cookie
  ============  =====================================================  =======  ===========
  none          not a browser's cross-origin request                   yes      yes
  own           its host is the request's ``Host``                     yes      yes
  listed        in ``[gateway] allowed_origins``                       yes      yes
  any           not listed, but the list holds ``*``                   yes      never
  refused       anything else, and always ``null`` (an opaque origin)  403      -
  ============  =====================================================  =======  ===========

  A page on another site thus cannot read a stream with a cookie the browser attaches by itself
  (cross-site WebSocket hijacking); ``*`` lets any page read with a token it holds and sends.
- **Client address.** The peer's address; when the peer is one of ``[gateway] trusted_proxies``,
  the nearest address in ``X-Forwarded-For`` that is not (a client cannot forge its way past a
  proxy that appends what it saw). Everything that depends on the client uses this address: the
  loopback rule without a secret, and the limits per client.
- **Without a secret**, a request is served only from a loopback client (unless
  ``allow_anonymous``) whose ``Host`` names this machine: a page whose DNS name was rebound to
  127.0.0.1 sends its own name as ``Host``, and is refused.
- **Token.** ``Authorization: Bearer``, then the ``[gateway] token_cookie`` cookie (``HttpOnly``:
  no script on the page can read it, and no URL carries it), then ``?token=``. One longer than
  ``MAX_TOKEN`` characters is refused unread.
- **Streams.** ``[gateway] max_connections`` in all and ``max_connections_per_client`` per client
  address, per process. A stream counts from its admission until its socket is closed.
- **Refusals** are logged once per client address and reason (``REFUSALS_REMEMBERED`` pairs at
  most), so that a client retrying in a loop does not flood the log.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections import Counter
from enum import Enum
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from notifier.config import GatewayConfig
from notifier.gateway.entries import parse_stream_id
from notifier.recent import Recent

MAX_TOKEN = 4096  # characters: a task's JWT is about 200
MAX_RESUME_ID = 64  # characters: a stream id is at most 41 ("<20 digits>-<20 digits>")
REFUSALS_REMEMBERED = 4096  # (client, reason) pairs already logged


class Origin(Enum):
    """Where a request's page is, as the front door sees it (the table in the module's doc)."""

    NONE = "none"
    OWN = "own"
    LISTED = "listed"
    ANY = "any"
    REFUSED = "refused"

    @property
    def credentials(self) -> bool:
        """Whether the request may be served on the browser's own credentials (the cookie)."""
        return self is not Origin.ANY and self is not Origin.REFUSED


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The host a ``Host`` header names, without its port or IPv6 brackets (lower case)."""
    try:
        return (urlsplit("//" + host_header).hostname or "").lower()
    except ValueError:
        return ""


class FrontDoor:
    """The checks for one gateway configuration, and its process's count of open streams."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        self._origins = frozenset(o.rstrip("/").lower() for o in config.allowed_origins)
        self._any_origin = "*" in self._origins
        self.open_streams = 0
        self._by_client: Counter[str] = Counter()
        self._told: Recent[tuple[str, str], None] = Recent(REFUSALS_REMEMBERED)  # logged

    # Who, from where --------------------------------------------------------------------------

    def client_of(self, conn: HTTPConnection) -> str:
        """The client's address: the peer's, or past the trusted proxies in X-Forwarded-For."""
        peer = conn.client.host if conn.client is not None else ""
        if not self._trusted(peer):
            return peer
        hops = [h.strip() for h in conn.headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed(hops):
            if hop and not self._trusted(hop):
                return hop
        return peer

    def _trusted(self, host: str) -> bool:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
            return any(address in network for network in self._proxies)
        return False

    def origin_of(self, conn: HTTPConnection) -> Origin:
        """What the request's ``Origin`` header makes of it."""
        origin = conn.headers.get("origin")
        if origin is None:
            return Origin.NONE
        normalized = origin.strip().rstrip("/").lower()
        if normalized in ("", "null"):
            return Origin.REFUSED  # a sandboxed frame, a file:// or data: page, a redirect
        host = conn.headers.get("host", "").lower()
        with contextlib.suppress(ValueError):
            if host and urlsplit(normalized).netloc == host:
                return Origin.OWN
        if normalized in self._origins:
            return Origin.LISTED
        return Origin.ANY if self._any_origin else Origin.REFUSED

    def anonymous_refusal(self, conn: HTTPConnection) -> str | None:
        """Without a secret: why this request may not read, or None."""
        if self.config.allow_anonymous:
            return None
        if not is_loopback(self.client_of(conn)):
            return "no [gateway] secret is set: anonymous access is for loopback clients only"
        if not is_loopback(host_name(conn.headers.get("host", "localhost"))):
            return (
                "no [gateway] secret is set: the Host header must name this machine "
                "(localhost or a loopback address)"
            )
        return None

    def token_of(self, conn: HTTPConnection, *, cookie: bool = True) -> str | None:
        """The request's token: Bearer header, then the cookie (where ``cookie``), then
        ``?token=``."""
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        from_cookie = conn.cookies.get(self.config.token_cookie) if cookie else None
        return from_cookie or conn.query_params.get("token") or None

    def first_refusal(self, client: str, reason: str) -> bool:
        """Whether ``client`` is refused for ``reason`` for the first time (then log it)."""
        told = (client, reason)
        if told in self._told:
            return False
        self._told.remember(told, None)
        return True

    # Open streams -----------------------------------------------------------------------------

    def admit(self, client: str) -> str | None:
        """Count a new stream for ``client``; why not, when it is over a limit (nothing counted)."""
        if self.open_streams >= self.config.max_connections:
            return "too many open streams"
        if self._by_client[client] >= self.config.max_connections_per_client:
            return "too many open streams from this client"
        self.open_streams += 1
        self._by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.open_streams -= 1
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]


def resume_id_problem(raw: str | None) -> str | None:
    """What is wrong with a ``Last-Event-ID`` (or ``?last_event_id=``); None when it is absent
    or a stream id. An EventSource sends back only ids the gateway sent, which are stream ids."""
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > MAX_RESUME_ID:
        return f"Last-Event-ID must be at most {MAX_RESUME_ID} characters, got {len(raw)}"
    if parse_stream_id(raw.strip()) is None:
        return "Last-Event-ID must be a stream id such as 1700000000000-0"
    return None
