package sink

import (
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
)

// applyScript applies a run of rows that all live in one cluster slot, or on one cluster master (nodeScript).
//
// KEYS holds the N row keys, then their N tombstone keys, and when ARGV[2] is "3" also N key-index sets (IndexKey;
// the row's tombstone key again for rows of tables without an index). ARGV[1] is the tombstone TTL in
// milliseconds; ARGV[3] is "f" when no key comes up twice in the call (the fresh path may be taken), "c"
// otherwise; then, per row: op, version, TTL in milliseconds (0 = none), n, and n more arguments:
//
//	"wh"  write a hash: n/2 field/value pairs
//	"wj"  write a JSON document: n = 1, the document
//	"wp"  write a hash as a RESTORE payload (dump.go): n = 1, the payload
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
// A compact call carries hash rows that are all RESTORE payloads of one TTL and key-index setting (a drain of a
// narrow table): ARGV[4] is "P", ARGV[5] the TTL, ARGV[6] the versions of the rows (change.VersionLen characters
// each, joined), then one payload per row. It is applied like the same rows with op "wp" (or "wpi" when KEYS has
// index sets), but passes one argument per row instead of five: Redis parses and copies every argument into the
// script, about 0.2 µs each. On its fresh path it looks up only the tombstones, not the row keys: each row is
// written with RESTORE without REPLACE, which refuses a key that exists (BUSYKEY, before reading the payload); that
// row and the ones after it then take the checked path. The rows before it were new, and the keys of the call are
// all different. A key lookup costs Redis about 0.6 µs in a script (a million keys).
//
// The fresh path: a call whose keys are all different first asks EXISTS of all its row keys, then of all its
// tombstones. When none exists (a backlog of new rows, the common case of a drain), no row of the call has a
// stored version, so each row is written without reading it first. This saves three of the four calls per new row
// (HGET, GET of the tombstone, DEL); the two EXISTS cost one key lookup per row and key, as the reads they replace
// did. A call with a repeated key always takes the checked path, since the call itself writes the key.
//
// Versions are compared as Lua strings: equal-length lower-case hex text orders like the versions.
const applyScript = `
local tombttl, stride = ARGV[1], tonumber(ARGV[2])
-- K is the keys. A call of one cluster master's rows (nodeScript) declares only one key, to route the call: its
-- keys end ARGV, followed by their number. (Any other call has at least two keys per row.)
local K, node = KEYS, #KEYS == 1
if node then
  local nk = tonumber(ARGV[#ARGV])
  local base = #ARGV - 1 - nk
  K = {}
  for i = 1, nk do K[i] = ARGV[base + i] end
end
-- writehash sets the version and the field/value pairs ARGV[first..last] of a row, then its TTL.
local function writehash(key, ver, ttl, first, last)
  local j = first
  repeat
    redis.call('HSET', key, '_v', ver, unpack(ARGV, j, math.min(j + 999, last)))
    j = j + 1000
  until j > last
  if ttl ~= '0' then redis.call('PEXPIRE', key, ttl) end
end
-- norestore is the error to end a call with when RESTORE failed: "NORESTORE <err>" (the sink switches to HSET)
-- when Redis refused RESTORE itself, the error as it is when it was the server's state (out of memory, loading,
-- read-only...), which the sink retries like any write.
local transient = {OOM = true, LOADING = true, BUSY = true, READONLY = true, MASTERDOWN = true, NOREPLICAS = true,
  TRYAGAIN = true, CLUSTERDOWN = true}
local function norestore(err)
  if transient[string.match(err, '^(%u+)')] then return err end
  return 'NORESTORE ' .. err
end
-- restore creates or replaces a hash row from its payload; it returns the error when Redis refuses RESTORE.
local function restore(key, ttl, payload)
  local r = redis.pcall('RESTORE', key, ttl, payload, 'REPLACE')
  if type(r) == 'table' and r.err then return r.err end
end
local nrows = #K / stride
local res = {}
local a = 4
-- checked applies row i after reading its stored version (and tombstone); it returns an error to end the call with.
local function checked(i, op, ver, ttl, first, last)
  local key, tomb = K[i], K[nrows + i]
  local idx = #op == 3 and K[2 * nrows + i]
  local kind = string.sub(op, 2, 2)
  local hash = kind ~= 'j'
  local cur, hadtomb
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
  local isnew = cur == false or hadtomb -- no stored version
  if type(cur) == 'table' then
    local msg = tostring(cur.err or cur)
    -- A key of a call of a master's rows that this node does not serve (the slot moved): the call ends, and the
    -- sink sends its rows again by slot.
    if node and string.find(msg, 'cluster', 1, true) then return msg end
    res[i] = msg
  elseif cur and ver <= cur then
    res[i] = 0
  elseif string.sub(op, 1, 1) == 'd' then
    redis.call('DEL', key)
    redis.call('SET', tomb, ver, 'PX', tombttl)
    if idx then redis.call('SREM', idx, key) end
    res[i] = 2
  else
    if kind == 'p' then
      -- REPLACE: like DEL below, no field of the key before survives.
      local err = restore(key, ttl, ARGV[first])
      if err then return norestore(err) end
    elseif hash then
      -- DEL even when no version was found: a hash written outside the
      -- pipeline has no _v, and its foreign fields must not survive.
      redis.call('DEL', key)
      writehash(key, ver, ttl, first, last)
    elseif ttl ~= '0' then
      redis.call('SET', key, ARGV[first], 'PX', ttl)
    else
      redis.call('SET', key, ARGV[first])
    end
    if hadtomb then redis.call('DEL', tomb) end
    if isnew and idx then redis.call('SADD', idx, key) end
    res[i] = 1
  end
end
-- A compact call (ARGV[4] "P"): every row is a payload of the same TTL, ARGV[5]; ARGV[6] holds the versions of
-- the rows, 28 characters each; the payloads follow.
local compact = ARGV[4] == 'P'
local pttl, pvers, pop = ARGV[5], ARGV[6], 'wp'
if stride == 3 then pop = 'wpi' end
local fresh = ARGV[3] == 'f' and redis.call('EXISTS', K[1]) == 0 -- most calls of existing rows stop here
if fresh then
  -- A compact call looks up only the tombstones: its RESTOREs, without REPLACE, refuse a key that exists.
  local from = 1
  if compact then from = nrows + 1 end
  if node then
    -- One command's keys must share a slot, even in a script allowed to cross slots.
    for j = from, 2 * nrows do
      if redis.call('EXISTS', K[j]) ~= 0 then fresh = false; break end
    end
  else
    for j = from, 2 * nrows, 1000 do
      if redis.call('EXISTS', unpack(K, j, math.min(j + 999, 2 * nrows))) ~= 0 then fresh = false; break end
    end
  end
end
local start = 1
if fresh and compact then
  for i = 1, nrows do
    local r = redis.pcall('RESTORE', K[i], pttl, ARGV[6 + i])
    if type(r) == 'table' and r.err then
      -- BUSYKEY (checked before the payload is read): the key exists; it and the rows after it are checked.
      if string.sub(r.err, 1, 7) == 'BUSYKEY' then fresh = false; start = i; break end
      return redis.error_reply(norestore(r.err))
    end
    if stride == 3 then redis.call('SADD', K[2 * nrows + i], K[i]) end
    res[i] = 1
  end
  if fresh then return res end
end
if fresh then
  -- No row key and no tombstone exists: nothing to read, to compare or to delete.
  for i = 1, nrows do
    local op, ver, ttl, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
    local first, last = a + 4, a + 3 + n
    a = last + 1
    local key = K[i]
    if op == 'wp' or op == 'wpi' then
      local err = restore(key, ttl, ARGV[first])
      if err then return redis.error_reply(norestore(err)) end
      if op == 'wpi' then redis.call('SADD', K[2 * nrows + i], key) end
      res[i] = 1
    elseif op == 'wh' or op == 'whi' then
      writehash(key, ver, ttl, first, last)
      if op == 'whi' then redis.call('SADD', K[2 * nrows + i], key) end
      res[i] = 1
    elseif op == 'wj' or op == 'wji' then
      if ttl ~= '0' then
        redis.call('SET', key, ARGV[first], 'PX', ttl)
      else
        redis.call('SET', key, ARGV[first])
      end
      if op == 'wji' then redis.call('SADD', K[2 * nrows + i], key) end
      res[i] = 1
    else
      redis.call('SET', K[nrows + i], ver, 'PX', tombttl)
      if #op == 3 then redis.call('SREM', K[2 * nrows + i], key) end
      res[i] = 2
    end
  end
  return res
end
if compact then
  for i = start, nrows do
    local err = checked(i, pop, string.sub(pvers, (i - 1) * 28 + 1, i * 28), pttl, 6 + i, 6 + i)
    if err then return redis.error_reply(err) end
  end
  return res
end
for i = 1, nrows do
  local op, ver, ttl, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local first, last = a + 4, a + 3 + n
  a = last + 1
  local err = checked(i, op, ver, ttl, first, last)
  if err then return redis.error_reply(err) end
end
return res
`

