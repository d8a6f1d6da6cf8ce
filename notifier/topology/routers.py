"""``make_router``: the router for the topology ``redis.url`` names."""

from __future__ import annotations

from notifier.batch import Packer
from notifier.config import NotifierConfig
from notifier.config.urls import parse
from notifier.ledger import Ledger
from notifier.logs import Logger
from notifier.naming import naming_for
from notifier.topology.base import ConnectionState, Router
from notifier.topology.single import SingleRouter


def make_router(config: NotifierConfig, ledger: Ledger, log: Logger) -> Router:
    topology = parse(config.redis.url)
    state, packer = ConnectionState(config, ledger, log), Packer(config, naming_for(config))
    if topology.kind == "sentinel":
        from notifier.topology.sentinel import SentinelRouter

        return SentinelRouter(config, state, packer, topology)
    if topology.kind == "cluster":
        from notifier.topology.cluster import ClusterRouter

        return ClusterRouter(config, state, packer, topology)
    return SingleRouter(config, state, packer)
