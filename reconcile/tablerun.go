package reconcile

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/sink"
)

// fetchBatch bounds the primary keys of one IN (...) query.
const fetchBatch = 500

// chunk is one primary-key range: (lower, upper], upper nil for the table's last range.
type chunk struct {
	seq          int
	lower, upper [][]byte
	last         bool
	// From the MySQL digest query (no snapshot): the range's rows, their keys and digest.
	pks   [][][]byte
	keys  []string
	count int64
	xor   uint64
	// hashes are the rows' MySQL hashes, in key order, when the digest query listed them (see tableRun.differing);
	// nil otherwise.
	hashes []uint64
	// probes are keys of integer primary keys between and around the rows, where an orphan would live.
	probes []string
	// From the Redis digest.
	redis *digestResult
}

// cand is a row that differed at a snapshot: want is the MySQL row (nil: no row, the key is an orphan).
type cand struct {
	key  string
	want change.Row
}

// settleItem is the differences of one range, waiting for the stream to reach its snapshot.
type settleItem struct {
	c     *chunk // nil for --scan-orphans batches
	snap  snapshot
	cands []cand
}

// tableRun is the pass over one table.
type tableRun struct {
	r        *Reconciler
	tb       *table
	st       *stateStore
	opts     PassOptions
	epoch    uint16
	dry      bool
	progress *Progress

	mu       sync.Mutex // guards what follows
	rep      *TableReport
	found    map[string]int64 // drift found and repaired in this run, for the metrics
	repaired map[string]int64
	next     int            // the first range not finished
	finished map[int]*chunk // finished ranges after next
	doneUpTo [][]byte       // every row up to this key is reconciled
	saved    time.Time      // when progress was last saved
	stalled  bool           // the stream did not move during a whole settle wait: stop waiting for it
	// differing is whether the range compared last differed. While it is set, the digest queries also list each
	// row's hash, so that fix need not hash the range in MySQL a second time (under drift spread over the whole
	// table, every range differs; without drift, none does).
	differing atomic.Bool
	slotKeys  []int64 // with a key index: row keys found in Redis, by slot
	// probed is the span of integer keys [lo, hi] every one of which was compared or probed in this run (set by
	// the digest producer, read after it ends); an orphan SCAN need not look up keys inside it in MySQL.
	probed struct {
		lo, hi      int64
		set, broken bool
	}

	cbMu sync.Mutex // serializes opts.Progress calls
}

// comparers is the number of ranges whose Redis side is read at once, while the next MySQL range is read. Three
// keep both Redis and the reconciler busy on two cores: each range's reads are pipelined, and a third range fills
// the gaps when the other two wait for MySQL or hash rows (a full 1,000,000-row pass with pipelined reads: 3.39 s
// with two, 3.17 s with three; BENCHMARKS.md, nineteenth session).
const comparers = 3

