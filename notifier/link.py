"""A Redis connection of our own: redis-py connects, we pipeline (and, for the gateway, listen).

redis-py makes and closes the connection: URL parsing, TCP or unix socket, TLS, AUTH, SELECT,
socket options. Sending a batch goes around its command layer: the batch is written as one
buffer of RESP commands and the replies are parsed by hiredis in one pass. redis-py's per-command
Python (pack, dispatch, a coroutine per reply) would be the notifier thread's largest cost; this
path is several times cheaper (bench/ has the figures).

Used in one event loop at a time: the notifier thread's, or a gateway's (its pub/sub connection
uses ``send`` and ``replies`` instead of ``execute``).
"""

from __future__ import annotations

import asyncio

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

PING = b"*1\r\n$4\r\nPING\r\n"
READ_SIZE = 1 << 16

ReplyError = hiredis.ReplyError

# What a lost or unusable connection raises: redis-py's errors, the socket's (TimeoutError is an
# OSError: a round trip bounded by asyncio.timeout too), and hiredis's for a reply it cannot
# parse. Redis refusing a command (ResponseError) is a RedisError as well: a caller that must not
# retry it catches it first.
TRANSPORT_ERRORS = (RedisError, OSError, hiredis.ProtocolError)


def command(*args: bytes) -> bytes:
    """One command in RESP, the wire format Redis reads."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def publish_command(channel: bytes, message: bytes, verb: bytes = b"PUBLISH") -> bytes:
    """PUBLISH (or SPUBLISH) in RESP, in one formatting step: the one command every event
    sends."""
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(verb),
        verb,
        len(channel),
        channel,
        len(message),
        message,
    )


def publish_head(channel: bytes, verb: bytes = b"PUBLISH") -> bytes:
    """What every PUBLISH to ``channel`` starts with. ``PUBLISH_WITH_HEAD % (head, len(message),
    message)`` is the command ``publish_command`` writes; a batch makes each channel's head once
    and formats only the message per event."""
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(verb), verb, len(channel), channel)


PUBLISH_WITH_HEAD = b"%s$%d\r\n%s\r\n"  # a head, then the message as a bulk string


class Link:
    """A connected socket to Redis that sends pipelined commands and reads their replies."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        # redis-py keeps the connected streams in these attributes; we read and write them
        # directly. Checked here, so that a redis-py that changed them fails at connect time.
        reader, writer = getattr(connection, "_reader", None), getattr(connection, "_writer", None)
        if not isinstance(reader, asyncio.StreamReader) or not isinstance(
            writer, asyncio.StreamWriter
        ):
            raise RuntimeError("this redis-py version does not expose its connection streams")
        self._reader, self._writer = reader, writer
        self._replies = hiredis.Reader()

    @classmethod
    async def open(cls, url: str, connect_timeout: float) -> Link:
        """Connect (TCP or unix, TLS, AUTH, SELECT) and check that Redis answers a PING.

        The caller bounds the whole of it with its own timeout.
        """
        pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=None,  # bounded by the sender's own timeouts
            protocol=2,  # RESP2: no HELLO round trip, and the plain replies hiredis reads here
            retry=Retry(NoBackoff(), 0),  # the sender retries, with its own backoff and accounting
            # Each of these costs a round trip on every (re)connect and gives us nothing.
            driver_info=None,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        connection: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
            link = cls(connection)
            (pong,) = await link.execute(PING, 1)
            if isinstance(pong, ReplyError):
                raise RedisConnectionError(f"PING answered with an error: {pong}")
        except BaseException:
            await _discard(connection)
            raise
        return link

    async def execute(self, commands: bytes, replies: int) -> list[object]:
        """Send ``commands`` and return their ``replies`` replies; error replies are returned as
        ReplyError values, in place. Raises OSError or a redis ConnectionError when the
        connection fails."""
        self._writer.write(commands)
        await self._writer.drain()
        parser = self._replies
        out: list[object] = []
        while len(out) < replies:
            reply = parser.gets()
            if reply is False:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                parser.feed(data)
            else:
                out.append(reply)
        return out

    async def send(self, commands: bytes) -> None:
        """Write commands without waiting for their replies (they come through ``replies``)."""
        self._writer.write(commands)
        await self._writer.drain()

    async def replies(self) -> list[object]:
        """The next replies Redis sends, at least one; for a connection in pub/sub mode, where
        messages come unasked. Raises like ``execute`` when the connection fails."""
        parser, out = self._replies, []
        while True:
            reply = parser.gets()
            if reply is not False:
                out.append(reply)
                continue
            if out:
                return out
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            parser.feed(data)

    async def close(self) -> None:
        """Close at once, without waiting for the peer: the connection is abandoned either way."""
        await _discard(self._connection)


async def _discard(connection: AbstractConnection) -> None:
    """Close the socket now and drop whatever is still buffered for it.

    redis-py's ``disconnect`` closes the transport gracefully: a transport with unsent bytes
    stays open until the peer reads them. A Redis that stopped reading (frozen, or behind a dead
    link) never does, so each connection given up on would keep its socket and its buffer (up to
    a whole batch) for as long as the process lives. ``abort()`` releases both at once.
    """
    writer = getattr(connection, "_writer", None)
    if isinstance(writer, asyncio.StreamWriter):
        writer.transport.abort()
    await connection.disconnect(nowait=True)  # redis-py's own bookkeeping
