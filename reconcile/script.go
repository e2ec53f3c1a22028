package reconcile

import "github.com/redis/go-redis/v9"

// digestScript hashes rows in Redis the way rowHashExpr hashes them in MySQL, so that only digests cross the
// network.
//
// KEYS are row keys (ARGV[3] of them), then probe keys. ARGV: [1] "c" to use cached row hashes, "f" to recompute
// every row from its fields, [2] format ("h" hash, "j" JSON), [3] the number of row keys, [4] the number of
// columns n, [5..4+n] the field names in column order, [5+n..4+2n] the column kinds ("n" numeric, "f" FLOAT, "s"
// other). When ARGV goes on after that, the keys are there instead, and KEYS[1] only routes the call to a
// cluster master (nodeDigest).
//
// It returns {per-key hashes, probe hits...}: per-key hashes is one string of 17 bytes per row key, a status byte
// ("+" a row, "-" no key, "E" not a row of this format) then the row's hash in 16 hex digits; probe hits are the
// 1-based indexes (among the probe keys) of the probe keys that exist. The caller computes the range's count and
// XOR from the hashes (the script keeps to string work: every number conversion in Lua costs an interned string).
//
// A row's hash is the first 16 hex digits of SHA1 over its columns joined with ',', each "-" when the field is
// absent, else the value for numeric columns and "<length>:<bytes>" for the others, then "!" when the row holds
// fields beyond its columns, "_v" and "_h" (rowHashExpr in table.go, rowHash in render.go). FLOAT values are
// canonicalised by canonf (see canonical in render.go).
//
// Cached hashes (hash format only): after hashing a row the script stores the hash in the row's metadata field
// "_h" (8 hex digits of a signature of the column list, then the 16 of the hash). Every write of the sink replaces
// the whole row, which drops "_h", so a cached hash always describes the fields the pipeline last wrote; only an
// edit outside the pipeline that keeps "_h" (HSET of one field) makes it stale, which a pass with "f" catches.
const digestScript = `
local cache, fmt, nrows, ncols = ARGV[1] == 'c', ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local cols, kinds, known = {}, {}, {}
for i = 1, ncols do
  cols[i] = ARGV[4 + i]
  kinds[i] = ARGV[4 + ncols + i]
  known[cols[i]] = true
end
local keys, nkeys, node = KEYS, #KEYS, #ARGV > 4 + 2 * ncols
if node then
  keys, nkeys = {}, #ARGV - 4 - 2 * ncols
  for i = 1, nkeys do keys[i] = ARGV[4 + 2 * ncols + i] end
end
-- read is redis.pcall, except that in a call of a master's keys a key this node does not serve (its slot moved)
-- ends the call, which the reconciler then makes again by slot.
local function read(...)
  local r = redis.pcall(...)
  if node and type(r) == 'table' and r.err and string.find(r.err, 'cluster', 1, true) then error(r) end
  return r
end
local sfmt, ssub, tonum = string.format, string.sub, tonumber
local sig = ssub(redis.sha1hex(table.concat(cols, '\0') .. '|' .. table.concat(kinds)), 1, 8)

local function fmtdouble(x)
  if x ~= x then return 'nan' end
  if x == 0 then
    if 1 / x < 0 then return '-0' end
    return '0'
  end
  local lo, hi = 1, 17
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonum(sfmt('%.' .. (mid - 1) .. 'e', x)) == x then hi = mid else lo = mid + 1 end
  end
  local e = sfmt('%.' .. (lo - 1) .. 'e', x)
  local neg = ''
  if ssub(e, 1, 1) == '-' then neg = '-'; e = ssub(e, 2) end
  local mant, ex = string.match(e, '^([%d%.]+)e([-+]%d+)$')
  if not mant then return neg .. e end
  local d = string.gsub(mant, '%.', '')
  local exp = tonum(ex)
  local nd = #d
  if exp < -15 or exp > 14 then
    local s = ssub(d, 1, 1)
    if nd > 1 then s = s .. '.' .. ssub(d, 2) end
    return neg .. s .. 'e' .. sfmt('%d', exp)
  elseif exp < 0 then
    return neg .. '0.' .. string.rep('0', -exp - 1) .. d
  elseif nd <= exp + 1 then
    return neg .. d .. string.rep('0', exp + 1 - nd)
  end
  return neg .. ssub(d, 1, exp + 1) .. '.' .. ssub(d, exp + 2)
end

local function canonf(v)
  local x = tonum(v)
  if x == nil then return v end
  return fmtdouble(struct.unpack('f', struct.pack('f', x)))
end

-- The base64 table is built at the first binary value: building it costs a call more than hashing a row.
local b64
local function unb64(s)
  if not b64 then
    b64 = {}
    local a = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
    for i = 1, 64 do b64[string.byte(a, i)] = i - 1 end
  end
  local out, n, bits, nb = {}, 0, 0, 0
  for i = 1, #s do
    local v = b64[string.byte(s, i)]
    if v then
      bits = bits * 64 + v
      nb = nb + 6
      if nb >= 8 then
        nb = nb - 8
        local p = 2 ^ nb
        local byte = math.floor(bits / p)
        bits = bits - byte * p
        n = n + 1
        out[n] = string.char(byte)
      end
    end
  end
  return table.concat(out)
end

-- The pieces of a row are collected in one table and joined once: every Lua string is interned, so building
-- "<length>:<bytes>" per column would hash each value again.
local parts, tconcat, sha1 = {}, table.concat, redis.sha1hex
-- lens[n] is n as a string, made once per length: table.concat would otherwise format every length with sprintf.
local lens = setmetatable({}, {__index = function(t, n) local s = tostring(n); t[n] = s; return s end})
local function rowhash(r, extra)
  local n = 0
  for i = 1, ncols do
    if i > 1 then n = n + 1; parts[n] = ',' end
    local v = r[i]
    if not v then
      n = n + 1; parts[n] = '-'
    else
      local k = kinds[i]
      if k == 's' then
        parts[n + 1] = lens[#v]; parts[n + 2] = ':'; parts[n + 3] = v; n = n + 3
      elseif k == 'f' then
        n = n + 1; parts[n] = canonf(v)
      else
        n = n + 1; parts[n] = v
      end
    end
  end
  if extra then n = n + 1; parts[n] = '!' end
  return ssub(sha1(tconcat(parts, '', 1, n)), 1, 16)
end

-- hash returns the row's hash (16 hex digits); nil when the key does not exist, false when it is not a row.
-- HMGET of the columns plus HLEN costs Redis less than HGETALL (measured: 3.5 against 4 µs for 10 columns):
-- most of a row's cost is turning the reply into Lua strings.
local hmargs = {}
for i = 1, ncols do hmargs[i] = cols[i] end
hmargs[ncols + 1] = '_h'
local function hash(key)
  if fmt == 'h' then
    if cache then
      local c = read('HGET', key, '_h')
      if type(c) == 'string' and #c == 24 and string.find(c, sig, 1, true) == 1 then return ssub(c, 9) end
      if type(c) == 'table' then return false end
    end
    local r = read('HMGET', key, unpack(hmargs))
    if type(r) ~= 'table' or r.err then return false end
    local n = 1 -- _v
    for i = 1, ncols + 1 do
      if r[i] then n = n + 1 end
    end
    local len = redis.call('HLEN', key)
    if len == 0 then return nil end
    -- more fields than the columns, _v and _h: a field that is not a column (or other metadata: a needless descent)
    local h = rowhash(r, len ~= n)
    local cached = r[ncols + 1]
    if not (cached and #cached == 24 and ssub(cached, 9) == h and string.find(cached, sig, 1, true) == 1) then
      redis.pcall('HSET', key, '_h', sig .. h)
    end
    return h
  end
  local s = read('GET', key)
  if s == false then return nil end
  if type(s) ~= 'string' then return false end
  local ok, doc = pcall(cjson.decode, s)
  if not ok or type(doc) ~= 'table' then return false end
  local r, extra = {}, false
  for f, v in pairs(doc) do
    if type(v) == 'table' then
      if type(v.b64) ~= 'string' then return false end
    elseif type(v) ~= 'string' then
      return false
    end
    if not known[f] and ssub(f, 1, 1) ~= '_' then extra = true end
  end
  for i = 1, ncols do
    local v = doc[cols[i]]
    if type(v) == 'table' then v = unb64(v.b64) end
    r[i] = v or false
  end
  return rowhash(r, extra)
end

local packed, np = {}, 0
for i = 1, nrows do
  local h = hash(keys[i])
  if h == nil then
    packed[np + 1] = '-0000000000000000'; np = np + 1
  elseif h == false then
    packed[np + 1] = 'E0000000000000000'; np = np + 1
  else
    packed[np + 1] = '+'; packed[np + 2] = h; np = np + 2
  end
end
local res = {tconcat(packed, '', 1, np)}
for i = nrows + 1, nkeys do
  if redis.call('EXISTS', keys[i]) == 1 then res[#res + 1] = i - nrows end
end
return res
`

