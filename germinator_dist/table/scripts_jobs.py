"""The Lua scripts of the job registry (jobs, states, heartbeats, progress, documents): sources only.

Same rules as ``table.scripts``: each checks what it reads before its first write and fails with a
``GERM_*`` code; ``table_scripts.PRELUDE`` supplies the helpers.
"""

from __future__ import annotations

from .scripts import lua_script

# KEYS: meta, events, progress, registry.  ARGV: job, prefix, then optionally owner and unheld ('1': also
# when nobody holds the lease).  With an owner the job is deleted only while its driver lease is that
# owner's (or unheld, when allowed); otherwise nothing changes and -1 is returned.  Returns 1 if a job was
# there, else 0.
DELETE = lua_script(r"""
if ARGV[3] and ARGV[3] ~= '' then
  want_type(ARGV[2] .. 'lease', 'hash', true)
  local holder = redis.call('HGET', ARGV[2] .. 'lease', 'owner')
  if holder ~= ARGV[3] and not (not holder and ARGV[4] == '1') then return -1 end
end
local t = ktype(KEYS[1])
local n = 0
if t == 'hash' then
  local v = redis.call('HGET', KEYS[1], 'n_layers')
  if v and string.match(v, '^%d+$') and #v < 7 then n = tonumber(v) end
end
local keys = {KEYS[1], KEYS[2], KEYS[3], ARGV[2] .. 'docs', ARGV[2] .. 'lease'}
for _, role in ipairs({'worker', 'driver', 'trainer'}) do
  keys[#keys + 1] = ARGV[2] .. 'hb:' .. role
  keys[#keys + 1] = ARGV[2] .. 'hbdata:' .. role
end
for i = 0, n - 1 do keys[#keys + 1] = ARGV[2] .. 'layer:' .. i end
redis.call('DEL', unpack(keys))
redis.call('SREM', KEYS[4], ARGV[1])
if t == 'none' then return 0 end
return 1
""")

# KEYS: meta, events, lease.  ARGV: prefix, owner, spec, n_layers, then per layer: seeds (packed), gens
# (packed), floats, loss, version, writer (the CREATE script's rows, without their time).  The job's initial
# rows, written once by the holder of its driver lease (the runner, after it measured them): the rows, their
# ``init`` stream entries and the spec with the dimensions the data determined, together.  Returns the
# number of layers written, or -1 when the job has rows already (nothing changed).
INIT_ROWS = lua_script(r"""
local meta = load_meta(KEYS[1])
want_type(KEYS[3], 'hash', true)
local holder = redis.call('HGET', KEYS[3], 'owner')
if holder ~= ARGV[2] then
  fail('GERM_STATE', 'job ' .. KEYS[1] .. ': the initial rows are written by the driver lease holder; '
       .. show(ARGV[2]) .. ' does not hold it (holder ' .. show(holder) .. ')')
end
if meta.n_layers > 0 then return -1 end
if not (@WRITABLE@)[meta.state] then
  fail('GERM_STATE', 'job ' .. KEYS[1] .. ' is ' .. meta.state .. '; its initial rows were not written')
end
want_type(KEYS[2], 'stream', true)
local n = tonumber(ARGV[4])
if not n or n < 1 or #ARGV ~= 4 + 6 * n then
  fail('GERM_SPEC', 'init_rows: ' .. #ARGV .. ' arguments for ' .. tostring(ARGV[4]) .. ' layers')
end
local t = now()
for i = 0, n - 1 do
  local b = 5 + i * 6
  local key = ARGV[1] .. 'layer:' .. i
  redis.call('DEL', key)
  redis.call('HSET', key, 'format', FORMAT, 'seeds', ARGV[b], 'gens', ARGV[b + 1], 'floats', ARGV[b + 2],
             'loss', ARGV[b + 3], 'version', ARGV[b + 4], 'writer', ARGV[b + 5], 'time', t, 'recent', '')
  redis.call('XADD', KEYS[2], '*', 'format', FORMAT, 'kind', 'init', 'layer', fmt(i), 'version', ARGV[b + 4],
             'epoch', fmt(meta.epoch), 'seeds', ARGV[b], 'gens', ARGV[b + 1], 'floats', ARGV[b + 2],
             'loss', ARGV[b + 3], 'writer', ARGV[b + 5], 'time', t)
end
redis.call('HSET', KEYS[1], 'spec', ARGV[3], 'n_layers', ARGV[4])
return n
""")

