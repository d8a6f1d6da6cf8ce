"""A batch of events on the wire: the commands it sends and what their replies say.

Without history, a batch is one PUBLISH per event. With history, it is an XADD then a PUBLISH
per event, then one EXPIRE per task, all in one buffer; the replies come back in the same order.
XADD goes before PUBLISH: a consumer subscribes and then reads the stream, so an event it did not
receive live must already be in the stream when it reads.

Used on the notifier thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from notifier.coalesce import Slot
from notifier.config import NotifierConfig
from notifier.link import ReplyError, command, publish_command
from notifier.topology.naming import Naming

# One queued event: the task id (it names the channel) and the encoded message, or for a
# coalesced progress event the slot that holds the task's latest one (notifier/coalesce.py).
Item = tuple[str, bytes | Slot]
# An event on its way to Redis: the task id and the encoded message.
Event = tuple[str, bytes]


@dataclass(frozen=True)
class Outcome:
    """What the replies to one batch said."""

    failed: list[bool]  # per event: did its PUBLISH get an error reply?
    publish_errors: list[ReplyError]
    history_errors: list[ReplyError]  # XADD or EXPIRE errors: logged, the event still counts


class Packer:
    """Turns batches into pipelined commands, and their replies into an Outcome."""

    def __init__(self, config: NotifierConfig, naming: Naming) -> None:
        self.naming = naming
        self._history = config.history.enabled
        self._maxlen = b"%d" % config.history.maxlen
        self._ttl = b"%d" % config.history.ttl_seconds

    def pack(self, batch: Sequence[Event]) -> tuple[bytes, int]:
        """The batch's commands in one buffer, and how many replies they will get."""
        naming, verb = self.naming, self.naming.publish
        if not self._history:
            publishes = [
                publish_command(naming.channel(t).encode(), data, verb) for t, data in batch
            ]
            return b"".join(publishes), len(publishes)
        packed: list[bytes] = []
        keys: dict[str, bytes] = {}
        for task_id, payload in batch:
            key = keys.get(task_id)
            if key is None:
                key = keys[task_id] = naming.key(task_id).encode()
            packed.append(command(b"XADD", key, b"MAXLEN", self._maxlen, b"*", b"event", payload))
            packed.append(publish_command(naming.channel(task_id).encode(), payload, verb))
        packed += [command(b"EXPIRE", key, self._ttl) for key in keys.values()]
        return b"".join(packed), len(packed)

    def read(self, events: int, replies: Sequence[object]) -> Outcome:
        """Sort the replies to a batch of ``events`` events packed by :meth:`pack`."""
        if not self._history:
            publishes, history = replies, []
        else:  # per event an XADD and a PUBLISH, then an EXPIRE per task
            publishes = replies[1 : 2 * events : 2]
            history = [*replies[: 2 * events : 2], *replies[2 * events :]]
        return Outcome(
            failed=[isinstance(reply, ReplyError) for reply in publishes],
            publish_errors=[r for r in publishes if isinstance(r, ReplyError)],
            history_errors=[r for r in history if isinstance(r, ReplyError)],
        )
