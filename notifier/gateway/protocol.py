"""``GatewayProtocol``: uvicorn's HTTP protocol (httptools), with the limits a front door needs.

uvicorn gives a request as long as it likes to send its headers, and takes request lines and
headers of any size. Run by ``notifier gateway``, each connection here has:

- ``[gateway] header_timeout`` seconds to send its request line and headers, from the moment it
  connects (or its previous response ended): a slow-loris client, which sends a byte a second,
  gets 408 and is closed, instead of holding a connection for ever;
- ``[gateway] max_header_bytes`` for them: a longer request line gets 414, longer headers 431.

Each connection's kernel send buffer is ``SEND_BUFFER``, not what Linux grows it to by itself
(up to 4 MiB): that bounds the memory a client that does not read can hold in the kernel, and
it keeps "too slow" meaning the same on every path (``subscriber.py`` writes live entries
straight to the socket while the socket takes them).

Once a request's headers are in, its ASGI scope carries the connection's asyncio transport under
``TRANSPORT``: the SSE transport writes its chunks there, and can cut off a client that reads
nothing (``transports.py``). A WebSocket's scope carries it too (``GatewayWebSocketProtocol``):
a closing handshake waits behind whatever the client has not read, so a client that reads
nothing is cut off by aborting its socket. Mounted in another server, the gateway has no such
key and goes through ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

TRANSPORT = "notifier.gateway.transport"
# Bytes the kernel may hold unsent for one client (Linux doubles it for its bookkeeping): at
# 100 ms round trips still 2 MB/s for one stream, far above what a task's events need.
SEND_BUFFER = 128 * 1024

_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class GatewayProtocol(HttpToolsProtocol):
    """One HTTP connection, with a deadline and a size limit on each request's head."""

    def __init__(self, *args: Any, header_timeout: float, max_header_bytes: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self._head_bytes: int | None = 0  # bytes of this request's head so far; None: read
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is None:  # the head is in: a body, or a WebSocket's frames
            super().data_received(data)
            return
        room = self.max_header_bytes - self._head_bytes
        self._head_bytes += len(data)
        if len(data) <= room:
            super().data_received(data)
            return
        super().data_received(data[:room])  # the head may end within the limit
        if self._head_bytes is None:
            if self.transport.get_protocol() is self:  # not upgraded to a WebSocket meanwhile
                super().data_received(data[room:])
        elif not self.transport.is_closing():
            # Still in the request line (no header parsed yet): the URL is what is too long.
            self._refuse(414 if not self.headers else 431)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_bytes = None
        self.scope[TRANSPORT] = self.transport  # type: ignore[literal-required]  # our own key
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._expect_head()  # a kept-alive connection: the next request's head

    def _expect_head(self) -> None:
        self._head_bytes = 0
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._refuse, 408)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: int) -> None:
        """Answer ``status`` with a plain reason, and close: the request is not read further."""
        self._disarm()
        self._head_bytes = None
        if self.transport.is_closing():
            return
        reason = _REASONS[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(reason), reason)
        )
        self.transport.close()


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the websockets library's sans-I/O core), with the
    connection's transport in the scope under ``TRANSPORT``."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only when the handshake is accepted
        if scope is not None:  # the app's task is created, not yet run: it sees the key
            scope[TRANSPORT] = self.transport
