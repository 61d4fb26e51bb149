"""The Lua scripts that change layer rows: whole-vector seed commits, slot swaps and the trainer's merging
float publish (sources only; docs/layout.md has the rules, docs/table.md the stream entries they write).

Same rules as ``table.scripts``: each checks everything it reads before its first write (its first write
is the stream entry) and fails with a ``GERM_*`` code. Reply codes: 1 accepted, 2 stale, 3 not better,
4 accepted earlier (a retry whose first reply was lost), 5 duplicate (the seed is in another slot).

``COMMIT_SEEDS`` and ``SWAP`` take n commits in one atomic step. Mode ``one`` (a single call): a retry is
recognised by its token among the row's ``recent`` tokens. Mode ``many`` (a pipelined batch): the reply is
kept for 10 minutes under the batch key (KEYS[3]), so a retried batch is answered, not applied twice.
Every row a batch touches is read and checked first; rows are written once, at the end.
"""

from __future__ import annotations

from .scripts import lua_script

# Shared head of the batch scripts: the kept reply of a retried batch, the meta and the stream's type.
_BATCH_HEAD = r"""
local one = ARGV[1] == 'one'
if not one then
  local done = redis.pcall('GET', KEYS[3])
  if type(done) == 'string' then
    local ok, v = pcall(cjson.decode, done)
    if ok and type(v) == 'table' then return v end
  end
end
local meta = load_meta(KEYS[1])
check_writable(meta, KEYS[1])
want_type(KEYS[2], 'stream', true)
local n = tonumber(ARGV[3])
local prefix = string.sub(KEYS[1], 1, -5)
local rows = {}
local function arg(i, field)
  if one then return field end
  return WHAT .. '[' .. (i + tonumber(ARGV[2])) .. '].' .. field
end
local function row_of(i, layer)
  if tonumber(layer) >= meta.n_layers then
    fail('GERM_SPEC', arg(i, 'layer') .. ': ' .. layer .. ' is out of range; the job has ' .. meta.n_layers
         .. ' layers')
  end
  local r = rows[layer]
  if r == nil then
    r = read_row(prefix .. 'layer:' .. layer, meta.width)
    rows[layer] = r
  end
  return r
end
local function check_bits(i, field, bits)
  if tonumber(bits) > meta.seed_bits then
    fail('GERM_SPEC', arg(i, field) .. ': a seed needs ' .. bits .. ' bits, the job has seed_bits='
         .. meta.seed_bits)
  end
end
"""

_BATCH_TAIL = r"""
for _, r in pairs(rows) do
  if r.id then write_row(r, one and ARGV[2] or nil) end
end
if epoch ~= meta.epoch then redis.call('HSET', KEYS[1], 'epoch', fmt(epoch)) end
out[#out + 1] = epoch
if not one then redis.call('SET', KEYS[3], cjson.encode(out), 'EX', 600) end
return out
"""

# KEYS: meta, events, batch key (mode many; any key of the job in mode one).
# ARGV: mode ('one' | 'many'), token (one) or the index of the batch's first commit (many), n, then per
# commit: layer, expected_version, seeds (8-byte LE each), seed bits needed, floats, loss, writer.
# Returns {code, version} per commit, then the epoch.
# Accepted iff the row is at expected_version and the loss is below the stored one; the generation of every
# slot whose seed changed goes up by one.
COMMIT_SEEDS = lua_script(
    "local WHAT = 'commits'\n"
    + _BATCH_HEAD
    + r"""
for i = 0, n - 1 do
  local b = 4 + i * 7
  check_bits(i, 'seeds', ARGV[b + 3])
  local r = row_of(i, ARGV[b])
  if #ARGV[b + 2] ~= 8 * r.n then
    fail('GERM_SPEC', arg(i, 'seeds') .. ': got ' .. (#ARGV[b + 2] / 8) .. ' seeds, layer ' .. ARGV[b]
         .. ' has ' .. r.n .. ' (rank ' .. r.rank .. ' + 4)')
  end
  if #ARGV[b + 4] ~= #r.floats then
    fail('GERM_SPEC', arg(i, 'floats') .. ': got ' .. (#ARGV[b + 4] / 4) .. ' values, layer ' .. ARGV[b]
         .. ' has ' .. (#r.floats / 4))
  end
end
local out, epoch = {}, meta.epoch
for i = 0, n - 1 do
  local b = 4 + i * 7
  local r = rows[ARGV[b]]
  local code = 1
  if r.version ~= tonumber(ARGV[b + 1]) then
    code = 2
    if one and string.find(r.recent, ARGV[2], 1, true) then code = 4 end
  elseif not (tonumber(ARGV[b + 5]) < r.loss) then
    code = 3
  else
    local seeds = narrow(ARGV[b + 2], meta.width)
    local gens = bumped(r, seeds, meta.width)
    r.version = r.version + 1
    epoch = epoch + 1
    r.id = append(KEYS[2], 'kind', 'seeds', 'layer', ARGV[b], 'version', fmt(r.version), 'epoch', fmt(epoch),
                  'seeds', seeds, 'gens', gens, 'floats', ARGV[b + 4], 'loss', ARGV[b + 5],
                  'writer', ARGV[b + 6])
    r.seeds, r.gens, r.floats, r.writer = seeds, gens, ARGV[b + 4], ARGV[b + 6]
    r.loss, r.loss_text = tonumber(ARGV[b + 5]), ARGV[b + 5]
  end
  out[#out + 1] = code
  out[#out + 1] = r.version
end
"""
    + _BATCH_TAIL
)

