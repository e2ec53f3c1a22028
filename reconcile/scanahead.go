package reconcile

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/sink"
)

// The orphan SCAN of a table with an integer key, on a single Redis, runs while the ranges are compared instead
// of after them: a SCAN costs Redis about 0.6 µs a key, and after the ranges it added that to the pass's time.
//
// Before the ranges start, MIN and MAX of the key give [lo, hi]. A scanned key whose value is a canonical integer
// inside it is only counted: when the pass ends with a probed span covering [lo, hi], every integer there was
// compared with its row or probed for an orphan already, which is what scanOrphans relies on to skip such keys
// too. The few other keys (outside [lo, hi], or not an integer) are kept and looked up at the end. A pass whose
// span does not cover [lo, hi] (a range ran out of probes in a huge gap of keys, or rows at the ends were deleted
// during the pass) SCANs again afterwards, as before. The keys are parsed from the reply's bytes: a key that is
// only counted allocates nothing.

// scanAheadCount is the COUNT of each SCAN call: about a millisecond of Redis time.
const scanAheadCount = "2000"

// scanAheadKept bounds the keys a scanAhead keeps; past it, it gives up and scanOrphans runs after the ranges.
var scanAheadKept = 100_000

// scanAhead is a SCAN running alongside the range comparison.
type scanAhead struct {
	lo, hi  int64
	done    chan struct{}
	err     error
	inside  int64    // canonical integer keys in [lo, hi]
	outside []string // keys of the table's pattern outside [lo, hi] or not canonical integers
	gaveUp  bool     // more than scanAheadKept keys to keep
}

// startScanAhead starts the SCAN of tb's keys when it can run alongside the ranges: a single Redis, a
// single-column integer key, a key template with one placeholder for it, and a non-empty table. Otherwise it
// returns nil, and scanOrphans runs after the ranges.
func (tr *tableRun) startScanAhead(ctx context.Context, cn *conn) (*scanAhead, error) {
	tb := tr.tb
	rdb, ok := tr.r.cfg.Redis.(*redis.Client)
	if !ok || !tb.intPK {
		return nil, nil
	}
	pat, err := parsePattern(tr.r.cfg.Prefix, tb.opts.KeyTemplate, tb)
	if err != nil {
		return nil, err
	}
	col := tb.cols[tb.t.PK[0]]
	if len(pat.names) != 1 || pat.names[0] != "pk" && pat.names[0] != col.name {
		return nil, nil
	}
	q := "SELECT MIN(" + quoteIdent(col.name) + "), MAX(" + quoteIdent(col.name) + ") FROM " + tb.quoted
	rows, err := cn.query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("reading the key bounds of %s: %w", tb.name(), err)
	}
	if len(rows) != 1 || rows[0][0] == nil || rows[0][1] == nil {
		return nil, nil // empty
	}
	s := &scanAhead{done: make(chan struct{})}
	var e1, e2 error
	s.lo, e1 = strconv.ParseInt(string(rows[0][0]), 10, 64)
	s.hi, e2 = strconv.ParseInt(string(rows[0][1]), 10, 64)
	if e1 != nil || e2 != nil {
		return nil, nil // unsigned values past int64, which probing does not cover either
	}
	go func() {
		defer close(s.done)
		s.err = s.scan(ctx, rdb.Options(), pat)
	}()
	return s, nil
}

// scan SCANs the pattern's keys over a connection of its own.
func (s *scanAhead) scan(ctx context.Context, o *redis.Options, pat *keyPattern) error {
	match := pat.glob()
	c, err := dialRaw(ctx, o)
	if err != nil {
		return fmt.Errorf("scanning %s: %w", match, err)
	}
	defer c.nc.Close()
	pre, suf := []byte(pat.lits[0]), []byte(pat.lits[1])
	tomb := []byte(sink.TombstonePrefix)
	cursor := "0"
	for {
		stop := c.watch(ctx, o)
		c.command("SCAN", cursor, "MATCH", match, "COUNT", scanAheadCount)
		err := c.wr.Flush()
		if err == nil {
			cursor, err = s.reply(c.rd, pre, suf, tomb)
		}
		stop()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("scanning %s: %w", match, err)
		}
		if len(s.outside) > scanAheadKept {
			s.gaveUp, s.outside = true, nil
			return nil
		}
		if cursor == "0" {
			return nil
		}
	}
}

