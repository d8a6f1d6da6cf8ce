"""The listening socket of ``notifier gateway`` when it runs more than one worker process.

uvicorn's supervisor (``uvicorn.supervisors.Multiprocess``) binds one socket in the parent and
passes it, pickled, to each worker it spawns: every worker then accepts from one shared queue,
and the kernel wakes whichever worker is waiting first. Under load a few workers take most new
connections, and the gateway's streams are long-lived: they stay where they landed.

With SO_REUSEPORT (Linux) each worker listens on a socket of its own, bound to the same address,
and the kernel spreads new connections over them by a hash of each connection's addresses:
evenly. uvicorn's supervisor is kept as it is; only the socket it is given differs:

- the parent binds a ``ReusePortSocket`` and never listens on it. That reserves the port (a bad
  or taken address fails at once, in the parent), gives port 0 its actual number, and takes no
  connections: the kernel hands connections only to listening sockets.
- multiprocessing pickles a ``socket.socket`` by duplicating its descriptor into the worker, but
  its pickler looks reducers up by exact type, so a subclass's own ``__reduce__`` is used
  instead: unpickled in a worker (a replacement too), a ``ReusePortSocket`` is a fresh
  SO_REUSEPORT socket bound to the parent's address, which the worker's server listens on.

Linux lets another socket join the port only with SO_REUSEPORT set and the same user: a process
of the user the gateway runs as could take a share of its connections, as it could read its
configuration anyway.

A worker that dies takes the connections still waiting in its own accept queue with it (the
kernel resets them); their clients connect again, to another worker.

Without SO_REUSEPORT, it is uvicorn's one shared socket: connections may spread unevenly.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from uvicorn.config import STARTUP_FAILURE, Config

from notifier.exceptions import NotifierError

REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


class ReusePortSocket(socket.socket):
    """Bound with SO_REUSEPORT in the parent; pickled, it binds another such socket instead."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return worker_socket, (self.family, self.getsockname())


def parent_socket(config: Config) -> socket.socket:
    """The socket the supervisor hands to its workers: bound, not listening. NotifierError
    when the address cannot be bound."""
    if not REUSE_PORT:
        return config.bind_socket()  # shared; uvicorn's own, which exits on a bad address
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = ReusePortSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        _bind(sock, (config.host, config.port))
    except OSError as exc:
        sock.close()
        raise NotifierError(f"cannot listen on {config.host} port {config.port}: {exc}") from None
    return sock


def worker_socket(family: socket.AddressFamily, address: Any) -> socket.socket:
    """The worker's own socket on the parent's address. Called while the worker unpickles what
    the supervisor sent it; a failure exits with uvicorn's startup-failure status, on which the
    supervisor stops instead of starting the worker again and again."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        _bind(sock, address)
    except OSError as exc:
        sock.close()
        # Logging is not configured yet in the worker: the supervisor's stderr it is.
        print(f"notifier: gateway worker cannot bind {address!r}: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    return sock


def _bind(sock: socket.socket, address: Any) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart at once
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
