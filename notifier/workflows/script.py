"""The script that applies a step to a workflow's state and publishes what follows from it.

On the notifier thread: a step goes out as one EVALSHA, pipelined with the batch's other
commands (``notifier.batch``). A node that does not know the script yet (a new one, a
restarted one, a promoted replica) answers NOSCRIPT: that step is sent again, and the next
batch carries the whole script (EVAL), which loads it. The state is one hash per workflow
(``<history key>:state``), beside the workflow's history stream; in a cluster both carry the
channel id as their hash tag, so the script's keys and its SPUBLISH share one slot.

What the hash holds: ``b:<task id>`` per declared branch (its member count), ``branches``,
``expected`` (members declared, the chord callback's included), ``sealed`` (branches in all,
once known), ``m:<member>`` (``r`` running, ``c`` completed, ``f`` failed), ``p:<member>`` (its
last progress), the counters ``running``, ``completed``, ``failed``, ``progress`` (the sum of
the members' progress: a completed member counts 100), and ``ended`` once the terminal event
is out.

Every step may reach Redis twice (delivery is at least once): declarations are kept per branch
and member changes per member, so applying one again changes nothing, and a member that ended
stays ended. The workflow's terminal event goes out once, when the first member fails, or when
every declared branch is in, sealed, and every member completed; nothing is published on its
channel after it.
"""

from __future__ import annotations

import hashlib

from notifier.link import ReplyError
from notifier.naming import Naming
from notifier.workflows.ids import PREFIX
from notifier.workflows.steps import Step

SCRIPT = b"""
local state, stream = KEYS[1], KEYS[2]
local verb, history, maxlen, ttl, channel = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4], ARGV[5]
local member, change, progress = ARGV[6], ARGV[7], ARGV[8]
local branch, size, callback, seal = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local member_event, completed_event, failed_event = ARGV[13], ARGV[14], ARGV[15]

if branch ~= '' and redis.call('HSETNX', state, 'b:' .. branch, size) == 1 then
  redis.call('HINCRBY', state, 'branches', 1)
  redis.call('HINCRBY', state, 'expected', size)
end
if callback ~= '' and redis.call('HSETNX', state, 'callback', callback) == 1 then
  redis.call('HINCRBY', state, 'expected', callback)
end
if seal ~= '' then
  redis.call('HSET', state, 'sealed', seal)
end

local failed_now, member_counts = false, false
if member ~= '' then
  local was = redis.call('HGET', state, 'm:' .. member)
  if was ~= 'c' and was ~= 'f' then
    member_counts = true
    if change == 'running' and not was then
      redis.call('HSET', state, 'm:' .. member, 'r')
      redis.call('HINCRBY', state, 'running', 1)
    elseif change == 'completed' or change == 'failed' then
      if was == 'r' then
        redis.call('HINCRBY', state, 'running', -1)
      end
      if change == 'completed' then
        redis.call('HSET', state, 'm:' .. member, 'c')
        redis.call('HINCRBY', state, 'completed', 1)
        progress = '100'
      else
        redis.call('HSET', state, 'm:' .. member, 'f')
        redis.call('HINCRBY', state, 'failed', 1)
        failed_now = true
      end
    end
    if progress ~= '' then
      local before = tonumber(redis.call('HGET', state, 'p:' .. member) or '0')
      redis.call('HSET', state, 'p:' .. member, progress)
      redis.call('HINCRBYFLOAT', state, 'progress', tonumber(progress) - before)
    end
  end
end

local now = redis.call('HMGET', state,
  'completed', 'failed', 'running', 'expected', 'progress', 'ended', 'sealed', 'branches')
local completed, failed = tonumber(now[1] or '0'), tonumber(now[2] or '0')
local running, expected = tonumber(now[3] or '0'), tonumber(now[4] or '0')
local total = math.max(expected, completed + failed + running)
local mean = 0
if total > 0 then
  mean = tonumber(now[5] or '0') / total
end
local counts = string.format(
  '"total":%d,"completed":%d,"failed":%d,"running":%d,"progress":%.2f}}',
  total, completed, failed, running, mean)

local sent = 0
local function emit(prefix)
  local payload = prefix .. counts
  if history then
    redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'event', payload)
  end
  redis.call(verb, channel, payload)
  sent = sent + 1
end

if not now[6] then
  if member_counts and member_event ~= '' then
    emit(member_event)
  end
  if failed_now and failed_event ~= '' then
    redis.call('HSET', state, 'ended', 'failed')
    emit(failed_event)
  elseif failed == 0 and running == 0 and expected > 0 and completed >= expected
      and completed_event ~= '' then
    local sealed = tonumber(now[7] or '-1')
    if sealed >= 0 and tonumber(now[8] or '0') >= sealed then
      redis.call('HSET', state, 'ended', 'completed')
      emit(completed_event)
    end
  end
end
if history then
  redis.call('EXPIRE', stream, ttl)
end
redis.call('EXPIRE', state, ttl)
return sent
"""


SHA = hashlib.sha1(SCRIPT).hexdigest().encode()  # the script's name in Redis's script cache


def missing_script(reply: object) -> bool:
    """Whether ``reply`` says the node has no script of that SHA (the step did not run)."""
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


class Scripts:
    """EVALSHA commands for steps (EVAL, once a node said NOSCRIPT), named as ``naming`` names
    a channel and its stream. What every step's command shares is formatted once."""

    def __init__(self, naming: Naming, history: bool, maxlen: bytes, ttl: bytes) -> None:
        self.naming = naming
        self.load = False  # send the whole script with the next batch's steps
        arguments = 3 + 2 + 5 + 10  # verb, script, numkeys; 2 keys; 5 fixed and 10 step values
        self._heads = {
            loading: b"*%d\r\n" % arguments + _bulks(verb, script, b"2")
            for loading, verb, script in ((False, b"EVALSHA", SHA), (True, b"EVAL", SCRIPT))
        }
        self._fixed = _bulks(naming.publish, b"1" if history else b"0", maxlen, ttl)
        self._names: dict[str, bytes] = {}  # workflow -> its keys and channel, formatted

    def command(self, step: Step) -> bytes:
        names = self._names.get(step.workflow)
        if names is None:
            names = self._name(step.workflow)
        return b"".join(
            (
                self._heads[self.load],
                names,
                _bulks(
                    step.member.encode(),
                    step.change.encode(),
                    step.progress.encode(),
                    step.branch.encode(),
                    b"%d" % step.size,
                    step.callback.encode(),
                    step.seal.encode(),
                    step.member_event,
                    step.completed_event,
                    step.failed_event,
                ),
            )
        )

    def _name(self, workflow: str) -> bytes:
        """The state key, the stream key, then the fixed values and the channel."""
        naming, channel_id = self.naming, PREFIX + workflow
        stream = naming.key(channel_id).encode()
        channel = naming.channel(channel_id).encode()
        names = _bulks(stream + b":state", stream) + self._fixed + _bulks(channel)
        if len(self._names) >= NAMES_KEPT:
            self._names.clear()
        self._names[workflow] = names
        return names


NAMES_KEPT = 1024  # workflows whose names are kept formatted


def _bulks(*values: bytes) -> bytes:
    """RESP bulk strings, as ``command`` writes each argument."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(value), value) for value in values)
