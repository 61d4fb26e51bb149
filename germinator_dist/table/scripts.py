"""The Lua scripts of the seed table: the shared prelude and the read / create / repair scripts (sources
only; ``germinator_dist.table`` registers them). The commit scripts are in ``table.scripts_commit``.

Every script checks everything it reads *before* its first write (Redis does not roll a script back), so
a script that fails leaves the table unchanged. Errors are raised as ``{err = "<CODE> message"}`` with
CODE one of GERM_TABLE (malformed content / refused), GERM_SPEC (bad argument), GERM_NOJOB, GERM_EXISTS,
GERM_STATE (illegal state transition or write to a finished job); ``table.conn`` maps them to exceptions.

Lua 5.1 numbers are doubles, so a 63-bit seed is never turned into a number here: seeds are compared and
spliced as byte strings (``string.sub``, concatenation). ``struct`` packs and unpacks only generations
(uint32) -- exact in a double. Floats are spliced as 4-byte substrings, never decoded.
"""

from __future__ import annotations

from ..records import MAX_RANK, N_LAYER_SEEDS
from .codec import FORMAT, TRANSITIONS, WRITABLE_STATES

RECENT_TOKENS = 16  # accepted-commit tokens remembered per layer, so a retried commit is answered once
TOKEN_LEN = 16


def _lua_set(names) -> str:
    return "{" + ", ".join(f"{n} = true" for n in names) + "}"


