package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/sink"
)

// keysPerCall bounds the keys of one digest script call, so one call of usual rows blocks Redis for about a
// millisecond.
const keysPerCall = 200

// A digest script call runs alone in Redis and reads every field of its rows, so rows of a megabyte take about
// 10 ms each. The calls of a table are sized from the time per key its calls took (table.keyCost): at most
// callTime each, in pipelines of at most pipelineTime, well inside the client's read timeout. Before the first
// call of a table its rows' size is unknown, so that call has firstCallKeys keys.
const (
	callTime      = 10 * time.Millisecond
	pipelineTime  = 250 * time.Millisecond
	firstCallKeys = 16
)

// redisSide computes digests and reads rows in Redis.
type redisSide struct {
	rdb     redis.UniversalClient
	cluster bool
	slots   sink.SlotMap // on a cluster, so that a call can hold keys of every slot of one master
	pull    *puller      // set when full passes hash rows in the reconciler (Config.HashRows)
}

// callKeys is the keys of a digest call whose keys cost cost each in Redis.
func callKeys(cost time.Duration) int {
	return int(min(max(callTime/max(cost, 1), 1), keysPerCall))
}

// replan plans the keys of calls again, in calls of at most perCall keys.
func (r *redisSide) replan(calls []call, rows, probes []string, perCall int, owners []uint16) []call {
	var ri, pi []int // indexes into rows and probes
	for _, c := range calls {
		ri = append(ri, c.rows...)
		pi = append(pi, c.probes...)
	}
	sr, sp := make([]string, len(ri)), make([]string, len(pi))
	for i, k := range ri {
		sr[i] = rows[k]
	}
	for i, k := range pi {
		sp[i] = probes[k]
	}
	out := r.plan(sr, sp, perCall, owners)
	for _, c := range out {
		for i := range c.rows {
			c.rows[i] = ri[c.rows[i]]
		}
		for i := range c.probes {
			c.probes[i] = pi[c.probes[i]]
		}
	}
	return out
}

// call is one script call: row keys then probe keys; on a cluster, all of one master (keys passed to nodeDigest)
// or of one slot.
type call struct {
	rows, probes []int // indexes into the caller's key lists
}

func (c call) keys() int { return len(c.rows) + len(c.probes) }

// plan splits rows and probes into calls of at most perCall keys; on a cluster, one master's keys per call when
// owners maps the slots to masters, else one slot's.
func (r *redisSide) plan(rows, probes []string, perCall int, owners []uint16) []call {
	keysPerCall := perCall
	if !r.cluster {
		var calls []call
		i, j := 0, 0
		for i < len(rows) || j < len(probes) {
			var c call
			for ; i < len(rows) && len(c.rows) < keysPerCall; i++ {
				c.rows = append(c.rows, i)
			}
			for ; j < len(probes) && len(c.rows)+len(c.probes) < keysPerCall; j++ {
				c.probes = append(c.probes, j)
			}
			calls = append(calls, c)
		}
		return calls
	}
	var out []call
	open := map[int]int{} // slot or master -> index in out of the call being filled
	add := func(key string, f func(c *call)) {
		s := sink.Slot(key)
		if owners != nil {
			s = int(owners[s])
		}
		i, ok := open[s]
		if !ok || len(out[i].rows)+len(out[i].probes) >= keysPerCall {
			out = append(out, call{})
			i = len(out) - 1
			open[s] = i
		}
		f(&out[i])
	}
	for i, k := range rows {
		add(k, func(c *call) { c.rows = append(c.rows, i) })
	}
	for j, k := range probes {
		add(k, func(c *call) { c.probes = append(c.probes, j) })
	}
	return out
}

func scriptArgs(tb *table, cached bool, nrows int) []any {
	args := make([]any, 0, 4+2*len(tb.cols))
	mode, f := "f", "h"
	if cached {
		mode = "c"
	}
	if tb.opts.Format == sink.FormatJSON {
		f = "j"
	}
	args = append(args, mode, f, nrows, len(tb.cols))
	for _, c := range tb.t.Columns {
		args = append(args, c)
	}
	for i := range tb.cols {
		switch {
		case tb.cols[i].kind == kindFloat:
			args = append(args, "f")
		case tb.cols[i].numeric:
			args = append(args, "n")
		default:
			args = append(args, "s")
		}
	}
	return args
}

// errNodeCall is a call of one master's keys that failed (a slot moved, or Redis refused nodeDigest): the caller
// calls again by slot.
type errNodeCall struct {
	err     error
	loading bool // loading the script failed
}

func (e *errNodeCall) Error() string { return e.err.Error() }
func (e *errNodeCall) Unwrap() error { return e.err }

