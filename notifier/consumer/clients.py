"""redis-py clients for the consumer side (subscribe(), last_event(), the gateway's history
reads, ``notifier listen``), for whichever topology ``redis.url`` names.

One node: ``Redis.from_url``. Sentinel: a client from ``Sentinel(...).master_for(service)``,
which asks the sentinels for the master at every new connection, so a connection made after a
failover goes to the new master. Cluster: ``RedisCluster`` on the seed nodes for the stream
reads (it routes each key to its slot's master); a subscription is a plain connection to the
master that owns the channel's slot (``owner_client``), SSUBSCRIBEd there, so that a slot that
moves shows as a ``sunsubscribe`` the caller handles, not as a silent resubscription. None of
them retries on its own: the callers reconnect, and read the history again, themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio
import redis.cluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from notifier.config import RedisConfig
from notifier.config.urls import Topology, parse

# No silent retries inside redis-py: a reconnect it made on its own would resubscribe without
# reading the stream again, and the events published meanwhile would be lost.
NO_RETRY = AsyncRetry(NoBackoff(), 0, supported_errors=())


def _sentinel_kwargs(topology: Topology, cfg: RedisConfig, retry: Any) -> dict[str, Any]:
    """For the connections to the sentinels: a sentinel that is down is skipped at once (no
    retries with backoff), and one that stalls gives up after connect_timeout."""
    return {
        **topology.sentinel_kwargs(),
        "socket_connect_timeout": cfg.connect_timeout,
        "socket_timeout": cfg.connect_timeout,
        "retry": retry,
    }


def _node_options(topology: Topology) -> dict[str, Any]:
    return dict(topology.node_kwargs())


AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster


class _SentinelManaged(redis.asyncio.Redis):
    """A master_for() client that closes the sentinels' connections too when it is closed."""

    watchers: AsyncSentinel | None = None  # the Sentinel object this client asks

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.watchers.sentinels if self.watchers is not None else ():
            await client.aclose()


class _SyncSentinelManaged(redis.Redis):
    watchers: Sentinel | None = None

    def close(self) -> None:
        super().close()
        for client in self.watchers.sentinels if self.watchers is not None else ():
            client.close()


def _async_common(cfg: RedisConfig) -> dict[str, Any]:
    return {
        "socket_connect_timeout": cfg.connect_timeout,
        # No socket_timeout: with one, redis-py sends through asyncio.wait_for, which on Python
        # 3.11 can swallow a cancellation (CPython issue 86296) and leave a closed subscription
        # running.
        "socket_timeout": None,
        "retry": NO_RETRY,
        "protocol": 2,  # RESP2: no HELLO round trip; pub/sub messages are plain replies
    }


def async_client(cfg: RedisConfig, **pool: Any) -> AsyncClient:
    """An asyncio client (it connects on first use) that never retries and never times out on
    its own: every round trip is bounded by the caller's asyncio.timeout. ``pool``: extra
    connection pool options (``max_connections``)."""
    topology = parse(cfg.url)
    common = _async_common(cfg)
    if topology.kind == "sentinel":
        sentinel = AsyncSentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(topology.hosts),
            sentinel_kwargs=_sentinel_kwargs(topology, cfg, NO_RETRY),
            **common,
        )
        managed: _SentinelManaged = sentinel.master_for(
            topology.service, redis_class=_SentinelManaged, **_node_options(topology), **pool
        )
        managed.watchers = sentinel
        return managed
    if topology.kind == "cluster":
        options = _node_options(topology)
        options.pop("db")
        nodes = [ClusterNode(host, port) for host, port in topology.hosts]
        return redis.asyncio.RedisCluster(startup_nodes=nodes, **common, **options)
    return redis.asyncio.Redis.from_url(cfg.url, **common, **pool)


async def owner_client(cfg: RedisConfig, cluster: redis.asyncio.RedisCluster, key: str) -> Any:
    """A plain asyncio client for the cluster master that owns ``key``'s slot, as ``cluster``'s
    slot map (loaded now if it is not yet) says."""
    if not cluster.nodes_manager.slots_cache:
        async with asyncio.timeout(2 * cfg.connect_timeout):
            await cluster.initialize()
    node = cluster.get_node_from_key(key)
    if node is None:
        raise redis.ConnectionError(f"no cluster node owns {key!r}'s slot")
    url = parse(cfg.url).node_url(node.host, int(node.port))
    return redis.asyncio.Redis.from_url(url, **_async_common(cfg))


def sync_client(cfg: RedisConfig, key: str | None = None, **options: Any) -> redis.Redis:
    """A blocking client for the command line, with the same topology rules. On a cluster it
    is a client for the master that owns ``key``'s slot now (``key`` is required there)."""
    topology = parse(cfg.url)
    common: dict[str, Any] = {
        "socket_connect_timeout": cfg.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        **options,
    }
    if topology.kind == "cluster":
        if key is None:
            raise ValueError("a cluster client is for one key's slot: name the key")
        options = _node_options(topology)
        options.pop("db")
        seeds = [
            redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in topology.hosts
        ]
        cluster = redis.cluster.RedisCluster(
            startup_nodes=seeds,
            socket_connect_timeout=cfg.connect_timeout,
            socket_timeout=cfg.connect_timeout,
            **options,
        )
        try:
            node = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
        finally:
            cluster.close()
        return redis.Redis.from_url(topology.node_url(node.host, int(node.port)), **common)
    if topology.kind == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(topology.hosts),
            sentinel_kwargs=_sentinel_kwargs(topology, cfg, Retry(NoBackoff(), 0)),
            **common,
        )
        client: _SyncSentinelManaged = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
            topology.service, redis_class=_SyncSentinelManaged, **_node_options(topology)
        )
        client.watchers = sentinel
        return client
    return redis.Redis.from_url(cfg.url, **common)