func (tr *tableRun) run(ctx context.Context, after [][]byte) error {
	tr.found, tr.repaired, tr.finished = map[string]int64{}, map[string]int64{}, map[int]*chunk{}
	tr.doneUpTo = after
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	reader, err := dial(ctx, tr.r.cfg.MySQL, &tr.r.mysqlN)
	if err != nil {
		return err
	}
	defer reader.close()
	fixer, err := dial(ctx, tr.r.cfg.MySQL, &tr.r.mysqlN)
	if err != nil {
		return err
	}
	defer fixer.close()

	var ahead *scanAhead
	if after == nil && tr.wantsScan() {
		if ahead, err = tr.startScanAhead(ctx, reader); err != nil {
			return err
		}
		if ahead != nil {
			defer func() { cancel(); <-ahead.done }()
		}
	}

	chunks := make(chan *chunk, 4)
	diffs := make(chan *chunk, 16)
	items := make(chan *settleItem, 16)
	var wg, cmp sync.WaitGroup
	wg.Go(func() {
		defer close(chunks)
		if err := tr.produce(ctx, reader, after, chunks); err != nil {
			fail(err)
		}
	})
	for range comparers {
		cmp.Go(func() {
			for c := range chunks {
				equal, err := tr.compare(ctx, c)
				if err != nil {
					fail(err)
					return
				}
				if equal {
					tr.finish(ctx, c)
					continue
				}
				select {
				case diffs <- c:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Go(func() { cmp.Wait(); close(diffs) })
	wg.Go(func() {
		defer close(items)
		for c := range diffs {
			it, err := tr.fix(ctx, fixer, c)
			if err != nil {
				fail(err)
				return
			}
			select {
			case items <- it:
			case <-ctx.Done():
				return
			}
		}
	})
	wg.Go(func() {
		for it := range items {
			if err := tr.settle(ctx, it); err != nil {
				fail(err)
				return
			}
			tr.finish(ctx, it.c)
		}
	})
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if tr.tb.opts.KeyIndex {
		if err := tr.indexOrphans(ctx, fixer); err != nil {
			return err
		}
	}
	if ahead != nil {
		done, err := ahead.finish(ctx, tr, fixer)
		if err != nil || done {
			return err
		}
	}
	if tr.wantsScan() {
		if err := tr.scanOrphans(ctx, fixer); err != nil {
			return err
		}
	}
	return nil
}

// chunkQuery is the digest query of the n rows after lower: count, xor of the row hashes and the list of their
// primary keys, computed in MySQL (the derived table is materialized, so each row is hashed once). (Listing every
// row's hash and XORing them in the reconciler cost MariaDB 7 % less, but the digest is then no longer MySQL's,
// and the hashes cross the network: 16 bytes a row.)
func (tr *tableRun) chunkQuery(lower [][]byte, n int, withHashes bool) (string, error) {
	tb := tr.tb
	cond, err := tb.after(lower)
	if err != nil {
		return "", err
	}
	aliases := ""
	inner := ""
	for i, c := range tb.t.PK {
		if i > 0 {
			aliases += ", "
		}
		a := fmt.Sprintf("__p%d", i)
		aliases += a
		inner += quoteIdent(tb.cols[c].name) + " AS " + a + ", "
	}
	// The lists follow the key order. An integer key's list is sorted in Go (sortIntKeys) instead: GROUP_CONCAT's
	// ORDER BY costs MariaDB a sort of every range, 15 % of the digest queries' time, and the rows arrive in
	// order from the derived table anyway.
	order := " ORDER BY " + aliases
	if tb.intPK {
		order = ""
	}
	if withHashes { // and the row hashes, 16 hex digits each, in the same order
		return fmt.Sprintf("SELECT COUNT(*), IFNULL(BIT_XOR(CAST(CONV(__x, 16, 10) AS UNSIGNED)), 0), "+
			"GROUP_CONCAT(__k%s SEPARATOR ','), GROUP_CONCAT(__x%s SEPARATOR '') FROM "+
			"(SELECT %s%s AS __k, %s AS __x FROM %s WHERE %s ORDER BY %s LIMIT %d) AS __c",
			order, order, inner, tb.pkKeyExpr(), tb.rowHashExpr(), tb.quoted, cond, tb.pkOrder(), n), nil
	}
	return fmt.Sprintf("SELECT COUNT(*), IFNULL(BIT_XOR(__h), 0), GROUP_CONCAT(__k%s SEPARATOR ',') FROM "+
		"(SELECT %s%s AS __k, CAST(CONV(%s, 16, 10) AS UNSIGNED) AS __h FROM %s WHERE %s ORDER BY %s LIMIT %d) AS __c",
		order, inner, tb.pkKeyExpr(), tb.rowHashExpr(), tb.quoted, cond, tb.pkOrder(), n), nil
}

// sortIntKeys puts the keys of a range of an integer primary key in order (and hashes, when not nil, with them),
// when the digest query listed them otherwise.
func sortIntKeys(pks [][][]byte, hashes []uint64) {
	less := func(i, j int) bool { return cmpIntText(pks[i][0], pks[j][0]) < 0 }
	sorted := true
	for i := 1; i < len(pks) && sorted; i++ {
		sorted = !less(i, i-1)
	}
	if sorted {
		return
	}
	idx := make([]int, len(pks))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return less(idx[a], idx[b]) })
	p2 := make([][][]byte, len(pks))
	for i, j := range idx {
		p2[i] = pks[j]
	}
	copy(pks, p2)
	if hashes != nil {
		h2 := make([]uint64, len(hashes))
		for i, j := range idx {
			h2[i] = hashes[j]
		}
		copy(hashes, h2)
	}
}

// cmpIntText compares two integers in decimal text (a leading '-' for negatives, no leading zeros).
func cmpIntText(a, b []byte) int {
	na, nb := len(a) > 0 && a[0] == '-', len(b) > 0 && b[0] == '-'
	switch {
	case na && !nb:
		return -1
	case nb && !na:
		return 1
	case na && nb:
		return cmpIntText(b[1:], a[1:])
	}
	if len(a) != len(b) {
		return cmp.Compare(len(a), len(b))
	}
	return bytes.Compare(a, b)
}

// produce walks the table range by range, sizing ranges towards ChunkTarget and pacing to RateLimitRows.
func (tr *tableRun) produce(ctx context.Context, cn *conn, lower [][]byte, out chan<- *chunk) error {
	cfg := &tr.r.cfg
	n := cfg.ChunkRows
	started := time.Now()
	var rows int64
	for seq := 0; ; seq++ {
		withHashes := tr.differing.Load()
		q, err := tr.chunkQuery(lower, n, withHashes)
		if err != nil {
			return err
		}
		t0 := time.Now()
		res, err := cn.query(ctx, q)
		if err != nil {
			return fmt.Errorf("computing the digest of a range of %s: %w", tr.tb.name(), err)
		}
		took := time.Since(t0)
		cols := 3
		if withHashes {
			cols = 4
		}
		if len(res) != 1 || len(res[0]) != cols {
			return fmt.Errorf("computing the digest of a range of %s: unexpected result shape", tr.tb.name())
		}
		c := &chunk{seq: seq, lower: lower}
		if c.count, err = strconv.ParseInt(string(res[0][0]), 10, 64); err != nil {
			return fmt.Errorf("computing the digest of a range of %s: count %q: %w", tr.tb.name(), res[0][0], err)
		}
		if c.xor, err = strconv.ParseUint(string(res[0][1]), 10, 64); err != nil {
			return fmt.Errorf("computing the digest of a range of %s: digest %q: %w", tr.tb.name(), res[0][1], err)
		}
		if c.pks, err = tr.tb.decodePKList(res[0][2]); err != nil {
			return err
		}
		if int64(len(c.pks)) != c.count {
			return fmt.Errorf("computing the digest of a range of %s: %d keys listed for %d rows (is group_concat_max_len capped?)",
				tr.tb.name(), len(c.pks), c.count)
		}
		if withHashes {
			if c.hashes, err = parseHashList(res[0][3], len(c.pks)); err != nil {
				return fmt.Errorf("computing the digest of a range of %s: %w", tr.tb.name(), err)
			}
		}
		if tr.tb.intPK {
			sortIntKeys(c.pks, c.hashes)
		}
		if c.keys, err = tr.tb.keys(cfg.Sink, c.pks); err != nil {
			return err
		}
		c.last = c.count < int64(n)
		if !c.last {
			c.upper = c.pks[len(c.pks)-1]
		}
		if tr.tb.intPK {
			if c.probes, err = tr.probes(c, n); err != nil {
				return err
			}
		}
		select {
		case out <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.last {
			return nil
		}
		lower = c.upper

		if took > 0 {
			f := min(max(float64(cfg.ChunkTarget)/float64(took), 0.5), 2)
			n = min(max(int(float64(n)*f), minChunkRows), maxChunkRows)
		}
		if cfg.RateLimitRows > 0 {
			rows += c.count
			want := time.Duration(float64(rows) / float64(cfg.RateLimitRows) * float64(time.Second))
			if wait := want - time.Since(started); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				}
			}
		}
	}
}

// probes lists the keys of the integers in the range that have no row: where the keys of rows deleted without
// the stream noticing would be. The first range also covers a margin below its first row, the last one a margin
// above its last row. At most max(n, 1000) keys per range are probed.
func (tr *tableRun) probes(c *chunk, n int) ([]string, error) {
	ints := make([]int64, len(c.pks))
	for i, pk := range c.pks {
		v, err := strconv.ParseInt(string(pk[0]), 10, 64)
		if err != nil {
			return nil, nil // beyond int64: no probing
		}
		ints[i] = v
	}
	margin := int64(max(n, 100))
	var lo, hi int64
	switch {
	case c.lower != nil:
		v, err := strconv.ParseInt(string(c.lower[0]), 10, 64)
		if err != nil {
			return nil, nil
		}
		lo = v + 1
	case len(ints) > 0:
		lo = ints[0] - margin
		if ints[0] >= 0 {
			lo = max(lo, 0)
		}
	default:
		lo = 0
	}
	switch {
	case !c.last:
		hi = ints[len(ints)-1]
	case len(ints) > 0:
		hi = ints[len(ints)-1] + margin
	default:
		hi = lo + margin
	}
	budget := max(n, 1000)
	var keys []string
	j := 0
	v := lo
	defer func() { tr.noteProbed(lo, v-1, hi) }()
	for ; v <= hi && len(keys) < budget; v++ {
		for j < len(ints) && ints[j] < v {
			j++
		}
		if j < len(ints) && ints[j] == v {
			continue
		}
		k, err := tr.tb.key(tr.r.cfg.Sink, [][]byte{strconv.AppendInt(nil, v, 10)})
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
		if v == hi { // no overflow past MaxInt64
			v = hi + 1 // for noteProbed; wraps only where hi is MaxInt64, which breaks the span
			break
		}
	}
	return keys, nil
}

// noteProbed extends the probed span by a range's [lo, upTo], of which [lo, hi] was to be probed: a range probed
// only in part (its budget ran out), or not adjoining the span, breaks it.
func (tr *tableRun) noteProbed(lo, upTo, hi int64) {
	p := &tr.probed
	switch {
	case p.broken:
	case upTo < hi || upTo < lo-1:
		p.broken = true
	case !p.set:
		p.lo, p.hi, p.set = lo, upTo, true
	case lo != p.hi+1:
		p.broken = true
	default:
		p.hi = upTo
	}
}

// probedSpan returns the span of integer keys compared or probed in this run; ok is false when there is none.
func (tr *tableRun) probedSpan() (lo, hi int64, ok bool) {
	p := &tr.probed
	return p.lo, p.hi, p.set && !p.broken
}

// compare computes the range's digest in Redis and reports whether it matches MySQL's and no probe key exists.
func (tr *tableRun) compare(ctx context.Context, c *chunk) (bool, error) {
	d, err := tr.r.redis.rangeDigest(ctx, tr.tb, tr.opts.Cached, c.keys, c.probes)
	if err != nil {
		return false, err
	}
	c.redis = d
	tr.countIndexed(c, d)
	equal := d.count == c.count && d.xor == c.xor && len(d.hits) == 0
	tr.differing.Store(!equal)
	tr.mu.Lock()
	tr.rep.Ranges++
	tr.rep.Rows += c.count
	if !equal {
		tr.rep.RangesDiffered++
	}
	tr.mu.Unlock()
	return equal, nil
}

// fix finds the rows that differ in a range, at a consistent snapshot: each row's hash in MySQL against its hash in
// Redis from the range's digest, then the full MySQL rows of the keys that differ. The Redis hashes are older
// than the snapshot; settle reads the keys again before deciding anything.
func (tr *tableRun) fix(ctx context.Context, cn *conn, c *chunk) (*settleItem, error) {
	tb := tr.tb
	snap, err := cn.begin(ctx, tr.r.cfg.DB, tr.r.cfg.Flavor, tr.epoch)
	if err != nil {
		return nil, err
	}
	lo, err := tb.after(c.lower)
	if err != nil {
		return nil, err
	}
	hi, err := tb.upTo(c.upper)
	if err != nil {
		return nil, err
	}
	cond := lo + " AND " + hi
	it := &settleItem{c: c, snap: snap}
	addRows := func(rows [][][]byte) error {
		for _, vals := range rows {
			row, err := tb.render(vals)
			if err != nil {
				return err
			}
			k, err := tb.key(tr.r.cfg.Sink, tb.pkOf(row))
			if err != nil {
				return err
			}
			it.cands = append(it.cands, cand{key: k, want: row})
		}
		return nil
	}

	if c.redis.count == 0 && len(c.redis.hits) == 0 {
		// Nothing of the range is in Redis (an initial load, or after FLUSHDB): every row is missing.
		rows, err := cn.query(ctx, "SELECT "+tb.rowSelect()+" FROM "+tb.quoted+" WHERE "+cond+" ORDER BY "+tb.pkOrder())
		if err != nil {
			return nil, fmt.Errorf("reading rows of %s: %w", tb.name(), err)
		}
		if err := addRows(rows); err != nil {
			return nil, err
		}
		return it, cn.commit(ctx)
	}

	if c.hashes != nil && len(c.redis.hits) == 0 {
		return tr.fixListed(ctx, cn, c, it, addRows)
	}

	rows, err := cn.query(ctx, "SELECT "+tb.pkSelect()+", "+tb.rowHashExpr()+" FROM "+tb.quoted+" WHERE "+cond+
		" ORDER BY "+tb.pkOrder())
	if err != nil {
		return nil, fmt.Errorf("reading row hashes of %s: %w", tb.name(), err)
	}
	inRedis := make(map[string]keyHash, len(c.keys)+len(c.redis.hits))
	for i, k := range c.keys {
		inRedis[k] = c.redis.hashes[i]
	}
	for _, h := range c.redis.hits {
		inRedis[c.probes[h]] = keyHash{exists: true, bad: true}
	}
	var fetch [][][]byte
	npk := len(tb.t.PK)
	for _, r := range rows {
		h, err := parseHash16(r[npk])
		if err != nil {
			return nil, err
		}
		k, err := tb.key(tr.r.cfg.Sink, r[:npk])
		if err != nil {
			return nil, err
		}
		got, ok := inRedis[k]
		// A row that is new since the digest (ok false) is read too: settle finds it equal if it is.
		if !ok || !got.exists || got.bad || got.hash != h {
			fetch = append(fetch, r[:npk])
		}
		delete(inRedis, k)
	}
	for k, got := range inRedis { // keys without a row at the snapshot
		if got.exists {
			it.cands = append(it.cands, cand{key: k})
		}
	}
	if err := tr.readRows(ctx, cn, fetch, addRows); err != nil {
		return nil, err
	}
	return it, cn.commit(ctx)
}

// readRows reads the full rows of the primary keys pks, fetchBatch keys per query, and hands them to add.
func (tr *tableRun) readRows(ctx context.Context, cn *conn, pks [][][]byte, add func([][][]byte) error) error {
	for i := 0; i < len(pks); i += fetchBatch {
		in, err := tr.tb.in(pks[i:min(i+fetchBatch, len(pks))])
		if err != nil {
			return err
		}
		rows, err := cn.query(ctx, "SELECT "+tr.tb.rowSelect()+" FROM "+tr.tb.quoted+" WHERE "+in)
		if err != nil {
			return fmt.Errorf("reading rows of %s: %w", tr.tb.name(), err)
		}
		if err := add(rows); err != nil {
			return err
		}
	}
	return nil
}

// fixListed is fix for a range whose digest query listed the MySQL row hashes: the keys whose hash differs from
// Redis's (or that Redis lacks) are read at the snapshot, without hashing the range again. A key whose row is gone
// at the snapshot is an orphan candidate when Redis holds it. Rows inserted after the digest query are the
// stream's, as they are for a range whose digests matched.
func (tr *tableRun) fixListed(ctx context.Context, cn *conn, c *chunk, it *settleItem, addRows func([][][]byte) error) (*settleItem, error) {
	tr.r.listedFixes.Add(1)
	var fetch []int // indexes into c.pks
	var pks [][][]byte
	for i, h := range c.hashes {
		if got := c.redis.hashes[i]; !got.exists || got.bad || got.hash != h {
			fetch = append(fetch, i)
			pks = append(pks, c.pks[i])
		}
	}
	if err := tr.readRows(ctx, cn, pks, addRows); err != nil {
		return nil, err
	}
	read := make(map[string]bool, len(it.cands))
	for _, cd := range it.cands {
		read[cd.key] = true
	}
	for _, k := range fetch {
		if !read[c.keys[k]] && c.redis.hashes[k].exists {
			it.cands = append(it.cands, cand{key: c.keys[k]})
		}
	}
	return it, cn.commit(ctx)
}

// waitStream waits until the stream has applied everything up to p. It returns false when it gave up: no
// progress within SettleTimeout, or the stream was found stalled before.
func (tr *tableRun) waitStream(ctx context.Context, p change.Position) (bool, error) {
	sp := tr.r.cfg.StreamPosition
	if sp == nil {
		return true, nil
	}
	tr.mu.Lock()
	stalled := tr.stalled
	tr.mu.Unlock()
	deadline := time.Now().Add(tr.r.cfg.SettleTimeout)
	var first change.Position
	for i := 0; ; i++ {
		cur, found, err := sp(ctx)
		if err != nil {
			return false, fmt.Errorf("reading the stream's checkpoint: %w", err)
		}
		if !found {
			return true, nil // no stream has ever run: nothing is in flight
		}
		if reached(cur, p) {
			return true, nil
		}
		if stalled || tr.r.stalledSince(cur) {
			return false, nil
		}
		if i == 0 {
			first = cur
		}
		if time.Now().After(deadline) {
			if cur == first {
				tr.mu.Lock()
				tr.stalled = true
				tr.mu.Unlock()
				tr.r.setStalled(cur)
				tr.r.log.WarnContext(ctx, "the stream's checkpoint did not move; deciding differences without it "+
					"(and, while it stays there, for the other tables without waiting)",
					slog.String("table", tr.tb.name()), slog.String("checkpoint_file", cur.File),
					slog.Uint64("checkpoint_pos", uint64(cur.Pos)))
			}
			return false, nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		}
	}
}

// stalledSince reports whether the stream's checkpoint is still where a whole settle wait saw it stand.
func (r *Reconciler) stalledSince(cur change.Position) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stalledAt != nil && *r.stalledAt == cur
}

func (r *Reconciler) setStalled(cur change.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stalledAt = &cur
}

// settle decides each difference once the stream has passed the snapshot, and repairs the drift. After the
// stream passed the snapshot, a key whose version is not newer than the snapshot has received every change
// the snapshot holds, so it must equal the snapshot's row; a newer version means the stream owns the row.
func (tr *tableRun) settle(ctx context.Context, it *settleItem) error {
	if len(it.cands) == 0 {
		return nil
	}
	tb := tr.tb
	settled, err := tr.waitStream(ctx, it.snap.settle)
	if err != nil {
		return err
	}
	keys := make([]string, len(it.cands))
	for i, c := range it.cands {
		keys[i] = c.key
	}
	got, err := tr.r.redis.read(ctx, tb, keys)
	if err != nil {
		return err
	}
	ver := it.snap.version.String()
	var (
		rep                   TableReport
		missing, stale, extra []sink.Write
		resets                []string
	)
	for i, c := range it.cands {
		s := &got[i]
		if s.ver > ver || (!s.exists && s.tomb > ver) {
			rep.InFlight++
			continue
		}
		w := sink.Write{Table: tb.t, Key: c.key, Row: c.want, Version: it.snap.version}
		switch {
		case c.want == nil:
			if !s.exists {
				continue // the stream deleted it meanwhile
			}
			rep.Extra.Found++
			extra = append(extra, w)
		case !s.exists:
			if tb.opts.TTL > 0 && !tb.opts.RestoreExpired && !tr.opts.RestoreExpired {
				rep.Expired++
				continue
			}
			rep.Missing.Found++
			missing = append(missing, w)
		case s.bad || !tb.sameRow(c.want, s.fields):
			rep.Stale.Found++
			stale = append(stale, w)
		default:
			continue // equal now: the difference was the stream's lag
		}
		tr.r.log.DebugContext(ctx, "drifted row", slog.String("table", tb.name()), slog.String("key", c.key),
			slog.Bool("mysql_row", c.want != nil), slog.Bool("redis_key", s.exists), slog.String("redis_version", s.ver),
			slog.String("snapshot", ver), slog.Bool("settled", settled))
		if !settled {
			rep.Unsettled++
		}
		if s.exists && (s.bad || s.ver == ver) || !s.exists && s.tomb == ver {
			resets = append(resets, c.key)
		}
	}
	if !tr.dry {
		if err := tr.resetKeys(ctx, resets, ver); err != nil {
			return err
		}
		for _, g := range []struct {
			ws []sink.Write
			c  *Count
		}{{missing, &rep.Missing}, {stale, &rep.Stale}, {extra, &rep.Extra}} {
			if len(g.ws) == 0 {
				continue
			}
			st, err := tr.r.cfg.Sink.Write(ctx, g.ws)
			if err != nil {
				return fmt.Errorf("repairing %s: %w", tb.name(), err)
			}
			tr.r.log.DebugContext(ctx, "repairs written", slog.String("table", tb.name()), slog.Int("rows", len(g.ws)),
				slog.String("first_key", g.ws[0].Key), slog.Bool("delete", g.ws[0].Row == nil), slog.Int("written", st.Written),
				slog.Int("deleted", st.Deleted), slog.Int("fenced", st.Skipped))
			g.c.Repaired += int64(st.Written + st.Deleted)
			rep.Fenced += int64(st.Skipped)
			rep.Refused += int64(st.DeadLettered)
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.rep.add(&rep)
	for k, c := range map[string]*Count{KindMissing: &rep.Missing, KindStale: &rep.Stale, KindExtra: &rep.Extra} {
		tr.found[k] += c.Found
		tr.repaired[k] += c.Repaired
	}
	if rep.Drift() > 0 {
		tr.r.log.InfoContext(ctx, "drift", slog.String("table", tb.name()), slog.Int64("missing", rep.Missing.Found),
			slog.Int64("extra", rep.Extra.Found), slog.Int64("stale", rep.Stale.Found), slog.Bool("dry_run", tr.dry),
			slog.String("snapshot", it.snap.version.String()))
	}
	return nil
}

// resetKeys removes keys that a repair at version ver would not replace: keys at exactly that version (written
// by an earlier repair at the same position, edited since), tombstones at exactly that version (of a row a repair
// at the same position deleted) and keys that hold another type.
func (tr *tableRun) resetKeys(ctx context.Context, keys []string, ver string) error {
	f := "h"
	if tr.tb.opts.Format == sink.FormatJSON {
		f = "j"
	}
	for _, k := range keys {
		if err := reset.Run(ctx, tr.r.cfg.Redis, []string{k, sink.TombstoneKey(k)}, ver, f).Err(); err != nil {
			return fmt.Errorf("resetting %s key %q: %w", tr.tb.name(), k, err)
		}
	}
	return nil
}

// finish records a finished range and saves the progress now and then.
func (tr *tableRun) finish(ctx context.Context, c *chunk) {
	if c == nil {
		return
	}
	tr.mu.Lock()
	tr.finished[c.seq] = c
	for {
		f, ok := tr.finished[tr.next]
		if !ok {
			break
		}
		delete(tr.finished, tr.next)
		tr.next++
		if f.upper != nil {
			tr.doneUpTo = f.upper
		}
	}
	tr.progress.Rows = tr.rep.Rows
	p := *tr.progress
	tr.mu.Unlock()
	tr.r.setProgress(&p)
	if tr.opts.Progress != nil {
		tr.cbMu.Lock()
		tr.opts.Progress(p)
		tr.cbMu.Unlock()
	}
	tr.mu.Lock()
	save := time.Since(tr.saved) > time.Second && tr.doneUpTo != nil
	var prog tableProgress
	if save {
		tr.saved = time.Now()
		prog = newTableProgress(tr.doneUpTo, tr.rep)
	}
	tr.mu.Unlock()
	if save {
		if err := tr.st.saveTable(ctx, &prog); err != nil && !errors.Is(err, context.Canceled) {
			tr.r.log.WarnContext(ctx, "saving the reconcile progress failed", slog.String("error", err.Error()))
		}
	}
}