_SUBS = {
    "@FORMAT@": FORMAT,
    "@MAX_SLOTS@": str(MAX_RANK + N_LAYER_SEEDS),
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
local FORMAT = '@FORMAT@'
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
local function found_format(v)
  if not v then return 'found table format 1 (it has no format field), expected table format ' .. FORMAT end
  return 'found table format ' .. show(v) .. ', expected table format ' .. FORMAT
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
  if f[1] ~= FORMAT then bad(key, 'format', f[1], found_format(f[1])) end
  if not STATES[f[2]] then bad(key, 'state', f[2], 'expected a job state') end
  local m = {state = f[2], n_layers = uint(key, 'n_layers', f[3]), seed_bits = uint(key, 'seed_bits', f[4]),
             epoch = uint(key, 'epoch', f[5]), desired_workers = uint(key, 'desired_workers', f[6])}
  if m.seed_bits < 1 or m.seed_bits > 63 then bad(key, 'seed_bits', f[4], 'expected 1..63') end
  m.width = 8
  if m.seed_bits <= 8 then m.width = 1 elseif m.seed_bits <= 16 then m.width = 2
  elseif m.seed_bits <= 32 then m.width = 4 end
  return m
end
local function check_writable(meta, key)
  if not (@WRITABLE@)[meta.state] then
    fail('GERM_STATE', 'job ' .. key .. ' is ' .. meta.state
         .. '; the table only accepts writes while PENDING or RUNNING')
  end
end
-- A layer row, checked: format, gens (uint32 per slot), seeds (width bytes per slot), floats (float32,
-- 2 + rank * per), loss, version. Seeds stay byte strings; the loss is a number (loss_text as stored).
local function read_row(key, width)
  local f = row_fields(key, 'format', 'seeds', 'gens', 'floats', 'loss', 'version', 'recent', 'writer')
  if f[1] ~= FORMAT then bad(key, 'format', f[1], found_format(f[1])) end
  local seeds, gens, floats = f[2], f[3], f[4]
  if type(gens) ~= 'string' or #gens % 4 ~= 0 or #gens <= 16 or #gens > 4 * @MAX_SLOTS@ then
    bad(key, 'gens', gens, 'expected rank + 4 little-endian uint32 generations')
  end
  local n = #gens / 4
  local rank = n - 4
  if type(seeds) ~= 'string' or #seeds ~= n * width then
    bad(key, 'seeds', seeds, 'expected ' .. n .. ' little-endian seeds of ' .. width
        .. ' bytes, one per generation in gens')
  end
  local nf = 0
  if type(floats) == 'string' and #floats % 4 == 0 then nf = #floats / 4 end
  if nf < 2 + rank or (nf - 2) % rank ~= 0 then
    bad(key, 'floats', floats, 'expected float32 bytes: 2 + ' .. rank .. ' * (1 + experts) values')
  end
  return {key = key, seeds = seeds, gens = gens, floats = floats, loss = loss(key, 'loss', f[5]),
          loss_text = f[5], version = uint(key, 'version', f[6]), recent = f[7] or '', writer = f[8] or '',
          n = n, rank = rank, per = (nf - 2) / rank}
end
local function gen_at(gens, k) return (struct.unpack('<I4', gens, 4 * k + 1)) end
-- g + 1 (slot k of the row at key), refused at the uint32 maximum.
local function plus_one(key, k, g)
  if g >= 4294967295 then
    fail('GERM_TABLE', key .. ': the generation of slot ' .. k .. ' is at its maximum')
  end
  return g + 1
end
local function set_at(s, width, k, v)
  return string.sub(s, 1, k * width) .. v .. string.sub(s, (k + 1) * width + 1)
end
-- The component slot other than `except` that holds `seed` (width bytes), or nil.
local function holder(seeds, width, rank, seed, except)
  local at, limit = 1, rank * width
  while true do
    local i = string.find(seeds, seed, at, true)
    if i == nil or i > limit then return nil end
    if (i - 1) % width == 0 and (i - 1) / width ~= except then return (i - 1) / width end
    at = i + 1
  end
end
-- Slot k's floats (g[k], then e[j][i][k] for every expert row): indices 2 + j * rank + k, j = 0..per-1.
local function slot_floats(floats, rank, per, k)
  local out = {}
  for j = 0, per - 1 do
    local at = (2 + j * rank + k) * 4
    out[#out + 1] = string.sub(floats, at + 1, at + 4)
  end
  return table.concat(out)
end
local function splice_slot(floats, rank, per, k, sf)
  local parts, from = {}, 1
  for j = 0, per - 1 do
    local at = (2 + j * rank + k) * 4
    parts[#parts + 1] = string.sub(floats, from, at)
    parts[#parts + 1] = string.sub(sf, 4 * j + 1, 4 * j + 4)
    from = at + 5
  end
  parts[#parts + 1] = string.sub(floats, from)
  return table.concat(parts)
end
-- The n fixed-width fields of s as a Lua list, in one C call: 'cW' reads W bytes as a string, 'x' skips one.
local function fields(s, n, width, skip)
  local t = {struct.unpack(string.rep('c' .. width .. string.rep('x', skip or 0), n), s)}
  t[n + 1] = nil  -- struct.unpack also returns the next position
  return t
end
-- 8-byte little-endian wire seeds narrowed to the job's width (their high bytes are zero: checked bits).
local function narrow(wire, width)
  if width == 8 then return wire end
  return table.concat(fields(wire, #wire / 8, width, 8 - width))
end
-- The generations after a whole-vector commit: +1 for every slot whose seed differs.
local function bumped(r, seeds, width)
  local fmt_g = '<' .. string.rep('I4', r.n)
  local old, new = fields(r.seeds, r.n, width), fields(seeds, r.n, width)
  local g = {struct.unpack(fmt_g, r.gens)}
  for k = 1, r.n do
    if old[k] ~= new[k] then g[k] = plus_one(r.key, k - 1, g[k]) end
  end
  return struct.pack(fmt_g, unpack(g, 1, r.n))
end
-- XADD with the format field. It is each script's first write: a refused append (a wrong-typed key, OOM)
-- leaves nothing half-done.
local function append(stream, ...)
  local id = redis.pcall('XADD', stream, '*', 'format', FORMAT, ...)
  if type(id) == 'table' then
    want_type(stream, 'stream', true)
    fail('GERM_TABLE', 'cannot append to ' .. stream .. ': ' .. tostring(id['err']))
  end
  return id
end
-- A commit's time: its stream entry id's clock (server ms) as seconds.
local function id_time(id)
  local ms = string.match(id, '^%d+')
  return string.sub(ms, 1, -4) .. '.' .. string.sub(ms, -3)
end
local function write_row(r, token)
  local args = {'seeds', r.seeds, 'gens', r.gens, 'floats', r.floats, 'loss', r.loss_text,
                'version', fmt(r.version), 'writer', r.writer, 'time', id_time(r.id)}
  if token then
    args[#args + 1] = 'recent'
    args[#args + 1] = string.sub(r.recent .. token, -@RECENT@)
  end
  redis.call('HSET', r.key, unpack(args))
end
"""

# KEYS: meta.  ARGV: prefix, with_spec ('1' | '0').
# Returns {state, epoch, n_layers, seed_bits, desired_workers, created, spec|false, {key, format, seeds, gens,
# floats, loss, version, writer, time} per layer}. Row fields are decoded (strictly) by the caller.
SNAPSHOT = lua_script(r"""
local meta = load_meta(KEYS[1])
local extra = redis.call('HMGET', KEYS[1], 'created', 'spec')
local out = {meta.state, fmt(meta.epoch), fmt(meta.n_layers), fmt(meta.seed_bits), fmt(meta.desired_workers),
             extra[1], false}
if ARGV[2] == '1' then out[7] = extra[2] end
for i = 0, meta.n_layers - 1 do
  local key = ARGV[1] .. 'layer:' .. i
  local r = row_fields(key, 'format', 'seeds', 'gens', 'floats', 'loss', 'version', 'writer', 'time')
  out[#out + 1] = {key, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]}
end
return out
""")

# KEYS: meta, layer.  ARGV: layer.  Returns {seed_bits, format, seeds, gens, floats, loss, version, writer,
# time}.
ENTRY = lua_script(r"""
local meta = load_meta(KEYS[1])
if tonumber(ARGV[1]) >= meta.n_layers then
  fail('GERM_SPEC', 'layer: ' .. ARGV[1] .. ' is out of range; the job has ' .. meta.n_layers .. ' layers')
end
local r = row_fields(KEYS[2], 'format', 'seeds', 'gens', 'floats', 'loss', 'version', 'writer', 'time')
return {fmt(meta.seed_bits), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]}
""")

# KEYS: meta, events, registry.  ARGV: job, prefix, mode ('create' | 'import' | 'replace'), spec, n_layers,
# seed_bits, desired_workers, state, epoch, then per layer: seeds (packed), gens (packed), floats, loss,
# version, writer, time ('' = now), then optionally a driver lease: owner, ttl_ms (taken with the job, in
# the same script).  The caller has validated every value. Returns the epoch, or -1 if the job exists (mode
# create / import).
CREATE = lua_script(r"""
local old = load_meta(KEYS[1], true)
if old ~= nil and ARGV[3] ~= 'replace' then return -1 end
local t, ms = now()
local n = tonumber(ARGV[5])
local stale = {KEYS[2], ARGV[2] .. 'progress', ARGV[2] .. 'docs'}
if old == nil then stale[#stale + 1] = ARGV[2] .. 'lease' end
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
  local b = 10 + i * 7
  local time = ARGV[b + 6]
  if time == '' then time = t end
  redis.call('HSET', ARGV[2] .. 'layer:' .. i, 'format', FORMAT, 'seeds', ARGV[b], 'gens', ARGV[b + 1],
             'floats', ARGV[b + 2], 'loss', ARGV[b + 3], 'version', ARGV[b + 4], 'writer', ARGV[b + 5],
             'time', time, 'recent', '')
  redis.call('XADD', KEYS[2], '*', 'format', FORMAT, 'kind', kind, 'layer', fmt(i), 'version', ARGV[b + 4],
             'epoch', ARGV[9], 'seeds', ARGV[b], 'gens', ARGV[b + 1], 'floats', ARGV[b + 2],
             'loss', ARGV[b + 3], 'writer', ARGV[b + 5], 'time', time)
end
redis.call('HSET', KEYS[1], 'format', FORMAT, 'spec', ARGV[4], 'n_layers', ARGV[5], 'seed_bits', ARGV[6],
           'desired_workers', ARGV[7], 'state', ARGV[8], 'epoch', ARGV[9], 'created', t)
redis.call('SADD', KEYS[3], ARGV[1])
local lease = 10 + n * 7
if ARGV[lease] then
  redis.call('HSET', ARGV[2] .. 'lease', 'owner', ARGV[lease], 'expires', fmt(ms + tonumber(ARGV[lease + 1])),
             'since', t)
end
return tonumber(ARGV[9])
""")

# KEYS: meta, events.  ARGV: prefix, last stream id seen ('' if the stream was empty), epoch, then per layer:
# seeds, gens, floats, loss, version, writer, time.  Rewrites every layer row (a repair from the stream).
REPAIR = lua_script(r"""
local meta = load_meta(KEYS[1])
want_type(KEYS[2], 'stream', true)
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last_id = ''
if #last > 0 then last_id = last[1][1] end
if last_id ~= ARGV[2] then
  fail('GERM_TABLE', 'stream ' .. KEYS[2] .. ' changed during the repair; try again')
end
local n = (#ARGV - 3) / 7
if n ~= meta.n_layers then
  fail('GERM_TABLE', 'stream has ' .. n .. ' layers, meta says ' .. meta.n_layers)
end
for i = 0, n - 1 do
  local b = 4 + i * 7
  local key = ARGV[1] .. 'layer:' .. i
  redis.call('DEL', key)
  redis.call('HSET', key, 'format', FORMAT, 'seeds', ARGV[b], 'gens', ARGV[b + 1], 'floats', ARGV[b + 2],
             'loss', ARGV[b + 3], 'version', ARGV[b + 4], 'writer', ARGV[b + 5], 'time', ARGV[b + 6],
             'recent', '')
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[3])
return n
""")
