"""The Lua scripts of the seed table (sources only; ``germinator_dist.table`` registers them).

Every script checks everything it reads *before* its first write (Redis does not roll a script back), so
a script that fails leaves the table unchanged. Errors are raised as ``{err = "<CODE> message"}`` with
CODE one of GERM_TABLE (malformed content / refused), GERM_SPEC (bad argument), GERM_NOJOB, GERM_EXISTS,
GERM_STATE (illegal state transition or write to a finished job); ``table.py`` maps them to exceptions.
"""

from __future__ import annotations

from ..records import N_SEEDS
from .codec import FORMAT, TRANSITIONS, WRITABLE_STATES

RECENT_TOKENS = 16  # accepted-commit tokens remembered per layer, so a retried commit is answered once
TOKEN_LEN = 16


def _lua_set(names) -> str:
    return "{" + ", ".join(f"{n} = true" for n in names) + "}"


_SUBS = {
    "@FORMAT@": FORMAT,
    "@N_SEEDS@": str(N_SEEDS),
    "@SEEDS_PAT@": "^%[" + "%d+," * (N_SEEDS - 1) + "%d+%]$",
    "@RECENT@": str(RECENT_TOKENS * TOKEN_LEN),
    "@WRITABLE@": _lua_set(s.value for s in WRITABLE_STATES),
    "@TRANSITIONS@": "{"
    + ", ".join(f"{a.value} = {_lua_set(b.value for b in bs)}" for a, bs in TRANSITIONS.items())
    + "}",
}


def lua_script(body: str) -> str:
    """PRELUDE + body, with the @NAME@ placeholders filled in (Lua's own % patterns stay untouched)."""
    src = PRELUDE + body
    for name, value in _SUBS.items():
        src = src.replace(name, value)
    return src


PRELUDE = r"""
local function fail(code, msg) error({err = code .. ' ' .. msg}) end
local function show(v)
  if v == false or v == nil then return '(missing)' end
  local cut = #v > 80
  local function hex(c) return string.format('\\x%02x', string.byte(c)) end
  v = string.gsub(string.sub(v, 1, 80), '[^ !#-&(-~]', hex)  -- quotes and non-printables as \\xNN
  if cut then v = v .. '...' end
  return "'" .. v .. "'"
end
local function bad(key, field, v, why)
  fail('GERM_TABLE', 'malformed seed table entry ' .. key .. ' field ' .. field .. ': ' .. show(v)
       .. ' (' .. why .. ')')
end
local function ktype(key) return redis.call('TYPE', key)['ok'] end
local function want_type(key, t, may_be_missing)
  local got = ktype(key)
  if got == t or (may_be_missing and got == 'none') then return got end
  if got == 'none' then fail('GERM_TABLE', 'seed table key ' .. key .. ' is missing') end
  fail('GERM_TABLE', 'seed table key ' .. key .. ' holds a ' .. got .. ', expected a ' .. t)
end
-- HMGET that names the key when it holds another type (no TYPE call on the happy path).
local function hmget(key, ...)
  local r = redis.pcall('HMGET', key, ...)
  if r['err'] then want_type(key, 'hash') end
  return r
end
-- HMGET of a row that must exist.
local function row_fields(key, ...)
  local r = hmget(key, ...)
  if not r[1] and ktype(key) == 'none' then fail('GERM_TABLE', 'seed table key ' .. key .. ' is missing') end
  return r
end
local function uint(key, field, v)
  if type(v) ~= 'string' or not string.match(v, '^%d+$') or #v > 15 then
    bad(key, field, v, 'expected a non-negative integer')
  end
  return tonumber(v)
end
local function loss(key, field, v)
  if v == 'inf' then return math.huge end
  if type(v) ~= 'string'
     or not (string.match(v, '^%-?%d+%.?%d*$') or string.match(v, '^%-?%d+%.?%d*[eE][-+]?%d+$')) then
    bad(key, field, v, 'expected a float')
  end
  local x = tonumber(v)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then
    bad(key, field, v, 'expected a finite float')
  end
  return x
end
local function fmt(n) return string.format('%.0f', n) end
local function now()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return t[1] .. '.' .. string.format('%06d', usec), sec * 1000 + math.floor(usec / 1000)
end
local STATES = {PENDING = true, RUNNING = true, SUCCEEDED = true, FAILED = true, CANCELLED = true}
-- The job's meta hash, checked field by field. nojob_ok: return nil instead of failing when absent.
local function load_meta(key, nojob_ok)
  local f = hmget(key, 'format', 'state', 'n_layers', 'seed_bits', 'epoch', 'desired_workers')
  if not f[1] and ktype(key) == 'none' then
    if nojob_ok then return nil end
    fail('GERM_NOJOB', 'no job with meta key ' .. key)
  end
  if f[1] ~= '@FORMAT@' then bad(key, 'format', f[1], 'expected schema format @FORMAT@') end
  if not STATES[f[2]] then bad(key, 'state', f[2], 'expected a job state') end
  local m = {state = f[2], n_layers = uint(key, 'n_layers', f[3]), seed_bits = uint(key, 'seed_bits', f[4]),
             epoch = uint(key, 'epoch', f[5]), desired_workers = uint(key, 'desired_workers', f[6])}
  if m.seed_bits < 1 or m.seed_bits > 63 then bad(key, 'seed_bits', f[4], 'expected 1..63') end
  return m
end
local function check_seeds(key, v)
  if type(v) ~= 'string' or not string.match(v, '@SEEDS_PAT@') then
    bad(key, 'seeds', v, 'expected a JSON list of @N_SEEDS@ seeds')
  end
end
local function check_floats(key, v)
  if type(v) ~= 'string' or #v % 4 ~= 0 then bad(key, 'floats', v, 'expected float32 bytes') end
end
"""