# KEYS: meta, events, batch key (mode many; any key of the job in mode one).
# ARGV: mode, token or first index (as COMMIT_SEEDS), n, then per swap: layer, slot, expected_gen,
# seed (8-byte LE), seed bits needed, slot floats, loss ('' when the caller found it not below the
# incumbent's: not better), writer.
# Returns {code, version} per swap, then the epoch.
# Accepted iff the slot is at expected_gen, the loss is better, and no other component slot holds the seed:
# the slot's seed, its floats and its generation (+1) change; the rest of the row stays as it is.
SWAP = lua_script(
    "local WHAT = 'swaps'\n"
    + _BATCH_HEAD
    + r"""
for i = 0, n - 1 do
  local b = 4 + i * 8
  check_bits(i, 'seed', ARGV[b + 4])
  local r = row_of(i, ARGV[b])
  if tonumber(ARGV[b + 1]) >= r.rank then
    fail('GERM_SPEC', arg(i, 'slot') .. ': ' .. ARGV[b + 1] .. ' is not a component slot of layer ' .. ARGV[b]
         .. ' (rank ' .. r.rank .. ': slots 0..' .. (r.rank - 1) .. ')')
  end
  if #ARGV[b + 5] ~= 4 * r.per then
    fail('GERM_SPEC', arg(i, 'slot_floats') .. ': got ' .. (#ARGV[b + 5] / 4) .. ' values, a slot of layer '
         .. ARGV[b] .. ' has ' .. r.per .. ' (g, then one per expert row)')
  end
end
local out, epoch = {}, meta.epoch
for i = 0, n - 1 do
  local b = 4 + i * 8
  local r = rows[ARGV[b]]
  local slot = tonumber(ARGV[b + 1])
  local gen = gen_at(r.gens, slot)
  local seed = string.sub(ARGV[b + 3], 1, meta.width)
  local code = 1
  if gen ~= tonumber(ARGV[b + 2]) then
    code = 2
    if one and string.find(r.recent, ARGV[2], 1, true) then code = 4 end
  elseif ARGV[b + 6] == '' then
    code = 3
  elseif holder(r.seeds, meta.width, r.rank, seed, slot) then
    code = 5
  else
    local gens = set_at(r.gens, 4, slot, struct.pack('<I4', plus_one(r.key, slot, gen)))
    r.version = r.version + 1
    epoch = epoch + 1
    r.id = append(KEYS[2], 'kind', 'swap', 'layer', ARGV[b], 'slot', ARGV[b + 1], 'gen', fmt(gen + 1),
                  'seed', seed, 'floats', ARGV[b + 5], 'loss', ARGV[b + 6], 'version', fmt(r.version),
                  'epoch', fmt(epoch), 'writer', ARGV[b + 7])
    r.seeds = set_at(r.seeds, meta.width, slot, seed)
    r.gens = gens
    r.floats = splice_slot(r.floats, r.rank, r.per, slot, ARGV[b + 5])
    r.loss, r.loss_text, r.writer = tonumber(ARGV[b + 6]), ARGV[b + 6], ARGV[b + 7]
  end
  out[#out + 1] = code
  out[#out + 1] = r.version
end
"""
    + _BATCH_TAIL
)

# KEYS: meta, layer, events.  ARGV: layer, floats, loss, gens (uint32 LE, the generations trained against),
# writer, token, expected_version ('' = any).  Returns {code, version, epoch, kept slot...}: 1 accepted,
# 2 stale (a layer seed's generation moved, or the version when expected_version is given), 4 accepted
# earlier (a retry). The slots whose generation moved keep the table's floats and are listed.
PUBLISH = lua_script(r"""
local meta = load_meta(KEYS[1])
check_writable(meta, KEYS[1])
if tonumber(ARGV[1]) >= meta.n_layers then
  fail('GERM_SPEC', 'layer: ' .. ARGV[1] .. ' is out of range; the job has ' .. meta.n_layers .. ' layers')
end
local r = read_row(KEYS[2], meta.width)
if #ARGV[2] ~= #r.floats then
  fail('GERM_SPEC', 'floats: got ' .. (#ARGV[2] / 4) .. ' values, layer ' .. ARGV[1] .. ' has '
       .. (#r.floats / 4))
end
if #ARGV[4] ~= #r.gens then
  fail('GERM_SPEC', 'gens: got ' .. (#ARGV[4] / 4) .. ' generations, layer ' .. ARGV[1] .. ' has ' .. r.n
       .. ' seed slots (rank ' .. r.rank .. ' + 4)')
end
local kept = {}
for k = 0, r.rank - 1 do
  if string.sub(r.gens, 4 * k + 1, 4 * k + 4) ~= string.sub(ARGV[4], 4 * k + 1, 4 * k + 4) then
    kept[#kept + 1] = k
  end
end
if string.find(r.recent, ARGV[6], 1, true) then return {4, r.version, meta.epoch, unpack(kept)} end
if ARGV[7] ~= '' and r.version ~= tonumber(ARGV[7]) then return {2, r.version, meta.epoch} end
if string.sub(r.gens, -16) ~= string.sub(ARGV[4], -16) then return {2, r.version, meta.epoch} end
local floats = ARGV[2]
for _, k in ipairs(kept) do
  floats = splice_slot(floats, r.rank, r.per, k, slot_floats(r.floats, r.rank, r.per, k))
end
r.version = r.version + 1
local epoch = meta.epoch + 1
r.id = append(KEYS[3], 'kind', 'floats', 'layer', ARGV[1], 'version', fmt(r.version), 'epoch', fmt(epoch),
              'floats', floats, 'kept', table.concat(kept, ','), 'loss', ARGV[3], 'writer', ARGV[5])
r.floats, r.loss_text, r.writer = floats, ARGV[3], ARGV[5]
write_row(r, ARGV[6])
redis.call('HSET', KEYS[1], 'epoch', fmt(epoch))
return {1, r.version, epoch, unpack(kept)}
""")
