"""The Lua scripts of :mod:`coord.redis_lock` (keys and formats: its docstring).

Each runs atomically in Redis. KEYS of a lock ``k``: the lease ``P``, the fence
``P:fence``, the waiter queue ``P:q`` and its sequence ``P:qseq``; a waiter's
heartbeat is ``P:w:<token>``.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "DEQUEUE", "EXTEND", "GRANT_HEAD", "RELEASE"]

# The fence never drops below Redis' clock in microseconds, so fences keep
# growing even when Redis restarts without persistence and INCR restarts at 1.
# Lua numbers are doubles: fences (~1.7e15) are exact below 2^53, and are
# formatted with %d wherever they become text.
_NEXT_FENCE = """
local f = redis.call('INCR', KEYS[FENCE])
local t = redis.call('TIME')
local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
if f < floor then
  redis.call('SET', KEYS[FENCE], string.format('%d', floor))
  f = floor
end
"""
# ARGV: token, lease ttl ms, waiter ttl ms, heartbeat prefix, heartbeat value
# (``<ttl ms>:<attempt start, our monotonic clock in us>:<process id>``, see
# GRANT_HEAD; a caller that gives none writes '1', which is never granted to).
ACQUIRE = (
    """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  -- ours already: an attempt whose answer was lost, or a grant (GRANT_HEAD)
  -- whose notice has not arrived. Its fence is the last one (nobody acquired
  -- since), and the lease restarts its ttl from now.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]))
end
local wttl = tonumber(ARGV[3])
if cur or redis.call('EXISTS', KEYS[3]) == 1 then
  -- taken, or others wait: queue up (FIFO); only the head may go on
  if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then
    redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
  end
  redis.call('PEXPIRE', KEYS[3], wttl * 4)
  redis.call('PEXPIRE', KEYS[4], wttl * 4)
  redis.call('SET', ARGV[4] .. ARGV[1], ARGV[5] or '1', 'PX', wttl)
  while true do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if head == ARGV[1] then break end
    if redis.call('EXISTS', ARGV[4] .. head) == 1 then return 0 end
    redis.call('ZREM', KEYS[3], head)
  end
  if cur then return 0 end
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('DEL', ARGV[4] .. ARGV[1])
end
-- free, and nobody waits ahead of us (the common case skips the queue entirely)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""
    + _NEXT_FENCE.replace("FENCE", "2")
    + """
return f
"""
)
# Hand a free lease (KEYS[1]) to the live head of queue KEYS[2]; dead heads
# (heartbeat ARGV[4]..token expired) are dropped on the way. Run by a release
# and by a withdrawn waiter, with ARGV[2] the channel and ARGV[3] the lock name.
#
# A head whose heartbeat is ``<ttl ms>:<since us>:<id>`` is granted the lease
# here: lease = its token, PX = min(its ttl, what is left of its heartbeat), a
# new fence (KEYS[3]); it leaves the queue, and the notice
# ``<name>\n<head>\n<fence>\n<heartbeat>`` on its process's own channel
# (ARGV[2]..':'..id, so no other process wakes up) spares it an acquire round
# trip. The PX bound keeps a dead or paused head from blocking the lock longer
# than its heartbeat did before grants existed. ``since`` is when the head's
# process started the attempt that wrote that heartbeat, before this script
# ran, so the lease lasts at least until since + min(ttl, waiter ttl) on the
# head's own clock however late the notice comes (see RedisLocks._granted).
# Any other live head (an older client's heartbeat '1') is named only,
# ``<name>\n<head>``, and tries itself.
GRANT_HEAD = (
    """
while true do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not head then break end
  local hb = ARGV[4] .. head
  local v = redis.call('GET', hb)
  if v then
    local ttl, id = string.match(v, '^(%d+):%d+:(%w+)$')
    ttl = tonumber(ttl)
    local left = redis.call('PTTL', hb)
    if ttl and ttl > 0 and left > 0 then
      if left < ttl then ttl = left end
      redis.call('SET', KEYS[1], head, 'PX', ttl)
      redis.call('ZREM', KEYS[2], head)
      redis.call('DEL', hb)
"""
    + _NEXT_FENCE.replace("FENCE", "3")
    + """
      redis.call('PUBLISH', ARGV[2] .. ':' .. id,
        ARGV[3] .. '\\n' .. head .. '\\n' .. string.format('%d', f) .. '\\n' .. v)
    else
      redis.call('PUBLISH', ARGV[2], ARGV[3] .. '\\n' .. head)
    end
    break
  end
  redis.call('ZREM', KEYS[2], head)
end
"""
)
# KEYS: lease, queue, fence
RELEASE = (
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
"""
    + GRANT_HEAD
    + """
  return 1
end
return 0
"""
)
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# A withdrawn waiter (cancelled, timed out, stopped) leaves the queue. A lease
# granted to it meanwhile (its notice unheard or ignored) is given back: it is
# nobody's, and would otherwise block the lock until its PX ran out.
DEQUEUE = (
    """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', ARGV[4] .. ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('DEL', KEYS[1])
  cur = false
end
if not cur then
"""
    + GRANT_HEAD
    + """
end
return 1
"""
)