# KEYS: meta.  ARGV: new state, expected current state ('' = any).  Returns the previous state.
SET_STATE = lua_script(r"""
local meta = load_meta(KEYS[1])
local cur = meta.state
if ARGV[2] ~= '' and cur ~= ARGV[2] then
  fail('GERM_STATE', 'job ' .. KEYS[1] .. ' is ' .. cur .. ', expected ' .. ARGV[2])
end
if cur == ARGV[1] then return cur end
if not (@TRANSITIONS@)[cur][ARGV[1]] then
  fail('GERM_STATE', 'job ' .. KEYS[1] .. ': illegal state transition ' .. cur .. ' -> ' .. ARGV[1])
end
local t = now()
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'state_time', t)
return cur
""")

# KEYS: meta.  ARGV: desired worker count, job id (given: only while the job is PENDING or RUNNING).
SET_DESIRED = lua_script(r"""
local meta = load_meta(KEYS[1])
if ARGV[2] and not (@WRITABLE@)[meta.state] then
  fail('GERM_STATE', 'job ' .. ARGV[2] .. ' is ' .. meta.state
       .. '; only a PENDING or RUNNING job can be scaled')
end
redis.call('HSET', KEYS[1], 'desired_workers', ARGV[1])
return 1
""")

# KEYS: meta, progress.  ARGV: n counters, then counter/delta pairs, then gauge/value pairs.
PROGRESS = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local f = ARGV[2 + 2 * i]
  local cur = redis.call('HGET', KEYS[2], f)
  if cur then uint(KEYS[2], f, cur) end
end
for i = 0, n - 1 do redis.call('HINCRBY', KEYS[2], ARGV[2 + 2 * i], ARGV[3 + 2 * i]) end
local t = now()
local args = {'updated', t}
for i = 2 + 2 * n, #ARGV, 2 do args[#args + 1] = ARGV[i]; args[#args + 1] = ARGV[i + 1] end
redis.call('HSET', KEYS[2], unpack(args))
return 1
""")

# KEYS: meta, hb zset, hbdata hash.  ARGV: id, ttl_ms, payload.  Expired members are dropped on the way.
HEARTBEAT = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'zset', true)
want_type(KEYS[3], 'hash', true)
local _, ms = now()
redis.call('ZADD', KEYS[2], fmt(ms + tonumber(ARGV[2])), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. fmt(ms), 'LIMIT', 0, 256)
if #dead > 0 then
  redis.call('ZREM', KEYS[2], unpack(dead))
  redis.call('HDEL', KEYS[3], unpack(dead))
end
return fmt(ms)
""")

