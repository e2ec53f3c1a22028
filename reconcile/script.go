package reconcile

import "github.com/redis/go-redis/v9"

// digestScript hashes rows in Redis the way rowHashExpr hashes them in MySQL, so that only digests cross the
// network.
//
// KEYS are row keys (ARGV[3] of them), then probe keys. ARGV: [1] "c" to use cached row hashes, "f" to recompute
// every row from its fields, [2] format ("h" hash, "j" JSON), [3] the number of row keys, [4] the number of
// columns n, [5..4+n] the field names in column order, [5+n..4+2n] the column kinds ("n" numeric, "f" FLOAT, "s"
// other).
//
// It returns {count, xor of the high 32 bits, xor of the low 32 bits, per-key hashes, probe hits...}: count and
// xor over the row keys that exist; per-key hashes is one string of 9 bytes per row key, a status byte ("+" a row,
// "-" no key, "E" not a row of this format) then the 8 bytes of the row's hash; probe hits are the 1-based
// indexes (among the probe keys) of the probe keys that exist.
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

local b64 = {}
do
  local a = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  for i = 1, 64 do b64[string.byte(a, i)] = i - 1 end
end
local function unb64(s)
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

local parts = {}
local function rowhash(r, extra)
  for i = 1, ncols do
    local v = r[i]
    if not v then
      parts[i] = '-'
    else
      local k = kinds[i]
      if k == 's' then parts[i] = #v .. ':' .. v
      elseif k == 'f' then parts[i] = canonf(v)
      else parts[i] = v end
    end
  end
  local s = table.concat(parts, ',', 1, ncols)
  if extra then s = s .. '!' end
  return ssub(redis.sha1hex(s), 1, 16)
end

-- hash returns the row's hash (16 hex digits); nil when the key does not exist, false when it is not a row.
local hmargs = {}
for i = 1, ncols do hmargs[i] = cols[i] end
hmargs[ncols + 1] = '_v'
hmargs[ncols + 2] = '_h'
local function hash(key)
  if fmt == 'h' then
    if cache then
      local c = redis.pcall('HGET', key, '_h')
      if type(c) == 'string' and #c == 24 and ssub(c, 1, 8) == sig then return ssub(c, 9) end
      if type(c) == 'table' then return false end
    end
    local r = redis.pcall('HMGET', key, unpack(hmargs))
    if type(r) ~= 'table' or r.err then return false end
    local n = 0
    for i = 1, ncols + 2 do
      if r[i] then n = n + 1 end
    end
    local len = redis.call('HLEN', key)
    if len == 0 then return nil end
    -- more fields than the columns, _v and _h: a field that is not a column (or other metadata: a needless descent)
    local h = rowhash(r, len ~= n)
    if r[ncols + 2] ~= sig .. h then redis.pcall('HSET', key, '_h', sig .. h) end
    return h
  end
  local s = redis.pcall('GET', key)
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

local count, xh, xl = 0, 0, 0
local packed = {}
for i = 1, nrows do
  local h = hash(KEYS[i])
  if h == nil then
    packed[i] = '-\0\0\0\0\0\0\0\0'
  elseif h == false then
    packed[i] = 'E\0\0\0\0\0\0\0\0'
    count = count + 1
    xh = bit.bxor(xh, 0x5bad)
  else
    local hi, lo = tonum(ssub(h, 1, 8), 16), tonum(ssub(h, 9, 16), 16)
    packed[i] = '+' .. struct.pack('>I4>I4', hi, lo)
    count = count + 1
    xh = bit.bxor(xh, hi)
    xl = bit.bxor(xl, lo)
  end
end
local res = {count, xh, xl, table.concat(packed)}
for i = nrows + 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then res[#res + 1] = i - nrows end
end
return res
`

var digest = redis.NewScript(digestScript)

// resetScript deletes a row key that a repair at version ARGV[1] could not replace: a key holding another type
// than the format's (ARGV[2]: "h" hash, "j" JSON string), or a row whose version is exactly ARGV[1] (hash: field
// _v; JSON: bytes 8 to 35). It returns 1 when it deleted the key.
//
// A stream change is always newer than a snapshot version taken at or before it, so a row at exactly that version
// can only hold what an earlier repair at the same position wrote, edited outside the pipeline since. A key of
// another type holds no version, and the stream cannot write it either.
const resetScript = `
local want = 'hash'
if ARGV[2] == 'j' then want = 'string' end
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
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