var script = redis.NewScript(applyScript)

// nodeScript is applyScript for a call of rows of many slots of one cluster master: its keys are passed at the
// end of ARGV, followed by their number, and KEYS holds one of them to route the call (see SlotMap).
var nodeScript = redis.NewScript(nodeApplyScript)

const nodeApplyScript = "#!lua flags=allow-cross-slot-keys\n" + applyScript

// Script results per row.
const (
	resSkipped = 0
	resWritten = 1
	resDeleted = 2
)

// argBytes passes bytes to go-redis by pointer: go-redis writes an encoding.BinaryMarshaler as its bytes, and a
// pointer fits in an interface without the heap copy that boxing a []byte (or a string) makes. The sink passes
// each row's values and version this way, and its keys as *string: boxing them was most of its allocations per row.
type argBytes []byte

func (b *argBytes) MarshalBinary() ([]byte, error) { return *b, nil }

// opcodes are the script's operation codes, boxed once: [delete][json][key index]; payloadOps those of a hash row
// written as a RESTORE payload: [key index].
var (
	opcodes    = [2][2][2]any{{{"wh", "whi"}, {"wj", "wji"}}, {{"dh", "dhi"}, {"dj", "dji"}}}
	payloadOps = [2]any{"wp", "wpi"}
)

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// buildCall renders the EVALSHA command of one script call over ops[call[0]], ops[call[1]], ...: the script's
// hash, KEYS and ARGV. seen is scratch space for finding repeated keys.
func (s *Sink) buildCall(ops []op, call []int32, seen map[string]struct{}) []any {
	if s.compactCall(ops, call) {
		return s.buildCompactCall(ops, call, seen)
	}
	stride := 2
	nvals := 0
	for _, k := range call {
		if ops[k].ts.keyIndex {
			stride = 3
		}
		nvals += len(ops[k].row)
	}
	n := len(call)
	keys := make([]string, stride*n)
	vals := make([]argBytes, 0, 2*n+nvals) // versions, values and payloads; never grown, so pointers into it stay put
	var payloads []byte                    // the payloads' bytes, sized for all of them (payloadBound)
	restore := s.restoreOK()
	verText := make([]byte, 0, n*change.VersionLen)
	args := make([]any, 3+stride*n, 3+stride*n+3+4*n+2*nvals)
	args[0], args[1], args[2] = "evalsha", script.Hash(), stride*n
	argv := len(args)
	args = append(args, s.tombTTLArg, stride, "f")
	clear(seen)
	for i, k := range call {
		o := &ops[k]
		ts := o.ts
		if _, dup := seen[o.key]; dup {
			args[argv+2] = "c"
		}
		seen[o.key] = struct{}{}
		tomb := tombstoneKey(o.key, int(o.slot))
		keys[i], keys[n+i] = o.key, tomb
		if stride == 3 {
			if ts.keyIndex {
				keys[2*n+i] = s.indexKey(ts, int(o.slot))
			} else {
				keys[2*n+i] = tomb // a placeholder in the row's slot
			}
		}
		from := len(verText)
		verText = o.ver.AppendText(verText)
		vals = append(vals, verText[from:len(verText):len(verText)])
		ver := &vals[len(vals)-1]
		opcode := opcodes[b2i(o.row == nil)][b2i(ts.format == FormatJSON)][b2i(ts.keyIndex)]
		switch {
		case o.row == nil:
			args = append(args, opcode, ver, 0, 0)
		case ts.format == FormatJSON:
			args = append(args, opcode, ver, ts.ttlArg, 1, appendJSON(nil, ts.table.Columns, o.row, o.ver))
		case restore:
			if payloads == nil {
				size := 0
				for _, k := range call[i:] {
					if o := &ops[k]; o.row != nil {
						size += payloadBound(o.ts.table.Columns, o.row)
					}
				}
				payloads = make([]byte, 0, size)
			}
			from := len(payloads)
			payloads = appendRowPayload(payloads, *ver, ts.table.Columns, o.row)
			vals = append(vals, payloads[from:len(payloads):len(payloads)])
			args = append(args, payloadOps[b2i(ts.keyIndex)], ver, ts.ttlArg, 1, &vals[len(vals)-1])
		default:
			n := 0
			for _, v := range o.row {
				if v != nil {
					n++
				}
			}
			args = append(args, opcode, ver, ts.ttlArg, 2*n)
			for c, v := range o.row {
				if v != nil {
					vals = append(vals, v)
					args = append(args, ts.fields[c], &vals[len(vals)-1])
				}
			}
		}
	}
	return s.putKeys(args, keys, ops, call)
}

