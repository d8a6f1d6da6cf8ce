"""The script that applies a step to a workflow's state and publishes what follows from it.

On the notifier thread: a step goes out as one EVAL, pipelined with the batch's other commands
(``notifier/batch.py``). The state is one hash per workflow (``<history key>:state``), beside
the workflow's history stream; in a cluster both carry the channel id as their hash tag, so the
script's keys and its SPUBLISH share one slot.

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

from notifier.link import command
from notifier.topology.naming import Naming
from notifier.workflows.ids import PREFIX
from notifier.workflows.steps import Step

SCRIPT = b"""
local state, stream = KEYS[1], KEYS[2]
local channel, verb, history, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4], ARGV[5]
local member, change, progress = ARGV[6], ARGV[7], ARGV[8]
local branch, size, callback, seal = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local member_event, completed_event, failed_event = ARGV[13], ARGV[14], ARGV[15]

local function number(field)
  return tonumber(redis.call('HGET', state, field) or '0')
end

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

local completed, failed, running = number('completed'), number('failed'), number('running')
local expected = number('expected')
local total = math.max(expected, completed + failed + running)
local mean = 0
if total > 0 then
  mean = number('progress') / total
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

if not redis.call('HGET', state, 'ended') then
  if member_counts and member_event ~= '' then
    emit(member_event)
  end
  if failed_now and failed_event ~= '' then
    redis.call('HSET', state, 'ended', 'failed')
    emit(failed_event)
  elseif failed == 0 and running == 0 and expected > 0 and completed >= expected
      and completed_event ~= '' then
    local sealed = tonumber(redis.call('HGET', state, 'sealed') or '-1')
    if sealed >= 0 and number('branches') >= sealed then
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


class Scripts:
    """EVAL commands for steps, named as ``naming`` names a channel and its stream."""

    def __init__(self, naming: Naming, history: bool, maxlen: bytes, ttl: bytes) -> None:
        self.naming = naming
        self._history = b"1" if history else b"0"
        self._maxlen = maxlen
        self._ttl = ttl

    def command(self, step: Step) -> bytes:
        naming, channel_id = self.naming, PREFIX + step.workflow
        stream = naming.key(channel_id).encode()
        return command(
            b"EVAL",
            SCRIPT,
            b"2",
            stream + b":state",
            stream,
            naming.channel(channel_id).encode(),
            naming.publish,
            self._history,
            self._maxlen,
            self._ttl,
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
        )