# KEYS: meta, hb zset, hbdata hash.  Returns {now_ms, {id, expiry_ms, payload}...} of the live members.
LIVE = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'zset', true)
want_type(KEYS[3], 'hash', true)
local _, ms = now()
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. fmt(ms), '+inf', 'WITHSCORES')
local out = {fmt(ms)}
for i = 1, #live, 2 do
  out[#out + 1] = {live[i], live[i + 1], redis.call('HGET', KEYS[3], live[i])}
end
return out
""")

# KEYS: registry.  ARGV: 'each' (optional: a job that cannot be read becomes {job, '!', error} instead of
# failing the whole listing).  Returns {job, state, n_layers, seed_bits, epoch, desired, created}...
LIST_JOBS = lua_script(r"""
want_type(KEYS[1], 'set', true)
local function row(job)
  local key = 'germ:{' .. job .. '}:meta'
  if not string.match(job, '^[A-Za-z0-9][A-Za-z0-9_.-]*$') or #job > 64 then
    fail('GERM_TABLE', 'registry ' .. KEYS[1] .. ' holds an invalid job id ' .. show(job))
  end
  if ktype(key) == 'none' then
    fail('GERM_TABLE', 'registry ' .. KEYS[1] .. ' lists job ' .. job .. ' but ' .. key
         .. ' is missing (delete_job cleans up)')
  end
  local m = load_meta(key)
  local created = redis.call('HGET', key, 'created')
  return {job, m.state, fmt(m.n_layers), fmt(m.seed_bits), fmt(m.epoch), fmt(m.desired_workers), created}
end
local out = {}
for _, job in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if ARGV[1] == 'each' then
    local ok, res = pcall(row, job)
    if ok then out[#out + 1] = res
    else
      local msg = res
      if type(res) == 'table' then msg = res.err or res.error or 'unreadable' end
      out[#out + 1] = {job, '!', tostring(msg)}
    end
  else
    out[#out + 1] = row(job)
  end
end
return out
""")

# KEYS: meta.  ARGV: with_spec ('1' | '0').
# Returns {state, n_layers, seed_bits, epoch, desired_workers, created, spec | false}.
INFO = lua_script(r"""
local m = load_meta(KEYS[1])
local extra = redis.call('HMGET', KEYS[1], 'created', 'spec')
if ARGV[1] ~= '1' then extra[2] = false end
return {m.state, fmt(m.n_layers), fmt(m.seed_bits), fmt(m.epoch), fmt(m.desired_workers), extra[1], extra[2]}
""")

# KEYS: meta, progress.  Returns the progress hash as a flat field/value list.
READ_PROGRESS = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
return redis.call('HGETALL', KEYS[2])
""")

# KEYS: meta, docs.  ARGV: name, JSON text.
PUT_DOC = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
""")

# KEYS: meta, docs.  ARGV: name.  Returns the text or nil.
GET_DOC = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
return redis.call('HGET', KEYS[2], ARGV[1])
""")

# --- the driver lease: at most one driver per job (docs/table.md, "The driver lease") -----------------------

# KEYS: meta, lease.  ARGV: owner, ttl_ms, take_from (a holder this claim may replace even before its lease
# expires: one Ray says has ended; '' = none), allowed states (space separated), state to move to ('' =
# keep; applied when it is a legal transition).  The lease is free when absent or expired.
# Returns {1, previous state} or, when another owner holds it, {0, owner, ms left, since}.
LEASE_CLAIM = lua_script(r"""
local meta = load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
local t, ms = now()
local cur = redis.call('HMGET', KEYS[2], 'owner', 'expires', 'since')
if cur[1] then
  local exp = uint(KEYS[2], 'expires', cur[2])
  if cur[1] ~= ARGV[1] and cur[1] ~= ARGV[3] and exp > ms then
    return {0, cur[1], fmt(exp - ms), cur[3] or ''}
  end
end
if not string.find(' ' .. ARGV[4] .. ' ', ' ' .. meta.state .. ' ', 1, true) then
  fail('GERM_STATE', 'job ' .. KEYS[1] .. ' is ' .. meta.state .. '; a driver may claim it only while '
       .. ARGV[4])
end
local to = ARGV[5]
if to ~= '' and to ~= meta.state and (@TRANSITIONS@)[meta.state][to] then
  redis.call('HSET', KEYS[1], 'state', to, 'state_time', t)
end
local since = t
if cur[1] == ARGV[1] and cur[3] then since = cur[3] end
redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'expires', fmt(ms + tonumber(ARGV[2])), 'since', since)
return {1, meta.state}
""")

# KEYS: meta, lease.  ARGV: owner, ttl_ms.  Returns 1 (renewed) or 0 (another owner holds it, or none).
LEASE_RENEW = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then return 0 end
local _, ms = now()
redis.call('HSET', KEYS[2], 'expires', fmt(ms + tonumber(ARGV[2])))
return 1
""")

# KEYS: meta, lease.  ARGV: owner, final state ('' = none; set only while RUNNING).  The owner's last
# word: the final state and the release happen together, so a driver that lost its lease cannot end a job
# another driver runs.  Returns 1 (released) or 0 (the lease is not the owner's; nothing changed).
LEASE_RELEASE = lua_script(r"""
local meta = load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and meta.state == 'RUNNING' and ARGV[2] ~= 'RUNNING' then
  local t = now()
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_time', t)
end
redis.call('DEL', KEYS[2])
return 1
""")

# KEYS: meta, lease.  Returns {now_ms, owner, expires_ms, since} or {now_ms} when nobody holds it.
LEASE_READ = lua_script(r"""
load_meta(KEYS[1])
want_type(KEYS[2], 'hash', true)
local _, ms = now()
local cur = redis.call('HMGET', KEYS[2], 'owner', 'expires', 'since')
if not cur[1] then return {fmt(ms)} end
return {fmt(ms), cur[1], cur[2] or '', cur[3] or ''}
""")
