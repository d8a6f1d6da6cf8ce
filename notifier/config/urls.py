"""``redis.url`` for the three topologies: one node, Sentinel, Cluster.

- ``redis://``, ``rediss://``, ``unix://``: one node, as redis-py reads it.
- ``redis+sentinel://[user:password@]host1:26379,host2:26379/<service_name>[/<db>]``: the
  sentinels, and the name of the master they watch (python-socketio's form). The userinfo is for
  the master (and its replicas); the sentinels' own credentials and TLS are query options:
  ``sentinel_username``, ``sentinel_password``, ``sentinel_tls=true``. ``tls=true`` makes the
  connections to the master TLS; ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and
  ``ssl_cert_reqs`` go to every TLS connection.
- ``redis+cluster://[user:password@]host1:port1,host2:port2/``: seed nodes of a Redis Cluster;
  the same ``tls`` and ``ssl_*`` options. A cluster has only database 0.

``problem(url)`` says what is wrong with a URL in words (None when nothing is); ``parse`` turns a
good one into a ``Topology``. Neither ever shows a password: a ``Topology``'s repr has the URL
redacted and no credentials, and the words are scrubbed of everything ``redact_url`` masks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from redis.asyncio.connection import ConnectionPool

from notifier.config.redaction import redact_url, scrub, url_secrets

SENTINEL = "redis+sentinel"
CLUSTER = "redis+cluster"
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_tls")
NODE_OPTIONS = ("tls", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
EXPECTED = (
    "must be a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL (with "
    "options redis-py accepts)"
)
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class Topology:
    """What a ``redis.url`` names. ``hosts`` are the sentinels or the seed nodes."""

    kind: Literal["single", "sentinel", "cluster"]
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_tls: bool = False
    ssl: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Written out, so that a field added later is not shown until someone decides it may
        be: the URL redacted, the passwords left out."""
        return (
            f"Topology(kind={self.kind!r}, url={redact_url(self.url)!r}, hosts={self.hosts!r}, "
            f"service={self.service!r}, db={self.db}, username={self.username!r}, "
            f"tls={self.tls}, sentinel_username={self.sentinel_username!r}, "
            f"sentinel_tls={self.sentinel_tls}, ssl={self.ssl!r})"
        )

    def node_url(self, host: str, port: int) -> str:
        """A redis:// (or rediss://) URL for one data node, with the credentials and options."""
        return self._url(host, port, self.username, self.password, self.tls, self.db)

    def sentinel_url(self, host: str, port: int) -> str:
        """A URL for one sentinel, with the sentinels' own credentials and TLS."""
        user, secret = self.sentinel_username, self.sentinel_password
        return self._url(host, port, user, secret, self.sentinel_tls, 0)

    def _url(
        self, host: str, port: int, user: str | None, secret: str | None, tls: bool, db: int
    ) -> str:
        userinfo = ""
        if user or secret:
            password = f":{quote(secret, safe='')}" if secret else ""
            userinfo = f"{quote(user or '', safe='')}{password}@"
        shown = f"[{host}]" if ":" in host else host
        query = f"?{urlencode(self.ssl)}" if tls and self.ssl else ""
        return f"{'rediss' if tls else 'redis'}://{userinfo}{shown}:{port}/{db}{query}"

    def node_kwargs(self) -> dict[str, object]:
        """Connection options for the Redis nodes (redis-py names)."""
        return {"db": self.db, **_credentials(self.username, self.password, self.tls, self.ssl)}

    def sentinel_kwargs(self) -> dict[str, object]:
        """Connection options for the sentinels themselves (redis-py names)."""
        return _credentials(
            self.sentinel_username, self.sentinel_password, self.sentinel_tls, self.ssl
        )


def _credentials(
    username: str | None, password: str | None, tls: bool, ssl: dict[str, str]
) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    if tls:
        kwargs["ssl"] = True
        kwargs.update(ssl)
    return kwargs