# KEYS: meta, layer, events.  ARGV: layer, expected_version, seeds_json ('' for a float publish), floats,
# loss, writer, seed_width, token, kind ('seeds' | 'floats'), require_lower ('1' | '0').
# Returns {code, version, epoch}: code 1 accepted, 2 stale, 3 not better, 4 accepted earlier (a retry).
# The stream entry is written first: it is the only write that can fail (a wrong-typed key, OOM), so a
# failure leaves nothing half-done. Its id (the server's clock, ms) is the commit's time.
COMMIT = lua_script(r"""
local meta = load_meta(KEYS[1])
if not (@WRITABLE@)[meta.state] then
  fail('GERM_STATE', 'job ' .. KEYS[1] .. ' is ' .. meta.state
       .. '; the table only accepts writes while PENDING or RUNNING')
end
if tonumber(ARGV[1]) >= meta.n_layers then
  fail('GERM_SPEC', 'layer: ' .. ARGV[1] .. ' is out of range; the job has ' .. meta.n_layers .. ' layers')
end
if tonumber(ARGV[7]) > meta.seed_bits then
  fail('GERM_SPEC', 'seeds: a seed needs ' .. ARGV[7] .. ' bits, the job has seed_bits=' .. meta.seed_bits)
end
local row = row_fields(KEYS[2], 'version', 'loss', 'floats', 'seeds', 'recent')
local version = uint(KEYS[2], 'version', row[1])
local cur = loss(KEYS[2], 'loss', row[2])
check_floats(KEYS[2], row[3])
check_seeds(KEYS[2], row[4])
if #ARGV[4] ~= #row[3] then
  fail('GERM_SPEC', 'floats: got ' .. (#ARGV[4] / 4) .. ' values, layer ' .. ARGV[1] .. ' has '
       .. (#row[3] / 4))
end
if version ~= tonumber(ARGV[2]) then
  if row[5] and string.find(row[5], ARGV[8], 1, true) then return {4, version, meta.epoch} end
  return {2, version, meta.epoch}
end
if (ARGV[9] == 'seeds' or ARGV[10] == '1') and not (tonumber(ARGV[5]) < cur) then
  return {3, version, meta.epoch}
end
version = version + 1
local epoch = meta.epoch + 1
local id
if ARGV[9] == 'seeds' then
  id = redis.pcall('XADD', KEYS[3], '*', 'kind', 'seeds', 'layer', ARGV[1], 'version', fmt(version),
                   'epoch', fmt(epoch), 'seeds', ARGV[3], 'floats', ARGV[4], 'loss', ARGV[5],
                   'writer', ARGV[6])
else
  id = redis.pcall('XADD', KEYS[3], '*', 'kind', 'floats', 'layer', ARGV[1], 'version', fmt(version),
                   'epoch', fmt(epoch), 'floats', ARGV[4], 'loss', ARGV[5], 'writer', ARGV[6])
end
if type(id) == 'table' then
  want_type(KEYS[3], 'stream', true)
  fail('GERM_TABLE', 'cannot append to ' .. KEYS[3] .. ': ' .. tostring(id['err']))
end
local ms = string.match(id, '^%d+')
local t = string.sub(ms, 1, -4) .. '.' .. string.sub(ms, -3)
local recent = string.sub((row[5] or '') .. ARGV[8], -@RECENT@)
if ARGV[9] == 'seeds' then
  redis.call('HSET', KEYS[2], 'seeds', ARGV[3], 'floats', ARGV[4], 'loss', ARGV[5], 'version', fmt(version),
             'writer', ARGV[6], 'time', t, 'recent', recent)
else
  redis.call('HSET', KEYS[2], 'floats', ARGV[4], 'loss', ARGV[5], 'version', fmt(version),
             'writer', ARGV[6], 'time', t, 'recent', recent)
end
redis.call('HSET', KEYS[1], 'epoch', fmt(epoch))
return {1, version, epoch}
""")