// run executes the digest script for every call in one pipeline, loading the script once if Redis lost it. With
// byNode, each call holds keys of one cluster master (nodeDigest); any failure is then an *errNodeCall.
func (r *redisSide) run(ctx context.Context, tb *table, cached bool, calls []call, rows, probes []string, byNode bool) ([][]any, error) {
	script := digest
	if byNode {
		script = nodeDigest
	}
	for attempt := 0; ; attempt++ {
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, c := range calls {
			keys := make([]string, 0, len(c.rows)+len(c.probes))
			for _, k := range c.rows {
				keys = append(keys, rows[k])
			}
			for _, k := range c.probes {
				keys = append(keys, probes[k])
			}
			args := scriptArgs(tb, cached, len(c.rows))
			if byNode {
				for _, k := range keys {
					args = append(args, k)
				}
				keys = keys[:1] // routes the call
			}
			cmds[i] = pipe.EvalSha(ctx, script.Hash(), keys, args...)
		}
		_, _ = pipe.Exec(ctx) // each command's result is checked below
		out := make([][]any, len(calls))
		noScript := false
		var firstErr error
		for i, cmd := range cmds {
			res, err := cmd.Slice()
			if err != nil {
				if redis.HasErrorPrefix(err, "NOSCRIPT") {
					noScript = true
				} else if firstErr == nil {
					firstErr = err
				}
				continue
			}
			out[i] = res
		}
		if firstErr != nil {
			err := fmt.Errorf("computing digests of %s in Redis: %w", tb.name(), firstErr)
			if byNode {
				return nil, &errNodeCall{err: err}
			}
			return nil, err
		}
		if !noScript {
			return out, nil
		}
		if attempt > 0 {
			return nil, errors.New("computing digests in Redis: the script keeps disappearing (NOSCRIPT after loading it)")
		}
		if err := script.Load(ctx, r.rdb).Err(); err != nil { // on a cluster, into every master
			err = fmt.Errorf("loading the digest script: %w", err)
			if byNode {
				return nil, &errNodeCall{err: err, loading: true}
			}
			return nil, err
		}
	}
}

// badRowHash stands for a key that is not a row of the table's format in a range's XOR: no MySQL row hashes to
// it in practice, so the range differs and the key is looked at.
const badRowHash = uint64(0x5bad) << 32

// keyHash is one key's row hash in Redis.
type keyHash struct {
	exists bool
	bad    bool // the key holds something that is not a row of this table's format
	hash   uint64
}

// digestResult is what Redis holds for a range.
type digestResult struct {
	count  int64     // row keys that exist
	xor    uint64    // of their hashes
	hashes []keyHash // per row key
	hits   []int     // indexes into the probe keys of the ones that exist
}

