"""A TCP proxy that tests drive to inject network faults between a client and redis-server.

One selector thread does all socket work; the test thread only posts commands to it and waits
for the acknowledgement, so every fault is in force when the control method returns.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import cast

_CHUNK = 65536
_HIGH_WATER = 1 << 20  # stop reading a side while this much is queued towards its peer
_ACK_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 1.0
_LINGER_RST = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST, not FIN
_R, _W = selectors.EVENT_READ, selectors.EVENT_WRITE

_Command = tuple[Callable[[], object], threading.Event, list[object]]  # fn, done, [result]


def _close(sock: socket.socket, rst: bool) -> None:
    """Close ``sock``; with ``rst`` abortively, so the peer sees ECONNRESET, not a clean EOF."""
    if rst:
        with contextlib.suppress(OSError):  # already dead: a plain close is all that is left
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


class _Flow:
    """Bytes travelling one way through a pair, each chunk stamped with the time it may leave."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.size = 0
        self.eof = False  # the source closed: close the pair once the chunks are delivered

    def head(self) -> float:
        """When the first chunk may leave (inf if none). Only the head may leave: order is kept."""
        return self.chunks[0][0] if self.chunks else float("inf")

    def send_to(self, sock: socket.socket, now: float) -> None:
        """Send every due chunk the kernel accepts, keep the rest; raises OSError if dead."""
        while self.head() <= now:
            due, data = self.chunks[0]
            try:
                sent = sock.send(data)
            except BlockingIOError:
                return
            self.size -= sent
            if sent < len(data):  # kernel buffer full: keep the tail, wait for EVENT_WRITE
                self.chunks[0] = (due, data[sent:])
                return
            self.chunks.popleft()


