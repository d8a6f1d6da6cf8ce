"""Topologies: one node, Sentinel, Cluster; three answers to "which connection does this event
go to". ``make_router`` picks the one ``redis.url`` names (``notifier.config.urls``)."""