// rangeDigest hashes the row keys in Redis and checks which probe keys exist.
func (r *redisSide) rangeDigest(ctx context.Context, tb *table, cached bool, rows, probes []string) (*digestResult, error) {
	if r.pull != nil && !cached && tb.opts.Format != sink.FormatJSON {
		return r.pull.digest(ctx, r.rdb, tb, rows, probes)
	}
	cost := time.Duration(tb.keyCost.Load())
	perCall := firstCallKeys
	if cost > 0 {
		perCall = callKeys(cost)
	}
	owners := r.slots.Owners(ctx, r.rdb)
	if r.cluster && owners == nil {
		// Calls of one key: while a slot migrates, Redis refuses calls of several keys of it (TRYAGAIN), and
		// go-redis (v9.23) then sends the other calls of the same pipeline that it redirected twice, at once.
		perCall = 1
	}
	calls := r.plan(rows, probes, perCall, owners)
	res := make([][]any, 0, len(calls))
	for lo := 0; lo < len(calls); {
		hi, keys := lo+1, calls[lo].keys()
		if cost > 0 {
			for hi < len(calls) && time.Duration(keys+calls[hi].keys())*cost <= pipelineTime {
				keys += calls[hi].keys()
				hi++
			}
		}
		began := time.Now()
		out, err := r.run(ctx, tb, cached, calls[lo:hi], rows, probes, owners != nil)
		var nodeErr *errNodeCall
		if errors.As(err, &nodeErr) {
			// A slot moved since the map was read, or Redis refused nodeDigest: these keys and the rest are
			// hashed in calls of one slot, which follow the cluster's redirections. (A call that got as far as
			// hashing rows only cached their hashes.)
			r.slots.Forget(nodeErr.err, nodeErr.loading)
			owners, perCall = nil, 1
			calls = append(calls[:lo], r.replan(calls[lo:], rows, probes, perCall, nil)...)
			continue
		}
		if redis.HasErrorPrefix(err, "TRYAGAIN") && perCall > 1 {
			// A slot is migrating and some keys of a call have moved: Redis refuses calls of several keys of
			// that slot until it finished. Calls of one key each are served wherever the key is (go-redis
			// follows the ASK redirection).
			perCall = 1
			calls = append(calls[:lo], r.replan(calls[lo:], rows, probes, perCall, nil)...)
			continue
		}
		if err != nil {
			return nil, err
		}
		res = append(res, out...)
		measured := time.Since(began) / time.Duration(max(keys, 1))
		tb.keyCost.Store(int64(max(measured, 1)))
		if cost == 0 && hi < len(calls) && callKeys(measured) != perCall && !(r.cluster && owners == nil) {
			// The first call of the table measured its rows: plan the rest with calls of that size.
			perCall = callKeys(measured)
			calls = append(calls[:hi], r.replan(calls[hi:], rows, probes, perCall, owners)...)
		}
		cost = time.Duration(tb.keyCost.Load())
		lo = hi
	}
	d := &digestResult{hashes: make([]keyHash, len(rows))}
	for i, c := range calls {
		rep := res[i]
		if len(rep) < 1 {
			return nil, fmt.Errorf("computing digests of %s: empty reply", tb.name())
		}
		packed, _ := rep[0].(string)
		if len(packed) != 17*len(c.rows) {
			return nil, fmt.Errorf("computing digests of %s: %d bytes of hashes for %d keys", tb.name(), len(packed), len(c.rows))
		}
		for j, k := range c.rows {
			p := packed[17*j : 17*j+17]
			switch p[0] {
			case '+':
				h, err := strconv.ParseUint(p[1:], 16, 64)
				if err != nil {
					return nil, fmt.Errorf("computing digests of %s: bad hash %q", tb.name(), p)
				}
				d.hashes[k] = keyHash{exists: true, hash: h}
				d.count++
				d.xor ^= h
			case 'E':
				d.hashes[k] = keyHash{exists: true, bad: true}
				d.count++
				d.xor ^= badRowHash
			}
		}
		for _, h := range rep[1:] {
			j, _ := h.(int64)
			if j < 1 || int(j) > len(c.probes) {
				return nil, fmt.Errorf("computing digests of %s: probe index %d out of range", tb.name(), j)
			}
			d.hits = append(d.hits, c.probes[j-1])
		}
	}
	sort.Ints(d.hits)
	return d, nil
}

// stored is what Redis holds under a row key, read for a final decision.
type stored struct {
	exists bool
	bad    bool              // not a row of the table's format (wrong type, undecodable document)
	fields map[string]string // metadata removed
	ver    string            // "_v", "" when none
	tomb   string            // the tombstone's version when the key does not exist, "" when none
}

// read reads keys and, for the ones that do not exist, their tombstones.
func (r *redisSide) read(ctx context.Context, tb *table, keys []string) ([]stored, error) {
	out := make([]stored, len(keys))
	pipe := r.rdb.Pipeline()
	cmds := make([]redis.Cmder, len(keys))
	tombs := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		if tb.opts.Format == sink.FormatJSON {
			cmds[i] = pipe.Get(ctx, k)
		} else {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		tombs[i] = pipe.Get(ctx, sink.TombstoneKey(k))
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		s := &out[i]
		switch c := cmd.(type) {
		case *redis.MapStringStringCmd:
			m, err := c.Result()
			switch {
			case redis.HasErrorPrefix(err, "WRONGTYPE"):
				s.exists, s.bad = true, true
			case err != nil:
				return nil, fmt.Errorf("reading %s key %q: %w", tb.name(), keys[i], err)
			case len(m) > 0:
				s.exists = true
				s.fields = m
			}
		case *redis.StringCmd:
			doc, err := c.Result()
			switch {
			case errors.Is(err, redis.Nil):
			case redis.HasErrorPrefix(err, "WRONGTYPE"):
				s.exists, s.bad = true, true
			case err != nil:
				return nil, fmt.Errorf("reading %s key %q: %w", tb.name(), keys[i], err)
			default:
				s.exists = true
				m, err := decodeJSONRow(doc)
				if err != nil {
					s.bad = true
				}
				s.fields = m
			}
		}
		if s.exists && !s.bad {
			s.ver = s.fields["_v"]
			for f := range s.fields {
				if strings.HasPrefix(f, "_") {
					delete(s.fields, f)
				}
			}
		}
		if !s.exists {
			t, err := tombs[i].Result()
			if err != nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "WRONGTYPE") {
				return nil, fmt.Errorf("reading the tombstone of %s key %q: %w", tb.name(), keys[i], err)
			}
			s.tomb = t
		}
	}
	return out, nil
}
