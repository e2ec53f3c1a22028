package sink

import (
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// applyScript applies a run of rows that all live in one cluster slot.
//
// KEYS holds, per row, the row key and the tombstone key, and when ARGV[2] is "3" also the key-index set
// (IndexKey; the tombstone key again for rows of tables without an index). ARGV[1] is the tombstone TTL in
// milliseconds; then, per row: op, version, TTL in milliseconds (0 = none), n, and n more arguments:
//
//	"wh"  write a hash: n/2 field/value pairs
//	"wj"  write a JSON document: n = 1, the document
//	"dh"  delete a hash-format row: n = 0
//	"dj"  delete a JSON-format row: n = 0
//
// It returns one reply per row: 1 written, 2 deleted, 0 skipped by the fence (not newer than the stored
// version), or a string holding the error of that row (WRONGTYPE, for example). Reads go through pcall so that
// one bad key cannot abort the other rows; the writes after them cannot fail on a key's type.
//
// An op with a third letter "i" keeps the table's key index (TableOptions.KeyIndex): a row written where no
// version was found (a new key, or one written outside the pipeline) is added to it, a deleted row removed.
//
// A call first asks EXISTS of all its row keys, then of all its tombstones. When none exists (a backlog of new
// rows, the common case of a drain), no row of the call has a stored version, so each row is written without
// reading it first; a key that comes up a second time in the call takes the checked path, since the call itself
// wrote it. Otherwise every row is checked. This saves three of the four calls per new row (HGET, GET of the
// tombstone, DEL); the two EXISTS cost one key lookup per row and key, as the reads they replace did.
//
// Versions are compared as Lua strings: equal-length lower-case hex text orders like the versions.
const applyScript = `
local res = {}
local tombttl = ARGV[1]
local stride = tonumber(ARGV[2])
local nkeys = #KEYS
-- When none of the call's row keys and tombstones exists, no row of it has a stored version: the rows are
-- written without reading anything first, until a key comes up a second time (seen).
local unseen = redis.call('EXISTS', KEYS[1]) == 0 -- most calls of existing rows stop here
for part = 0, 1 do
  if not unseen then break end
  local list, n = {}, 0
  for i = 1 + part, nkeys, stride do n = n + 1; list[n] = KEYS[i] end
  for j = 1, n, 1000 do
    if redis.call('EXISTS', unpack(list, j, math.min(j + 999, n))) ~= 0 then unseen = false; break end
  end
end
local seen = {}
local a = 3
for i = 1, nkeys, stride do
  local key, tomb = KEYS[i], KEYS[i + 1]
  local op, ver, ttl, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local first, last = a + 4, a + 3 + n
  a = last + 1
  local idx = #op == 3 and KEYS[i + 2]
  local hash = string.sub(op, 2, 2) == 'h'
  local absent = unseen and not seen[key]
  local cur = false
  local hadtomb = false
  if absent then
    seen[key] = true
  else
    if hash then
      cur = redis.pcall('HGET', key, '_v')
    else
      cur = redis.pcall('GETRANGE', key, 0, 34)
      if type(cur) == 'string' then
        if string.sub(cur, 1, 7) == '{"_v":"' then cur = string.sub(cur, 8, 35) else cur = false end
      end
    end
    if cur == false then
      cur = redis.pcall('GET', tomb)
      hadtomb = cur ~= false
    end
  end
  local fresh = cur == false or hadtomb
  if type(cur) == 'table' then
    res[#res + 1] = tostring(cur.err or cur)
  elseif cur and ver <= cur then
    res[#res + 1] = 0
  elseif string.sub(op, 1, 1) == 'd' then
    if not absent then redis.call('DEL', key) end
    redis.call('SET', tomb, ver, 'PX', tombttl)
    if idx then redis.call('SREM', idx, key) end
    res[#res + 1] = 2
  else
    if hash then
      -- DEL even when no version was found: a hash written outside the
      -- pipeline has no _v, and its foreign fields must not survive.
      if not absent then redis.call('DEL', key) end
      local j = first
      repeat
        redis.call('HSET', key, '_v', ver, unpack(ARGV, j, math.min(j + 999, last)))
        j = j + 1000
      until j > last
      if ttl ~= '0' then redis.call('PEXPIRE', key, ttl) end
    elseif ttl ~= '0' then
      redis.call('SET', key, ARGV[first], 'PX', ttl)
    else
      redis.call('SET', key, ARGV[first])
    end
    if hadtomb then redis.call('DEL', tomb) end
    if fresh and idx then redis.call('SADD', idx, key) end
    res[#res + 1] = 1
  end
end
return res
`

var script = redis.NewScript(applyScript)

// Script results per row.
const (
	resSkipped = 0
	resWritten = 1
	resDeleted = 2
)

// buildCall renders the KEYS and ARGV of one script call over ops[call[0]], ops[call[1]], ...
func (s *Sink) buildCall(ops []op, call []int32) ([]string, []any) {
	stride := 2
	for _, k := range call {
		if ops[k].ts.keyIndex {
			stride = 3
			break
		}
	}
	keys := make([]string, 0, stride*len(call))
	args := make([]any, 2, 2+len(call)*12)
	args[0], args[1] = s.tombTTL, stride
	for _, k := range call {
		o := &ops[k]
		ts := o.ts
		tomb := tombstoneKey(o.key, int(o.slot))
		keys = append(keys, o.key, tomb)
		if stride == 3 {
			if ts.keyIndex {
				keys = append(keys, s.indexKey(ts, int(o.slot)))
			} else {
				keys = append(keys, tomb) // a placeholder in the row's slot
			}
		}
		ver := o.ver.String()
		var opcode string
		switch {
		case o.row == nil && ts.format == FormatJSON:
			opcode = "dj"
		case o.row == nil:
			opcode = "dh"
		case ts.format == FormatJSON:
			opcode = "wj"
		default:
			opcode = "wh"
		}
		if ts.keyIndex {
			opcode += "i"
		}
		switch {
		case o.row == nil:
			args = append(args, opcode, ver, 0, 0)
		case ts.format == FormatJSON:
			args = append(args, opcode, ver, ts.ttl, 1, appendJSON(nil, ts.table.Columns, o.row, o.ver))
		default:
			n := 0
			for _, v := range o.row {
				if v != nil {
					n++
				}
			}
			args = append(args, opcode, ver, ts.ttl, 2*n)
			for c, v := range o.row {
				if v != nil {
					args = append(args, ts.fields[c], v)
				}
			}
		}
	}
	return keys, args
}

// collect records the script's replies for call into res.
func collect(ops []op, call []int32, replies []any, res *laneResult) error {
	if len(replies) != len(call) {
		return fmt.Errorf("applying script: got %d replies for %d rows", len(replies), len(call))
	}
	for i, r := range replies {
		o := &ops[call[i]]
		switch r := r.(type) {
		case int64:
			switch r {
			case resSkipped:
				res.stats.Skipped++
			case resWritten:
				res.stats.Written++
			case resDeleted:
				res.stats.Deleted++
			default:
				return fmt.Errorf("applying script: unexpected reply %d for key %q", r, o.key)
			}
		case string:
			res.rowErrs = append(res.rowErrs, o.rowError(errors.New(r)))
		default:
			return fmt.Errorf("applying script: unexpected reply %T for key %q", r, o.key)
		}
	}
	return nil
}
