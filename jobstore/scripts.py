"""The job store's Lua scripts: each lifecycle step runs as one script, atomically in Redis.

The key layout is `jobstore.records.Keys`; scripts build per-tenant keys from the prefix and the
tenant stored in the record (a single Redis server, or an ACL user limited to the prefix).
"""

from __future__ import annotations

# KEYS: 1 idempotency key, 2 tenant active set, 3 tenant jobs (zset), 4 sequence counter, 5 job hash,
# 6 status:queued set, 7 tenant waiting (zset), 8 waiting tenants (set).
# ARGV: 1 job id, 2 request fingerprint, 3 idempotency ttl, 4 max active, 5 max stored, 6 tenant,
# 7 '1' when an idempotency key was given, 8 key prefix, then field/value pairs of the record.
# Returns {'created', id} | {'existing', id} | {'conflict', id} | {'quota', ''} | {'stored', ''}.
CREATE = """
if ARGV[7] == '1' then
  local prev = redis.call('GET', KEYS[1])
  if prev then
    local sp = string.find(prev, ' ', 1, true)
    local pid = string.sub(prev, 1, sp - 1)
    if redis.call('EXISTS', ARGV[8] .. 'job:' .. pid) == 1 then
      if string.sub(prev, sp + 1) ~= ARGV[2] then return {'conflict', pid} end
      return {'existing', pid}
    end
  end
end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'quota', ''} end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, 9)) do
  if redis.call('EXISTS', ARGV[8] .. 'job:' .. id) == 0 then redis.call('ZREM', KEYS[3], id) end
end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {'stored', ''} end
local seq = redis.call('INCR', KEYS[4])
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[5], 'sequence', seq)
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[7], seq, ARGV[1])
redis.call('SADD', KEYS[8], ARGV[6])
if ARGV[7] == '1' then redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', tonumber(ARGV[3])) end
return {'created', ARGV[1]}
"""

# KEYS[1] job hash. ARGV: 1 key prefix, 2 required execution ('*': any), 3 statuses the change may
# start from (comma-separated), 4 new status ('' keeps it), 5 retain-until (epoch seconds) and
# 6 expiry safety net (seconds) for a finished job, then field/value pairs; a field written
# '+name' is incremented by its value. Returns {1, status} done, {0, status} refused, {-1} no job.
# A status change moves the job between the status sets and its tenant's scheduling sets:
# queued = waiting for fair dispatch (again, ahead of the tenant's newer jobs), running = holds one of
# the tenant's dispatched places, finished = neither, and due for retention.
# A unit (a record with a `parent`) lives in the unit-status sets, never in its tenant's active set
# (the job quota) or the retention index (it goes with its parent); each of its changes also bumps
# its parent's rev, the ETag pollers of the job watch.
TRANSITION = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'execution', 'tenant', 'id', 'sequence', 'parent')
if not cur[1] then return {-1} end
local unit = cur[6] and cur[6] ~= ''
if unit then redis.call('HINCRBY', ARGV[1] .. 'job:' .. cur[6], 'rev', 1) end
if ARGV[2] ~= '*' and cur[2] ~= ARGV[2] then return {0, cur[1]} end
if not string.find(',' .. ARGV[3] .. ',', ',' .. cur[1] .. ',', 1, true) then return {0, cur[1]} end
for i = 7, #ARGV, 2 do
  local field = ARGV[i]
  if string.sub(field, 1, 1) == '+' then
    redis.call('HINCRBY', KEYS[1], string.sub(field, 2), tonumber(ARGV[i + 1]))
  else
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
  end
end
redis.call('HINCRBY', KEYS[1], 'rev', 1)
local new = ARGV[4]
if new == '' or new == cur[1] then return {1, cur[1]} end
local p, t, id = ARGV[1], cur[3], cur[4]
local sets = unit and 'unit-status:' or 'status:'
redis.call('SMOVE', p .. sets .. cur[1], p .. sets .. new, id)
redis.call('HSET', KEYS[1], 'status', new)
local active, waiting = p .. 'tenant:' .. t .. ':active', p .. 'tenant:' .. t .. ':waiting'
local dispatched = p .. 'tenant:' .. t .. ':dispatched'
if new == 'queued' then
  if not unit then redis.call('SADD', active, id) end
  redis.call('SREM', dispatched, id)
  redis.call('ZADD', waiting, tonumber(cur[5] or '0'), id)
  redis.call('SADD', p .. 'waiting-tenants', t)
elseif new == 'running' then
  if not unit then redis.call('SADD', active, id) end
  redis.call('ZREM', waiting, id)
  redis.call('SADD', dispatched, id)
else
  redis.call('SREM', active, id)
  redis.call('SREM', dispatched, id)
  redis.call('ZREM', waiting, id)
  if not unit then redis.call('ZADD', p .. 'retention', tonumber(ARGV[5]), id) end
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
end
return {1, new}
"""

# A queued job whose RQ delivery was lost (Redis lost it, or the dispatching process died between
# steps) waits for dispatch again. KEYS[1] job hash. ARGV[1] prefix. Returns 1 when it was re-queued.
REWAIT = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'tenant', 'id', 'sequence', 'cancel_requested', 'blocked')
if cur[1] ~= 'queued' or cur[5] == '1' or cur[6] == '1' then return 0 end
local p, t, id = ARGV[1], cur[2], cur[3]
redis.call('SREM', p .. 'tenant:' .. t .. ':dispatched', id)
redis.call('ZADD', p .. 'tenant:' .. t .. ':waiting', tonumber(cur[4] or '0'), id)
redis.call('SADD', p .. 'waiting-tenants', t)
return 1
"""

# Retention: delete one finished job's record and its tenant bookkeeping, if it is still finished.
# KEYS[1] job hash. ARGV[1] prefix. Returns 1 when deleted.
FORGET = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'tenant', 'id', 'parent')
local p = ARGV[1]
if cur[1] == 'queued' or cur[1] == 'running' then return 0 end
if cur[1] then
  redis.call('ZREM', p .. 'tenant:' .. cur[2] .. ':jobs', cur[3])
  local sets = (cur[4] and cur[4] ~= '') and 'unit-status:' or 'status:'
  redis.call('SREM', p .. sets .. cur[1], cur[3])
  redis.call('DEL', KEYS[1], KEYS[1] .. ':events', KEYS[1] .. ':execution')
end
return 1
"""

# A blocked unit whose units before it all succeeded joins its tenant's waiting line.
# KEYS[1] unit hash. ARGV[1] prefix. Returns 1 when it was unblocked.
UNBLOCK = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'tenant', 'id', 'sequence', 'blocked', 'parent')
if cur[1] ~= 'queued' or cur[5] ~= '1' then return 0 end
local p, t, id = ARGV[1], cur[2], cur[3]
redis.call('HSET', KEYS[1], 'blocked', '0')
redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('ZADD', p .. 'tenant:' .. t .. ':waiting', tonumber(cur[4] or '0'), id)
redis.call('SADD', p .. 'waiting-tenants', t)
if cur[6] and cur[6] ~= '' then redis.call('HINCRBY', p .. 'job:' .. cur[6], 'rev', 1) end
return 1
"""
