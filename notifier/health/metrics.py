"""Prometheus metrics for GET /metrics: the same figures as GET /health, labelled by process.

A custom collector on a private registry: each scrape reads the snapshots afresh, so a process
that is gone is simply not in the next scrape. prometheus_client writes the exposition format.
The global registry is never touched, so an application's own metrics stay its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from notifier.health.report import Report

# Several notifiers may live in one process, so the pid alone does not name a series.
LABELS = ("pid", "notifier")


class SnapshotCollector:
    """Turns the health report of the moment into metric families."""

    def __init__(self, report: Callable[[], Report]) -> None:
        self._report = report

    def collect(self) -> Iterator[Metric]:
        report = self._report()
        yield GaugeMetricFamily(
            "notifier_healthy",
            "1 when GET /health answers 200: at least one notifier reports and all are healthy",
            value=1.0 if report.healthy else 0.0,
        )
        yield GaugeMetricFamily(
            "notifier_processes", "Notifiers reporting health", value=len(report.processes)
        )
        counters = {
            "published": CounterMetricFamily(
                "notifier_published", "Events Redis accepted", labels=LABELS
            ),
            "dropped": CounterMetricFamily(
                "notifier_dropped", "Events dropped, by reason", labels=[*LABELS, "reason"]
            ),
            "coalesced": CounterMetricFamily(
                "notifier_coalesced",
                "Progress events replaced by a later one of their task, or superseded by its end",
                labels=LABELS,
            ),
            "failovers": CounterMetricFamily(
                "notifier_failovers",
                "Master changes followed (Sentinel) or slot map refreshes after a move (Cluster)",
                labels=LABELS,
            ),
            "reconnects": CounterMetricFamily(
                "notifier_reconnects",
                "Connections to Redis made again after one was lost",
                labels=LABELS,
            ),
        }
        gauges = {
            "healthy": ("notifier_process_healthy", "1 when this notifier is healthy"),
            "connected": ("notifier_redis_connected", "1 while connected to Redis"),
            "queue_size": ("notifier_queue_depth", "Events waiting in the queue"),
            "queue_capacity": ("notifier_queue_capacity", "Most events the queue holds"),
            "loop_lag": ("notifier_loop_lag_seconds", "How late the last heartbeat ran"),
            "heartbeat_age": ("notifier_heartbeat_age_seconds", "Time since the last heartbeat"),
            "last_publish_at": (
                "notifier_last_publish_timestamp_seconds",
                "Unix time of the last successful publish (absent before the first)",
            ),
        }
        families = {
            key: GaugeMetricFamily(name, doc, labels=LABELS) for key, (name, doc) in gauges.items()
        }
        endpoint = GaugeMetricFamily(
            "notifier_redis_endpoint",
            "1 for the Redis endpoint in use: the master, with Sentinel",
            labels=[*LABELS, "topology", "endpoint"],
        )
        node_labels = [*LABELS, "node"]
        nodes: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "published": CounterMetricFamily(
                "notifier_node_published", "Events a cluster master accepted", labels=node_labels
            ),
            "errors": CounterMetricFamily(
                "notifier_node_errors",
                "Events a cluster master refused or redirected (MOVED, ASK, ...)",
                labels=node_labels,
            ),
            "connected": GaugeMetricFamily(
                "notifier_node_connected",
                "1 while a cluster master is connected",
                labels=node_labels,
            ),
        }
        for process in report.processes:
            s = process.snapshot
            labels = [str(s.pid), str(s.notifier)]
            counters["published"].add_metric(labels, s.published)
            counters["reconnects"].add_metric(labels, s.reconnects)
            counters["coalesced"].add_metric(labels, s.coalesced)
            counters["failovers"].add_metric(labels, int(s.topology.get("failovers") or 0))
            where = s.topology.get("master") or s.topology.get("endpoint")
            if where:
                endpoint.add_metric([*labels, str(s.topology.get("topology")), str(where)], 1.0)
            for node, figures in sorted((s.topology.get("nodes") or {}).items()):
                for key, family in nodes.items():
                    family.add_metric([*labels, str(node)], float(figures.get(key) or 0))
            for reason, count in sorted(s.dropped_by_reason.items()):
                counters["dropped"].add_metric([*labels, reason], count)
            values = {
                "healthy": 0.0 if process.reasons else 1.0,
                "connected": 1.0 if s.connected else 0.0,
                "queue_size": s.queue_size,
                "queue_capacity": s.queue_capacity,
                "loop_lag": s.loop_lag,
                "heartbeat_age": process.heartbeat_age,
                "last_publish_at": s.last_publish_at,
            }
            for key, value in values.items():
                if value is not None:
                    families[key].add_metric(labels, float(value))
        yield from counters.values()
        yield from families.values()
        yield endpoint
        yield from nodes.values()


def registry(report: Callable[[], Report]) -> CollectorRegistry:
    """A private registry holding only the snapshot collector."""
    private = CollectorRegistry()
    private.register(SnapshotCollector(report))
    return private


def render(private: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition and its content type, in the format the scraper's Accept header asks for
    (OpenMetrics or the classic text format), as prometheus_client's own server does."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(private), content_type