def problem(url: str) -> str | None:
    """What is wrong with ``url``, for the ConfigError; None when it can be used."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return EXPECTED
    if scheme in (SENTINEL, CLUSTER):
        try:
            parse(url)
        except ValueError as exc:
            return str(exc)  # scrubbed by parse
        return None
    return None if _is_single_url(url) else EXPECTED


def parse(url: str) -> Topology:
    """The topology ``url`` names; ValueError saying what is wrong, without the URL's secrets
    (a host or option quoted from a garbled URL may hold part of a password)."""
    try:
        return _parse(url)
    except ValueError as exc:
        raise ValueError(scrub(str(exc), url_secrets(url))) from None


def _parse(url: str) -> Topology:
    parts = urlsplit(url)
    if parts.scheme not in (SENTINEL, CLUSTER):
        return Topology("single", url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username, password = _userinfo(userinfo) if at else (None, None)
    hosts = _hosts(parts.scheme, hostlist)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    path = [p for p in parts.path.split("/") if p]
    kind: Literal["sentinel", "cluster"] = "sentinel" if parts.scheme == SENTINEL else "cluster"
    service, db = "", 0
    if kind == "sentinel":
        if not path:
            raise ValueError(
                "needs the master's service name: redis+sentinel://host:26379,.../<service>/<db>"
            )
        service = unquote(path[0])
        db = _db(path[1:], parts.scheme)
    elif path:
        raise ValueError("a redis+cluster:// URL has no path: a cluster has only database 0")
    allowed = NODE_OPTIONS + (SENTINEL_OPTIONS if kind == "sentinel" else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        nearest = difflib.get_close_matches(unknown[0], allowed, n=1, cutoff=0.6)
        hint = f"did you mean {nearest[0]}? " if nearest else ""
        raise ValueError(
            f"does not take the option {unknown[0]!r} ({hint}options: {', '.join(allowed)})"
        )
    topology = Topology(
        kind=kind,
        url=url,
        hosts=hosts,
        service=service,
        db=db,
        username=username,
        password=password,
        tls=_flag(options, "tls"),
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        sentinel_tls=_flag(options, "sentinel_tls"),
        ssl={k: v for k, v in options.items() if k.startswith("ssl_")},
    )
    ConnectionPool.from_url(topology.node_url(*hosts[0])).make_connection()  # type: ignore[no-untyped-call]
    return topology


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, secret = userinfo.partition(":")
    return (unquote(user) or None), (unquote(secret) if colon else None)


def _hosts(scheme: str, hostlist: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in (h.strip() for h in hostlist.split(",")):
        if not item:
            continue
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        default = 26379 if scheme == SENTINEL else 6379
        if not port_text:
            port = default
        elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
            port = int(port_text)
        else:
            raise ValueError(f"host {item!r} has a bad port: a number from 1 to 65535, please")
        if not host:
            raise ValueError(f"host {item!r} has no name")
        hosts.append((host, port))
    if not hosts:
        kind = "sentinels" if scheme == SENTINEL else "seed nodes"
        raise ValueError(f"names no hosts: {scheme}://host1:port1,host2:port2/... lists the {kind}")
    return tuple(hosts)


def _db(rest: list[str], scheme: str) -> int:
    if not rest:
        return 0
    if len(rest) > 1 or not rest[0].isdigit():
        raise ValueError(f"{scheme}://hosts/<service>/<db>: the database is a number")
    return int(rest[0])


def _flag(options: dict[str, str], name: str) -> bool:
    value = options.get(name, "false").lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"option {name} must be true or false, got {value!r}")


def _is_single_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            ok = bool(parts.path)
        else:
            _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
            db = parts.path.lstrip("/")
            ok = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
            ok = ok and (db == "" or db.isdigit())
        # The notifier thread builds its connection from the URL, options included: anything
        # redis-py would refuse there must be refused here, before anything starts.
        if ok:
            ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call]
        return ok
    except (ValueError, TypeError):
        return False