class _Pair:
    """A client connection and its upstream connection (None if it never had or lost one)."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client, self.upstream = client, upstream
        self.up, self.down = _Flow(), _Flow()  # client -> upstream, upstream -> client
        self.blackholed = upstream is None
        self.closed = False

    def ends(self) -> list[tuple[socket.socket, _Flow, _Flow]]:
        """Each open socket with the flow it feeds and the flow it drains."""
        ends = [(self.client, self.up, self.down)]
        if self.upstream is not None:
            ends.append((self.upstream, self.down, self.up))
        return ends


class FaultProxy:
    """A fault-injecting TCP proxy in front of ``upstream_host:upstream_port``."""

    def __init__(
        self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listen_host = listen_host
        self.port = 0
        self.accepted = 0
        self._mode = "forward"  # "forward" | "blackhole" | "refuse"; latency is forward + delay
        self._delay = 0.0
        self._pairs: list[_Pair] = []
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._stopping = self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://{self._listen_host}:{self.port}/0"

    @property
    def active(self) -> int:
        """Client connections currently open."""
        return len(self._pairs)  # len() of a list is atomic under the GIL

    def start(self) -> FaultProxy:
        """Listen (before returning, so clients may connect at once) and start the thread."""
        if self._thread is not None or self._closed:
            raise RuntimeError("a FaultProxy can be started only once")
        self._listener = socket.create_server((self._listen_host, 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()  # wakes the selector for a command
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, _R, self._accept)
        self._sel.register(self._wake_r, _R, self._run_commands)
        self._thread = threading.Thread(target=self._run, name=f"FaultProxy-{self.port}")
        self._thread.daemon = True  # a wedged proxy must not hang interpreter exit
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop and join the thread and close every socket; idempotent."""
        if self._closed or self._thread is None:
            self._closed = True
            return
        self._closed = self._stopping = True
        try:
            self._wake()
            self._thread.join(_ACK_TIMEOUT)
            if self._thread.is_alive():
                raise RuntimeError("FaultProxy thread did not stop")
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def forward(self) -> None:
        """Relay both ways. Blackholed connections are reset: their protocol state is unknown."""
        self._call(lambda: self._set_mode("forward"))

    def latency(self, seconds: float) -> None:
        """Relay, but hold every chunk ``seconds`` in each direction (order is kept)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._call(lambda: self._set_mode("forward", seconds))

    def blackhole(self) -> None:
        """Keep connections open but discard all bytes both ways; new ones get no upstream."""
        self._call(lambda: self._set_mode("blackhole"))

    def refuse(self) -> None:
        """Reset every existing connection, and every new one as soon as it is accepted."""
        self._call(lambda: self._set_mode("refuse"))

    def reset_all(self) -> int:
        """Reset every current connection pair, returning how many; the mode is unchanged."""
        return cast(int, self._call(self._reset_all))

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # buffer full: a wake-up is pending anyway
            self._wake_w.send(b"\0")

    def _call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the proxy thread and return its result (or raise its exception)."""
        if self._closed or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("FaultProxy is not running")
        done, box = threading.Event(), list[object]()
        self._commands.put((fn, done, box))
        self._wake()
        if not done.wait(_ACK_TIMEOUT):
            raise RuntimeError(f"FaultProxy thread did not answer within {_ACK_TIMEOUT} s")
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]

    # -- everything below runs on the proxy thread ------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._sel.select(self._pump()):
                    if not isinstance(key.data, _Pair):
                        key.data()  # the listener or the wake-up socket
                    elif mask & _R:  # EVENT_WRITE needs nothing but the _pump() that follows
                        self._read(key.data, cast(socket.socket, key.fileobj))
        finally:
            for pair in list(self._pairs):
                self._drop(pair, rst=True)
            self._sel.close()
            self._listener.close()

    def _run_commands(self) -> None:
        # Drain the wake-ups before the queue: a command posted later still has its byte pending.
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        # A connection the client already sees as open must count as existing for the command.
        while self._accept():
            pass
        while True:
            try:
                fn, done, box = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                box.append(fn())
            except Exception as exc:  # hand it to the caller rather than kill the proxy
                box.append(exc)
            done.set()

    def _set_mode(self, mode: str, delay: float = 0.0) -> None:
        """Switch mode and deal with the connections the new mode cannot keep."""
        self._mode, self._delay = mode, delay
        for pair in list(self._pairs):
            if mode == "refuse" or (mode == "forward" and pair.blackholed):
                self._drop(pair, rst=True)
            elif mode == "blackhole":  # whatever was in flight is lost, as on a dead link
                pair.blackholed = True
                pair.up, pair.down = _Flow(), _Flow()

    def _reset_all(self) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair, rst=True)
        return len(pairs)

    def _accept(self) -> bool:
        """Accept one pending connection; False if there was none."""
        try:
            client, _ = self._listener.accept()
        except OSError:  # none pending (EAGAIN), or it failed before we took it: nothing to do
            return False
        self.accepted += 1
        if self._mode == "refuse":
            _close(client, rst=True)
            return True
        upstream = None
        if self._mode == "forward":
            try:  # blocking, but short and local: far simpler than a non-blocking connect
                upstream = socket.create_connection(self._upstream, timeout=_CONNECT_TIMEOUT)
            except OSError:
                _close(client, rst=True)  # upstream refused: the client sees a reset
                return True
        pair = _Pair(client, upstream)
        self._pairs.append(pair)
        for sock, _, _ in pair.ends():
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # a peer that already reset shows up in recv()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delays
            self._sel.register(sock, _R, pair)
        return True

    def _read(self, pair: _Pair, sock: socket.socket) -> None:
        if pair.closed:  # dropped earlier in this round of events
            return
        data: bytes | None
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = None  # reset by the peer
        flow = pair.up if sock is pair.client else pair.down
        if pair.blackholed:  # discard whatever arrives; only a closing client ends the pair
            if not data and sock is pair.client:
                self._drop(pair, rst=data is None)
            elif not data:  # upstream went away: close it quietly, the client must learn nothing
                self._sel.unregister(sock)
                _close(sock, rst=False)
                pair.upstream = None
        elif data is None:
            self._drop(pair, rst=True)  # pass the reset on
        elif not data:
            flow.eof = True
        else:
            flow.chunks.append((time.monotonic() + self._delay, data))
            flow.size += len(data)

    def _pump(self) -> float | None:
        """Send what is due and update what each socket waits for; return the select timeout."""
        now, next_due = time.monotonic(), float("inf")
        for pair in list(self._pairs):
            try:
                for sock, _, inflow in pair.ends():
                    inflow.send_to(sock, now)
            except OSError:
                self._drop(pair, rst=True)
                continue
            if any(f.eof and not f.chunks for f in (pair.up, pair.down)):
                self._drop(pair, rst=False)  # one side closed and its last bytes are delivered
                continue
            for sock, outflow, inflow in pair.ends():
                # Back-pressure: a side is not read while its peer cannot keep up.
                read = pair.blackholed or (not outflow.eof and outflow.size < _HIGH_WATER)
                self._watch(sock, (_R if read else 0) | (_W if inflow.head() <= now else 0), pair)
                if inflow.head() > now:
                    next_due = min(next_due, inflow.head())
        return None if next_due == float("inf") else next_due - now

    def _watch(self, sock: socket.socket, events: int, pair: _Pair) -> None:
        try:
            key = self._sel.get_key(sock)
        except KeyError:
            if events:
                self._sel.register(sock, events, pair)
            return
        if not events:
            self._sel.unregister(sock)
        elif key.events != events:
            self._sel.modify(sock, events, pair)

    def _drop(self, pair: _Pair, rst: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        self._pairs.remove(pair)
        for sock, _, _ in pair.ends():
            self._watch(sock, 0, pair)
            _close(sock, rst)