// putKeys puts the keys of call into args, an EVALSHA with room for them as KEYS after args[2]. A call of rows of
// several slots (on a cluster: one master's rows, see SlotMap) passes them at the end of ARGV instead, followed by
// their number, to nodeScript, and declares only the first.
func (s *Sink) putKeys(args []any, keys []string, ops []op, call []int32) []any {
	if !s.spansSlots(ops, call) {
		args[3] = keys[0] // as a string: go-redis routes a call on a cluster by it
		for j := 1; j < len(keys); j++ {
			args[3+j] = &keys[j]
		}
		return args
	}
	argv := args[3+len(keys):]
	out := make([]any, 0, 5+len(argv)+len(keys))
	out = append(out, "evalsha", nodeScript.Hash(), 1, keys[0])
	out = append(out, argv...)
	for j := range keys {
		out = append(out, &keys[j])
	}
	return append(out, len(keys))
}

// spansSlots reports whether call holds rows of several cluster slots.
func (s *Sink) spansSlots(ops []op, call []int32) bool {
	if !s.cluster {
		return false
	}
	for _, k := range call[1:] {
		if ops[k].slot != ops[call[0]].slot {
			return true
		}
	}
	return false
}

// bySlot splits call into calls of one slot each, every key's rows in their order.
func bySlot(ops []op, call []int32) [][]int32 {
	var out [][]int32
	at := map[uint16]int{}
	for _, k := range call {
		i, ok := at[ops[k].slot]
		if !ok {
			i = len(out)
			at[ops[k].slot] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], k)
	}
	return out
}

