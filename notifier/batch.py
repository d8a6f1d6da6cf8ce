"""A batch of events on the wire: the commands it sends and what their replies say.

Without history, a batch is one PUBLISH per event. With history, it is an XADD then a PUBLISH
per event, then one EXPIRE per task, all in one buffer; the replies come back in the same order.
A workflow step is one EVAL in its place among them (``notifier.workflows.script``).
XADD goes before PUBLISH: a consumer subscribes and then reads the stream, so an event it did not
receive live must already be in the stream when it reads.

Used on the notifier thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from notifier.coalesce import Slot
from notifier.config import NotifierConfig
from notifier.dispatch import Dispatch
from notifier.link import PUBLISH_WITH_HEAD, ReplyError, command, publish_command, publish_head
from notifier.naming import Naming
from notifier.workflows.script import Scripts, missing_script
from notifier.workflows.steps import Member, Step

# One queued event: the task id (it names the channel) and the encoded message, or for a
# coalesced progress event the slot that holds the task's latest one (notifier.coalesce); a
# workflow member's event with its workflow (Member); a declaration step, under the workflow's
# channel id (notifier.workflows); a message for another system, under the key its integration
# gave it (notifier.dispatch), which never reaches Redis through the router.
Item = tuple[str, bytes | Slot | Step | Member | Dispatch]
# An event on its way to Redis: the task id and the encoded message, or a workflow's step.
Outgoing = tuple[str, bytes | Step]


@dataclass(frozen=True)
class Outcome:
    """What the replies to one batch said."""

    failed: list[bool]  # per event: did its PUBLISH get an error reply?
    # per event: a workflow step the node had no script for (send it again); None: none was
    again: list[bool] | None
    publish_errors: list[ReplyError]
    history_errors: list[ReplyError]  # XADD or EXPIRE errors: logged, the event still counts


class Packer:
    """Turns batches into pipelined commands, and their replies into an Outcome."""

    def __init__(self, config: NotifierConfig, naming: Naming) -> None:
        self.naming = naming
        self._history = config.history.enabled
        self._maxlen = b"%d" % config.history.maxlen
        self._ttl = b"%d" % config.history.ttl_seconds
        self._scripts = Scripts(naming, self._history, self._maxlen, self._ttl)

    def pack(self, batch: Sequence[Outgoing]) -> tuple[bytes, int]:
        """The batch's commands in one buffer, and how many replies they will get."""
        naming, verb = self.naming, self.naming.publish
        if _has_steps(batch):
            return self._pack_mixed(batch)
        plain = cast(Sequence[tuple[str, bytes]], batch)
        # A task's events tend to come together: its PUBLISH's head is made once per batch, and
        # each event adds its message's length and bytes in one formatting step.
        heads: dict[str, bytes] = {}
        if not self._history:
            publishes = []
            for task_id, payload in plain:
                head = heads.get(task_id)
                if head is None:
                    head = heads[task_id] = publish_head(naming.channel(task_id).encode(), verb)
                publishes.append(PUBLISH_WITH_HEAD % (head, len(payload), payload))
            return b"".join(publishes), len(publishes)
        packed: list[bytes] = []
        keys: dict[str, bytes] = {}
        for task_id, payload in plain:
            key = keys.get(task_id)
            if key is None:
                key = keys[task_id] = naming.key(task_id).encode()
                heads[task_id] = publish_head(naming.channel(task_id).encode(), verb)
            packed.append(command(b"XADD", key, b"MAXLEN", self._maxlen, b"*", b"event", payload))
            packed.append(PUBLISH_WITH_HEAD % (heads[task_id], len(payload), payload))
        packed += [command(b"EXPIRE", key, self._ttl) for key in keys.values()]
        return b"".join(packed), len(packed)

    def _pack_mixed(self, batch: Sequence[Outgoing]) -> tuple[bytes, int]:
        """pack() for a batch with workflow steps: each step's EVALSHA in its place."""
        packed: list[bytes] = []
        keys: dict[str, bytes] = {}
        naming, verb = self.naming, self.naming.publish
        for task_id, data in batch:
            if isinstance(data, Step):
                packed.append(self._scripts.command(data))
                continue
            channel = naming.channel(task_id).encode()
            if self._history:
                key = keys.get(task_id)
                if key is None:
                    key = keys[task_id] = naming.key(task_id).encode()
                packed.append(command(b"XADD", key, b"MAXLEN", self._maxlen, b"*", b"event", data))
            packed.append(publish_command(channel, data, verb))
        packed += [command(b"EXPIRE", key, self._ttl) for key in keys.values()]
        self._scripts.load = False  # the whole script went with this batch's steps
        return b"".join(packed), len(packed)

    def per_event(
        self, batch: Sequence[Outgoing], replies: Sequence[object]
    ) -> list[tuple[object, ...]]:
        """Each event's own replies, in order: (XADD, PUBLISH) with history, (PUBLISH,)
        without, (EVAL,) for a workflow step."""
        if not _has_steps(batch):
            if not self._history:
                return [(r,) for r in replies[: len(batch)]]
            return [(replies[2 * i], replies[2 * i + 1]) for i in range(len(batch))]
        own: list[tuple[object, ...]] = []
        at = 0
        for _, data in batch:
            width = 1 if isinstance(data, Step) or not self._history else 2
            own.append(tuple(replies[at : at + width]))
            at += width
        return own

    def tail(self, batch: Sequence[Outgoing], replies: Sequence[object]) -> list[object]:
        """The replies after the events' own: one EXPIRE per task (not per workflow), in order
        of first appearance, with history."""
        if not self._history:
            return []
        own = sum(1 if isinstance(data, Step) else 2 for _, data in batch)
        return list(replies[own:])

    @staticmethod
    def expired(batch: Sequence[Outgoing]) -> list[str]:
        """The tasks whose EXPIRE ends the pack (with history), in order."""
        return list(dict.fromkeys(t for t, data in batch if not isinstance(data, Step)))

    def read(self, batch: Sequence[Outgoing], replies: Sequence[object]) -> Outcome:
        """Sort the replies to ``batch`` as :meth:`pack` packed it."""
        events = len(batch)
        publishes: Sequence[object]
        history: Sequence[object]
        steps = _has_steps(batch)
        if steps:
            own = self.per_event(batch, replies)
            publishes = [r[-1] for r in own]
            history = [*(r[0] for r in own if len(r) == 2), *self.tail(batch, replies)]
        elif not self._history:
            publishes, history = replies, []
        else:  # per event an XADD and a PUBLISH, then an EXPIRE per task
            publishes = replies[1 : 2 * events : 2]
            history = [*replies[: 2 * events : 2], *replies[2 * events :]]
        failed = [isinstance(reply, ReplyError) for reply in publishes]
        again = None
        if steps and any(failed):
            again = [missing_script(reply) for reply in publishes]
            failed = [f and not a for f, a in zip(failed, again, strict=True)]
            if any(again):
                self._scripts.load = True
            else:
                again = None
        return Outcome(
            failed=failed,
            again=again,
            publish_errors=[
                r for r in publishes if isinstance(r, ReplyError) and not missing_script(r)
            ],
            history_errors=[r for r in history if isinstance(r, ReplyError)],
        )


def _has_steps(batch: Sequence[Outgoing]) -> bool:
    for _, data in batch:  # noqa: SIM110 - a loop is twice as fast as any() over a generator
        if type(data) is not bytes:
            return True
    return False