# KEYS: meta, events, batch-result key.  ARGV: n, then per commit: layer, expected_version, seeds_json,
# floats, loss, writer, seed_width.  Runs n seed commits in order, all in one atomic step, and returns
# {code, version} per commit then the epoch (codes as COMMIT). Every row the batch touches is read and
# checked before anything is written; rows are written once at the end. The reply is kept for 10 minutes
# under the batch key, so a batch retried after a lost reply is answered, not applied twice.
COMMIT_MANY = lua_script(r"""
local done = redis.pcall('GET', KEYS[3])
if type(done) == 'string' then
  local ok, v = pcall(cjson.decode, done)
  if ok and type(v) == 'table' then return v end
end
local meta = load_meta(KEYS[1])
if not (@WRITABLE@)[meta.state] then
  fail('GERM_STATE', 'job ' .. KEYS[1] .. ' is ' .. meta.state
       .. '; the table only accepts writes while PENDING or RUNNING')
end
want_type(KEYS[2], 'stream', true)
local n = tonumber(ARGV[1])
local prefix = string.sub(KEYS[1], 1, -5)
local rows = {}
for i = 0, n - 1 do
  local b = 2 + i * 7
  local layer = tonumber(ARGV[b])
  if layer >= meta.n_layers then
    fail('GERM_SPEC', 'commits[' .. i .. '].layer: ' .. ARGV[b] .. ' is out of range; the job has '
         .. meta.n_layers .. ' layers')
  end
  if tonumber(ARGV[b + 6]) > meta.seed_bits then
    fail('GERM_SPEC', 'commits[' .. i .. '].seeds: a seed needs ' .. ARGV[b + 6]
         .. ' bits, the job has seed_bits=' .. meta.seed_bits)
  end
  local r = rows[layer]
  if r == nil then
    local key = prefix .. 'layer:' .. ARGV[b]
    local f = row_fields(key, 'version', 'loss', 'floats', 'seeds')
    check_floats(key, f[3])
    check_seeds(key, f[4])
    r = {key = key, version = uint(key, 'version', f[1]), loss = loss(key, 'loss', f[2]), nbytes = #f[3]}
    rows[layer] = r
  end
  if #ARGV[b + 3] ~= r.nbytes then
    fail('GERM_SPEC', 'commits[' .. i .. '].floats: got ' .. (#ARGV[b + 3] / 4) .. ' values, layer '
         .. ARGV[b] .. ' has ' .. (r.nbytes / 4))
  end
end
local out = {}
local epoch = meta.epoch
for i = 0, n - 1 do
  local b = 2 + i * 7
  local r = rows[tonumber(ARGV[b])]
  local code = 1
  if r.version ~= tonumber(ARGV[b + 1]) then
    code = 2
  elseif not (tonumber(ARGV[b + 4]) < r.loss) then
    code = 3
  else
    r.version = r.version + 1
    epoch = epoch + 1
    -- only the first write can be refused (OOM): nothing has been written then
    local id = redis.pcall('XADD', KEYS[2], '*', 'kind', 'seeds', 'layer', ARGV[b],
                           'version', fmt(r.version), 'epoch', fmt(epoch), 'seeds', ARGV[b + 2],
                           'floats', ARGV[b + 3], 'loss', ARGV[b + 4], 'writer', ARGV[b + 5])
    if type(id) == 'table' then
      fail('GERM_TABLE', 'cannot append to ' .. KEYS[2] .. ': ' .. tostring(id['err']))
    end
    r.loss, r.at, r.id = tonumber(ARGV[b + 4]), b, id
  end
  out[#out + 1] = code
  out[#out + 1] = r.version
end
for _, r in pairs(rows) do
  if r.at then
    local b, ms = r.at, string.match(r.id, '^%d+')
    redis.call('HSET', r.key, 'seeds', ARGV[b + 2], 'floats', ARGV[b + 3], 'loss', ARGV[b + 4],
               'version', fmt(r.version), 'writer', ARGV[b + 5],
               'time', string.sub(ms, 1, -4) .. '.' .. string.sub(ms, -3))
  end
end
if epoch ~= meta.epoch then redis.call('HSET', KEYS[1], 'epoch', fmt(epoch)) end
out[#out + 1] = epoch
redis.call('SET', KEYS[3], cjson.encode(out), 'EX', 600)
return out
""")