// The script slices the versions of a compact call at 28 characters.
var _ = [1]struct{}{}[change.VersionLen-28]

// compactCall reports whether the rows of call can go in a compact call: all written as RESTORE payloads, with
// one TTL and one key-index setting.
func (s *Sink) compactCall(ops []op, call []int32) bool {
	if len(call) == 0 || !s.restoreOK() {
		return false
	}
	first := ops[call[0]].ts
	for _, k := range call {
		o := &ops[k]
		if o.row == nil || o.ts.format == FormatJSON || o.ts.ttl != first.ttl || o.ts.keyIndex != first.keyIndex {
			return false
		}
	}
	return true
}

// buildCompactCall renders a compact call (see applyScript) over ops[call[0]], ops[call[1]], ...
func (s *Sink) buildCompactCall(ops []op, call []int32, seen map[string]struct{}) []any {
	n := len(call)
	first := ops[call[0]].ts
	stride := 2
	if first.keyIndex {
		stride = 3
	}
	keys := make([]string, stride*n)
	vals := make([]argBytes, 0, n+1) // payloads, then the versions; never grown, so pointers into it stay put
	size := 0
	for _, k := range call {
		size += payloadBound(ops[k].ts.table.Columns, ops[k].row)
	}
	payloads := make([]byte, 0, size) // one allocation: appending never copies the payloads before
	verText := make([]byte, 0, n*change.VersionLen)
	args := make([]any, 3+stride*n, 3+stride*n+6+n)
	args[0], args[1], args[2] = "evalsha", script.Hash(), stride*n
	argv := len(args)
	args = append(args, s.tombTTLArg, stride, "f", "P", first.ttlArg, nil)
	clear(seen)
	for i, k := range call {
		o := &ops[k]
		if _, dup := seen[o.key]; dup {
			args[argv+2] = "c"
		}
		seen[o.key] = struct{}{}
		keys[i], keys[n+i] = o.key, tombstoneKey(o.key, int(o.slot))
		if stride == 3 {
			keys[2*n+i] = s.indexKey(o.ts, int(o.slot))
		}
		from := len(verText)
		verText = o.ver.AppendText(verText)
		pf := len(payloads)
		payloads = appendRowPayload(payloads, verText[from:], o.ts.table.Columns, o.row)
		vals = append(vals, payloads[pf:len(payloads):len(payloads)])
		args = append(args, &vals[len(vals)-1])
	}
	vals = append(vals, verText)
	args[argv+5] = &vals[len(vals)-1]
	return s.putKeys(args, keys, ops, call)
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