// reply parses one SCAN reply, sorting its keys, and returns the next cursor.
func (s *scanAhead) reply(rb *respBuf, pre, suf, tomb []byte) (string, error) {
	typ, n, pos, err := rb.header(0)
	if err != nil {
		return "", err
	}
	if typ != '*' || n != 2 {
		return "", fmt.Errorf("unexpected reply %q", rb.text(0, pos-2))
	}
	cur, pos, err := rb.bulkAt(pos)
	if err != nil {
		return "", err
	}
	cursor := string(rb.text(cur[0], cur[1]))
	typ, n, pos, err = rb.header(pos)
	if err != nil {
		return "", err
	}
	if typ != '*' {
		return "", fmt.Errorf("unexpected reply %q", rb.text(0, pos-2))
	}
	for range n {
		var k [2]int
		if k, pos, err = rb.bulkAt(pos); err != nil {
			return "", err
		}
		key := rb.text(k[0], k[1])
		if bytes.HasPrefix(key, tomb) {
			continue
		}
		if bytes.HasPrefix(key, pre) && bytes.HasSuffix(key[len(pre):], suf) {
			if v, ok := canonicalInt(key[len(pre) : len(key)-len(suf)]); ok && v >= s.lo && v <= s.hi {
				s.inside++
				continue
			}
		}
		s.outside = append(s.outside, string(key))
	}
	rb.consume(pos)
	return cursor, nil
}

// canonicalInt parses b when it is an int64 the way MySQL prints it ("7", not "007" or "+7").
func canonicalInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 || b[0] == '0' && (len(b) > 1 || neg) {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0') // 19 digits fit in a uint64
	}
	switch {
	case !neg && u <= math.MaxInt64:
		return int64(u), true
	case neg && u <= math.MaxInt64+1:
		return -int64(u-1) - 1, true
	}
	return 0, false
}

// finish waits for the SCAN and settles its orphans. It returns false when the pass's probed span does not cover
// [lo, hi], so that the keys counted inside were not all compared or probed, or the SCAN gave up: scanOrphans
// must then run.
func (s *scanAhead) finish(ctx context.Context, tr *tableRun, cn *conn) (bool, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if s.err != nil {
		return false, fmt.Errorf("looking for orphans of %s: %w", tr.tb.name(), s.err)
	}
	if lo, hi, ok := tr.probedSpan(); s.gaveUp || !ok || lo > s.lo || hi < s.hi {
		return false, nil
	}
	tr.mu.Lock()
	tr.rep.OrphanScan += s.inside
	tr.mu.Unlock()
	pat, err := parsePattern(tr.r.cfg.Prefix, tr.tb.opts.KeyTemplate, tr.tb)
	if err != nil {
		return false, err
	}
	for lo := 0; lo < len(s.outside); lo += fetchBatch {
		if err := tr.checkOrphans(ctx, cn, pat, s.outside[lo:min(lo+fetchBatch, len(s.outside))]); err != nil {
			return false, err
		}
	}
	return true, nil
}

// wantsScan reports whether the pass SCANs the table's key pattern for orphans.
func (tr *tableRun) wantsScan() bool {
	// A full pass SCANs for keys written outside the pipeline too, unless the table's key index finds its orphans,
	// or its keys are not in binlogsync's own name space (a key template of its own may share a pattern with keys
	// other programs write: only --scan-orphans deletes there).
	tmpl := tr.tb.opts.KeyTemplate
	defaultKeys := tmpl == "" || tmpl == sink.DefaultKeyTemplate
	return tr.opts.ScanOrphans || !tr.opts.Cached && !tr.opts.NoScanOrphans && !tr.tb.opts.KeyIndex && defaultKeys
}