var digest = redis.NewScript(digestScript)

// nodeDigest is digestScript for a call that holds keys of many slots of one cluster master, passed in ARGV:
// Redis 7.0's allow-cross-slot-keys flag lets a script read keys of other slots than its declared one, as long as
// this node serves them. A range's keys spread over the 16384 slots, so calls of one slot held about one key each
// and the script's set-up cost Redis more than the rows.
var nodeDigest = redis.NewScript("#!lua flags=allow-cross-slot-keys\n" + digestScript)

// resetScript deletes a row key that a repair at version ARGV[1] could not replace: a key holding another type
// than the format's (ARGV[2]: "h" hash, "j" JSON string), or a row whose version is exactly ARGV[1] (hash: field
// _v; JSON: bytes 8 to 35). Where the row key does not exist, it deletes its tombstone (KEYS[2]) when that holds
// exactly ARGV[1]. It returns 1 when it deleted a key.
//
// A stream change is always newer than a snapshot version taken at or before it, so a row or tombstone at exactly
// that version can only hold what an earlier repair at the same position wrote: a row edited outside the pipeline
// since, or the delete of a key the row was missing from MySQL for while the binlog did not move (a row changed
// with sql_log_bin=0, or a key taken for an orphan). A key of another type holds no version, and the stream cannot
// write it either.
const resetScript = `
local want = 'hash'
if ARGV[2] == 'j' then want = 'string' end
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then
  if redis.call('GET', KEYS[2]) == ARGV[1] then
    redis.call('DEL', KEYS[2])
    return 1
  end
  return 0
end
local cur
if t ~= want then
  cur = ARGV[1]
elseif want == 'hash' then
  cur = redis.call('HGET', KEYS[1], '_v')
else
  cur = redis.call('GETRANGE', KEYS[1], 7, 34)
end
if cur == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`

var reset = redis.NewScript(resetScript)
