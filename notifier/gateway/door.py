"""The gateway's front door: who a request comes from, whether its page's origin may read, where
its token is, and how many streams each client may hold open. Plain checks on a request's
headers, plus one counter per process; the routes (``app.py``) turn a refusal into a response.

- **Origin.** A browser sends ``Origin`` with every WebSocket handshake and every cross-origin
  request. A request whose origin is not allowed is refused, so a page on another site cannot read
  a stream with a token it got hold of (cross-site WebSocket hijacking). Allowed: the gateway's
  own origin (``Origin``'s host is the request's ``Host``), ``[gateway] allowed_origins``, and
  any origin when that list holds ``*``, or when the list is empty and no secret is set (then
  only loopback clients are served at all). A request without ``Origin`` is not a browser's
  cross-origin request, and is let through.
- **Client address.** The peer's address; when the peer is one of ``[gateway] trusted_proxies``,
  the nearest address in ``X-Forwarded-For`` that is not (a client cannot forge its way past a
  proxy that appends what it saw).
- **Token.** ``Authorization: Bearer``, then the ``[gateway] token_cookie`` cookie (``HttpOnly``:
  no script on the page can read it, and no URL carries it), then ``?token=``. One longer than
  ``MAX_TOKEN`` characters is refused unread.
- **Streams.** ``[gateway] max_connections`` in all and ``max_connections_per_client`` per client
  address, per process.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections import Counter
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from notifier.config import GatewayConfig
from notifier.gateway.entries import parse_stream_id

MAX_TOKEN = 4096  # characters: a task's JWT is about 200
MAX_RESUME_ID = 64  # characters: a stream id is at most 41 ("<20 digits>-<20 digits>")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FrontDoor:
    """The checks for one gateway configuration, and its process's count of open streams."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        self._origins = frozenset(o.rstrip("/").lower() for o in config.allowed_origins)
        self._any_origin = "*" in self._origins or not (self._origins or config.secret)
        self.open_streams = 0
        self._by_client: Counter[str] = Counter()

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

    def origin_refused(self, conn: HTTPConnection) -> str | None:
        """The origin a request came from, when its page may not read here; None otherwise."""
        origin = conn.headers.get("origin")
        if origin is None or self._any_origin or self.cross_origin_allowed(origin):
            return None
        if urlsplit(origin).netloc.lower() == conn.headers.get("host", "").lower():
            return None  # the gateway's own page
        return origin

    def cross_origin_allowed(self, origin: str) -> bool:
        """Whether a page on ``origin`` (another site) may read: it is listed, or ``*`` is."""
        return "*" in self._origins or origin.rstrip("/").lower() in self._origins

    def token_of(self, conn: HTTPConnection) -> str | None:
        """The request's token: Bearer header, then cookie, then ``?token=``."""
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return conn.cookies.get(self.config.token_cookie) or conn.query_params.get("token") or None

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
