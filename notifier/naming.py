"""What a task's events are called in Redis: its channel, its history stream, the publish verb.

One node and Sentinel: ``<channel_prefix><task>`` and ``<history.key_prefix><task>``, PUBLISH.
Cluster: the task id is a hash tag, ``<channel_prefix>{<task>}`` and
``<history.key_prefix>{<task>}``, so that a task's channel and stream share one slot (one node,
one pipeline), and the event goes out with SPUBLISH, which a cluster keeps within the shard that
owns the slot instead of broadcasting it to every node. A subscriber in another language uses
the same names (SSUBSCRIBE to the channel on the node that owns its slot).
"""

from __future__ import annotations

from dataclasses import dataclass

from notifier.config import NotifierConfig, urls


@dataclass(frozen=True, slots=True)
class Naming:
    channel_prefix: str
    key_prefix: str
    sharded: bool = False  # Redis Cluster: hash-tagged names, SPUBLISH and SSUBSCRIBE

    def channel(self, task_id: str) -> str:
        return self.channel_prefix + self._tag(task_id)

    def key(self, task_id: str) -> str:
        return self.key_prefix + self._tag(task_id)

    @property
    def publish(self) -> bytes:
        return b"SPUBLISH" if self.sharded else b"PUBLISH"

    def _tag(self, task_id: str) -> str:
        return f"{{{task_id}}}" if self.sharded else task_id


def naming_for(config: NotifierConfig) -> Naming:
    sharded = urls.parse(config.redis.url).kind == "cluster"
    return Naming(config.redis.channel_prefix, config.history.key_prefix, sharded)