# KEYS: meta.  ARGV: prefix, with_spec ('1' | '0').
# Returns {state, epoch, n_layers, seed_bits, desired_workers, created, spec|false, {key, seeds, floats, loss,
# version, writer, time} per layer}. Row fields are decoded (strictly) by the caller.
SNAPSHOT = lua_script(r"""
local meta = load_meta(KEYS[1])
local extra = redis.call('HMGET', KEYS[1], 'created', 'spec')
local out = {meta.state, fmt(meta.epoch), fmt(meta.n_layers), fmt(meta.seed_bits), fmt(meta.desired_workers),
             extra[1], false}
if ARGV[2] == '1' then out[7] = extra[2] end
for i = 0, meta.n_layers - 1 do
  local key = ARGV[1] .. 'layer:' .. i
  local r = row_fields(key, 'seeds', 'floats', 'loss', 'version', 'writer', 'time')
  out[#out + 1] = {key, r[1], r[2], r[3], r[4], r[5], r[6]}
end
return out
""")

# KEYS: meta, events, registry.  ARGV: job, prefix, mode ('create' | 'import' | 'replace'), spec, n_layers,
# seed_bits, desired_workers, state, epoch, then per layer: seeds, floats, loss, version, writer, time ('' =
# now).  The caller has validated every value. Returns the epoch.
CREATE = lua_script(r"""
local old = load_meta(KEYS[1], true)
if old ~= nil and ARGV[3] ~= 'replace' then return -1 end
local t = now()
local n = tonumber(ARGV[5])
local stale = {KEYS[2], ARGV[2] .. 'progress', ARGV[2] .. 'docs'}
for _, role in ipairs({'worker', 'driver', 'trainer'}) do
  stale[#stale + 1] = ARGV[2] .. 'hb:' .. role
  stale[#stale + 1] = ARGV[2] .. 'hbdata:' .. role
end
local n_old = 0
if old ~= nil then n_old = old.n_layers end
for i = 0, math.max(n, n_old) - 1 do stale[#stale + 1] = ARGV[2] .. 'layer:' .. i end
redis.call('DEL', KEYS[1], unpack(stale))
local kind = 'init'
if ARGV[3] ~= 'create' then kind = 'import' end
for i = 0, n - 1 do
  local b = 10 + i * 6
  local time = ARGV[b + 5]
  if time == '' then time = t end
  redis.call('HSET', ARGV[2] .. 'layer:' .. i, 'seeds', ARGV[b], 'floats', ARGV[b + 1], 'loss', ARGV[b + 2],
             'version', ARGV[b + 3], 'writer', ARGV[b + 4], 'time', time, 'recent', '')
  redis.call('XADD', KEYS[2], '*', 'kind', kind, 'layer', fmt(i), 'version', ARGV[b + 3], 'epoch', ARGV[9],
             'seeds', ARGV[b], 'floats', ARGV[b + 1], 'loss', ARGV[b + 2], 'writer', ARGV[b + 4],
             'time', time)
end
redis.call('HSET', KEYS[1], 'format', '@FORMAT@', 'spec', ARGV[4], 'n_layers', ARGV[5], 'seed_bits', ARGV[6],
           'desired_workers', ARGV[7], 'state', ARGV[8], 'epoch', ARGV[9], 'created', t)
redis.call('SADD', KEYS[3], ARGV[1])
return tonumber(ARGV[9])
""")

# KEYS: meta, events.  ARGV: prefix, last stream id seen ('' if the stream was empty), epoch, then per layer:
# seeds, floats, loss, version, writer, time.  Rewrites every layer row (a repair from the stream).
REPAIR = lua_script(r"""
local meta = load_meta(KEYS[1])
want_type(KEYS[2], 'stream', true)
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last_id = ''
if #last > 0 then last_id = last[1][1] end
if last_id ~= ARGV[2] then
  fail('GERM_TABLE', 'stream ' .. KEYS[2] .. ' changed during the repair; try again')
end
local n = (#ARGV - 3) / 6
if n ~= meta.n_layers then
  fail('GERM_TABLE', 'stream has ' .. n .. ' layers, meta says ' .. meta.n_layers)
end
for i = 0, n - 1 do
  local b = 4 + i * 6
  local key = ARGV[1] .. 'layer:' .. i
  redis.call('DEL', key)
  redis.call('HSET', key, 'seeds', ARGV[b], 'floats', ARGV[b + 1], 'loss', ARGV[b + 2],
             'version', ARGV[b + 3], 'writer', ARGV[b + 4], 'time', ARGV[b + 5], 'recent', '')
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[3])
return n
""")

# KEYS: meta, layer.  ARGV: layer.  Returns {seed_bits, seeds, floats, loss, version, writer, time}.
ENTRY = lua_script(r"""
local meta = load_meta(KEYS[1])
if tonumber(ARGV[1]) >= meta.n_layers then
  fail('GERM_SPEC', 'layer: ' .. ARGV[1] .. ' is out of range; the job has ' .. meta.n_layers .. ' layers')
end
local r = row_fields(KEYS[2], 'seeds', 'floats', 'loss', 'version', 'writer', 'time')
return {fmt(meta.seed_bits), r[1], r[2], r[3], r[4], r[5], r[6]}
""")
