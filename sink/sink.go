package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
)

// ErrConfig marks a configuration error: a bad key template, a column that collides with metadata, bad options.
// Retrying does not help; the operator has to fix the configuration.
var ErrConfig = errors.New("sink configuration error")

// Defaults of Options.
const (
	DefaultLanes        = 8
	DefaultRowsPerCall  = 100
	DefaultTombstoneTTL = 24 * time.Hour
)

// Bounds of the retry backoff.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// rowsPerPipeline bounds the rows one pipeline round trip of one lane carries (a lane has one pipeline in flight
// and renders the next meanwhile), and so the memory the rendered arguments take. Smaller pipelines keep Redis
// busier, since the next is ready sooner; much smaller ones cost round trips.
const rowsPerPipeline = 512

// bytesPerCall and bytesPerPipeline bound the same by the size of the rows' values: a script call runs alone in
// Redis, so a call of RowsPerCall rows of a megabyte each would hold every other client for seconds (and outlast
// the write timeout), and a pipeline of them would hold gigabytes of arguments. A single row larger than these
// goes in a call of its own.
const (
	bytesPerCall     = 1 << 20
	bytesPerPipeline = 8 << 20
)

// TableOptions are the per-table settings.
type TableOptions struct {
	// Format is how the row is stored (default FormatHash).
	Format Format
	// KeyTemplate replaces DefaultKeyTemplate when not empty (see the package documentation).
	KeyTemplate string
	// TTL, when positive, is set on the row key on every write of the row (default 0: no expiry).
	TTL time.Duration
	// KeyIndex keeps a set of the table's row keys per cluster slot (IndexKey), so that the reconciler finds
	// orphan keys of any primary-key type without scanning the keyspace (default false).
	KeyIndex bool
}

// Options configure a Sink. The zero value is valid.
type Options struct {
	// Prefix is prepended to every row key (default "").
	Prefix string
	// Lanes is the number of pipelines run in parallel (default DefaultLanes). Changes are spread over the lanes
	// by key, so the changes of one key stay in one lane, in order.
	Lanes int
	// RowsPerCall is the number of rows one script call applies (default DefaultRowsPerCall). On a cluster a call
	// only takes rows of one slot, so calls may be smaller.
	RowsPerCall int
	// TombstoneTTL is how long a delete's tombstone is kept (default DefaultTombstoneTTL). A change older than a
	// delete that is replayed after its tombstone expired brings the row back.
	TombstoneTTL time.Duration
	// Table returns the options of a table; nil gives every table the zero TableOptions. It is called once per
	// table (per change.Table value); an error is a configuration error.
	Table func(t *change.Table) (TableOptions, error)
	// DeadLetter receives the changes that Redis refused for a reason of their own (a key holding another type,
	// for example), after the rest of the batch is applied. It is called from Apply's goroutine, in change
	// order, once per change. When nil, Apply returns such failures as an error. An error from DeadLetter is
	// returned by Apply.
	DeadLetter func(ctx context.Context, c change.Change, reason error) error
	// Logger receives retry warnings (default slog.Default()).
	Logger *slog.Logger
	// ColumnsChanged, when set, is called (under the sink's lock: it must not call the sink) when a table arrives
	// with a column list other than the one before, once per new list: an ALTER TABLE writes no row events, so the
	// rows written before it keep their old fields in Redis.
	ColumnsChanged func(table string, before, after []string)
	// OnRetry, when set, is called at each retry as it is decided, so that a metric moves while Redis is down
	// (Stats.Retries only reaches the caller once the batch is applied).
	OnRetry func()
}

// Stats counts what one Apply or Write did. A primary-key change counts one delete and one write.
type Stats struct {
	Written      int // rows written
	Deleted      int // rows deleted (tombstone written)
	Skipped      int // writes and deletes skipped by the fence: not newer than the stored version
	DeadLettered int // changes handed to Options.DeadLetter
	Retries      int // pipeline rounds retried after transport errors
}

func (s *Stats) add(o Stats) {
	s.Written += o.Written
	s.Deleted += o.Deleted
	s.Skipped += o.Skipped
	s.DeadLettered += o.DeadLettered
	s.Retries += o.Retries
}

// RowError is the failure of one row that Redis refused, such as WRONGTYPE.
type RowError struct {
	Table   string // "db.table"
	Key     string
	Version change.Version
	Err     error
}

func (e *RowError) Error() string {
	return fmt.Sprintf("applying %s key %q at version %s: %v", e.Table, e.Key, e.Version, e.Err)
}

func (e *RowError) Unwrap() error { return e.Err }

// Sink applies changes to Redis. It is safe for concurrent use. Calls (Start, Apply, Write) are ordered by when
// they began: each lane of a call sends its first pipeline only after the same lane of every earlier call has
// finished, so the changes of one row keep the order of the calls that carry them.
type Sink struct {
	rdb        redis.UniversalClient
	cluster    bool
	slots      SlotMap // on a cluster, so that a call can hold rows of every slot of one master
	opts       Options
	log        *slog.Logger
	tombTTL    int64 // milliseconds
	tombTTLArg any   // tombTTL boxed once

	chainMu sync.Mutex
	tails   []chan struct{} // per lane: closed when the lane of the latest call has finished

	mu     sync.Mutex
	tables map[string]*tableState // by Table.FullName
	// shapes holds, per table, the column lists seen (joined with NUL), to report a table's new columns once.
	shapes map[string]map[string]bool

	// noRestoreUntil is when RESTORE may be tried again after Redis refused it (dump.go), in Unix nanoseconds; 0
	// when it was never refused. Until then hash rows are written with HSET.
	noRestoreUntil atomic.Int64
}

// tableState is what a Sink derived from one change.Table.
type tableState struct {
	table  *change.Table
	format Format
	segs   []segment
	ttl    int64 // milliseconds, 0 = none
	ttlArg any   // ttl boxed once
	fields []any // Columns as script arguments, boxed once
	// keyIndex: TableOptions.KeyIndex; index caches IndexKey by slot (the lanes share it, under mu).
	keyIndex bool
	index    map[int]string
	mu       sync.Mutex
}

// indexKey returns the key-index set of ts for slot, computing it once.
func (s *Sink) indexKey(ts *tableState, slot int) string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if k, ok := ts.index[slot]; ok {
		return k
	}
	if ts.index == nil {
		ts.index = make(map[int]string)
	}
	k := IndexKey(s.opts.Prefix, ts.table, slot)
	ts.index[slot] = k
	return k
}

// New returns a Sink writing through rdb, a *redis.Client or a *redis.ClusterClient.
func New(rdb redis.UniversalClient, opts Options) (*Sink, error) {
	s := &Sink{rdb: rdb, opts: opts, log: opts.Logger, tables: make(map[string]*tableState)}
	switch rdb.(type) {
	case *redis.ClusterClient:
		s.cluster = true
	case *redis.Ring:
		return nil, fmt.Errorf("%w: a redis.Ring is not supported (use a standalone Redis or a Redis Cluster)", ErrConfig)
	}
	if opts.Lanes < 0 || opts.RowsPerCall < 0 || opts.TombstoneTTL < 0 {
		return nil, fmt.Errorf("%w: Lanes, RowsPerCall and TombstoneTTL must not be negative", ErrConfig)
	}
	if s.opts.Lanes == 0 {
		s.opts.Lanes = DefaultLanes
	}
	if s.opts.RowsPerCall == 0 {
		s.opts.RowsPerCall = DefaultRowsPerCall
	}
	if s.opts.TombstoneTTL == 0 {
		s.opts.TombstoneTTL = DefaultTombstoneTTL
	}
	s.tombTTL = max(1, s.opts.TombstoneTTL.Milliseconds())
	s.tombTTLArg = s.tombTTL
	s.tails = make([]chan struct{}, s.opts.Lanes)
	for l := range s.tails {
		s.tails[l] = make(chan struct{})
		close(s.tails[l])
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// CheckTable reports a configuration error of t (key template, metadata collisions, table options) without
// writing anything. Apply checks the same on a table's first change.
func (s *Sink) CheckTable(t *change.Table) error {
	_, err := s.table(t)
	return err
}

func (s *Sink) table(t *change.Table) (*tableState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.tables[t.FullName()]
	if prev != nil && prev.table == t {
		return prev, nil
	}
	var to TableOptions
	if s.opts.Table != nil {
		var err error
		if to, err = s.opts.Table(t); err != nil {
			return nil, fmt.Errorf("%w: options of table %s: %w", ErrConfig, t.FullName(), err)
		}
	}
	if to.Format != FormatHash && to.Format != FormatJSON {
		return nil, fmt.Errorf("%w: table %s: unknown format %v", ErrConfig, t.FullName(), to.Format)
	}
	if to.TTL < 0 {
		return nil, fmt.Errorf("%w: table %s: negative TTL %v", ErrConfig, t.FullName(), to.TTL)
	}
	seen := make(map[string]bool, len(t.Columns))
	for _, c := range t.Columns {
		if slices.Contains(metadataFields, c) {
			return nil, fmt.Errorf("%w: table %s: column %q collides with the metadata field of the same name (rename the column)",
				ErrConfig, t.FullName(), c)
		}
		if seen[c] {
			return nil, fmt.Errorf("%w: table %s: two columns are named %q", ErrConfig, t.FullName(), c)
		}
		seen[c] = true
	}
	segs, err := parseTemplate(t, to.KeyTemplate)
	if err != nil {
		return nil, err
	}
	ts := &tableState{table: t, format: to.Format, segs: segs, fields: make([]any, len(t.Columns)), keyIndex: to.KeyIndex}
	for i, c := range t.Columns {
		ts.fields[i] = c
	}
	if to.TTL > 0 {
		ts.ttl = max(1, to.TTL.Milliseconds())
	}
	ts.ttlArg = ts.ttl
	s.tables[t.FullName()] = ts
	s.noteShape(t, prev)
	return ts, nil
}

// noteShape calls Options.ColumnsChanged when t's columns differ from the ones before (prev: the table's last
// definition), once per column list: changes of both lists may interleave (Kafka partitions).
func (s *Sink) noteShape(t *change.Table, prev *tableState) {
	if s.opts.ColumnsChanged == nil {
		return
	}
	name := t.FullName()
	shape := strings.Join(t.Columns, "\x00")
	if s.shapes == nil {
		s.shapes = map[string]map[string]bool{}
	}
	seen := s.shapes[name]
	if seen == nil {
		seen = map[string]bool{}
		s.shapes[name] = seen
	}
	if seen[shape] {
		return
	}
	seen[shape] = true
	if prev != nil && !slices.Equal(prev.table.Columns, t.Columns) {
		s.opts.ColumnsChanged(name, prev.table.Columns, t.Columns)
	}
}

// Key returns the key of row of table t.
func (s *Sink) Key(t *change.Table, row change.Row) (string, error) {
	ts, err := s.table(t)
	if err != nil {
		return "", err
	}
	return renderKey(s.opts.Prefix, ts.segs, t, row)
}

// KeyFunc returns Key bound to table t, for rendering many keys of one table (the table's options are looked
// up once).
func (s *Sink) KeyFunc(t *change.Table) (func(row change.Row) (string, error), error) {
	ts, err := s.table(t)
	if err != nil {
		return nil, err
	}
	return func(row change.Row) (string, error) { return renderKey(s.opts.Prefix, ts.segs, t, row) }, nil
}

// op is one fenced operation on one key.
type op struct {
	ts   *tableState
	row  change.Row // nil deletes
	key  string
	ver  change.Version
	src  int // index of the change or Write it comes from
	slot uint16
}

func (o *op) rowError(err error) rowError {
	return rowError{src: o.src, err: &RowError{Table: o.ts.table.FullName(), Key: o.key, Version: o.ver, Err: err}}
}

type rowError struct {
	src int
	err error
}

// Apply writes changes in order (the changes of one row keep their order), retrying transport errors with
// backoff until they succeed or ctx ends. It returns when every change is applied or skipped by the fence; rows
// that Redis refuses go to Options.DeadLetter (or make Apply return an error once the rest is applied).
// A configuration error (see ErrConfig) is returned before anything is written.
func (s *Sink) Apply(ctx context.Context, changes []change.Change) (Stats, error) {
	return s.Start(ctx, changes).Wait()
}

// Pending is a call in progress (see Start).
type Pending struct {
	done  chan struct{}
	stats Stats
	err   error
}

// Done is closed when the call has finished.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait waits for the call to finish and returns what Apply would have.
func (p *Pending) Wait() (Stats, error) {
	<-p.done
	return p.stats, p.err
}

// Started runs apply in a goroutine of its own and returns its Pending: a Start for an applier that has none.
func Started(apply func() (Stats, error)) *Pending {
	p := &Pending{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.stats, p.err = apply()
	}()
	return p
}

func finished(st Stats, err error) *Pending {
	p := &Pending{done: make(chan struct{}), stats: st, err: err}
	close(p.done)
	return p
}

// Start begins to apply changes like Apply and returns without waiting. It renders the changes' keys before it
// returns, and its writes follow those of every call begun before it (row by row, in order), so a caller can
// start the next batch while this one is in flight. changes must not be modified until the call has finished.
// A batch small enough for one script call, when nothing is in flight, is applied before Start returns.
func (s *Sink) Start(ctx context.Context, changes []change.Change) *Pending {
	ops := make([]op, 0, len(changes))
	var rowErrs []rowError
	for i := range changes {
		c := &changes[i]
		ts, err := s.table(c.Table)
		if err != nil {
			return finished(Stats{}, fmt.Errorf("applying changes of %s: %w", c.Table.FullName(), err))
		}
		fail := func(key string, err error) {
			rowErrs = append(rowErrs, rowError{src: i, err: &RowError{Table: c.Table.FullName(), Key: key, Version: c.Version, Err: err}})
		}
		switch c.Op {
		case change.Insert, change.Update:
			key, err := renderKey(s.opts.Prefix, ts.segs, c.Table, c.After)
			if err != nil {
				fail("", err)
				continue
			}
			if c.Op == change.Update && c.Before != nil && !c.Table.SamePK(c.Before, c.After) {
				old, err := renderKey(s.opts.Prefix, ts.segs, c.Table, c.Before)
				if err != nil {
					fail("", err)
					continue
				}
				if old != key { // keys of different primary keys can only be equal if values contain ':'
					ops = append(ops, s.newOp(ts, nil, old, c.Version, i))
				}
			}
			ops = append(ops, s.newOp(ts, c.After, key, c.Version, i))
		case change.Delete:
			key, err := renderKey(s.opts.Prefix, ts.segs, c.Table, c.Before)
			if err != nil {
				fail("", err)
				continue
			}
			ops = append(ops, s.newOp(ts, nil, key, c.Version, i))
		default:
			fail("", fmt.Errorf("unknown operation %v", c.Op))
		}
	}
	return s.start(ctx, ops, rowErrs, func(i int) change.Change { return changes[i] })
}

// Write is one fenced operation on one row key, for callers that hold keys rather than changes (the reconciler).
type Write struct {
	Table *change.Table
	// Key is the row key, as Key returns it.
	Key string
	// Row is the row image to store; nil deletes the key (with a tombstone).
	Row     change.Row
	Version change.Version
}

// Write applies ws with the same fence, retries and dead-lettering as Apply. A Write handed to
// Options.DeadLetter appears as an Insert (Row set) or a Delete (Before = Row, possibly nil).
func (s *Sink) Write(ctx context.Context, ws []Write) (Stats, error) {
	ops := make([]op, 0, len(ws))
	for i, w := range ws {
		ts, err := s.table(w.Table)
		if err != nil {
			return Stats{}, fmt.Errorf("writing rows of %s: %w", w.Table.FullName(), err)
		}
		if w.Key == "" {
			return Stats{}, fmt.Errorf("writing rows of %s: empty key", w.Table.FullName())
		}
		if w.Row != nil && len(w.Row) != len(w.Table.Columns) {
			return Stats{}, fmt.Errorf("writing %s key %q: row has %d values, table has %d columns",
				w.Table.FullName(), w.Key, len(w.Row), len(w.Table.Columns))
		}
		ops = append(ops, s.newOp(ts, w.Row, w.Key, w.Version, i))
	}
	return s.start(ctx, ops, nil, func(i int) change.Change {
		w := ws[i]
		if w.Row == nil {
			return change.Change{Op: change.Delete, Table: w.Table, Version: w.Version}
		}
		return change.Change{Op: change.Insert, Table: w.Table, After: w.Row, Version: w.Version}
	}).Wait()
}

func (s *Sink) newOp(ts *tableState, row change.Row, key string, v change.Version, src int) op {
	return op{ts: ts, row: row, key: key, ver: v, src: src, slot: uint16(Slot(key))}
}

// laneResult is what one lane did.
type laneResult struct {
	stats   Stats
	rowErrs []rowError
	err     error
}

// laneJob is the share of one call that one lane applies: after every channel in after is closed, closing done
// when it has finished.
type laneJob struct {
	lane  int
	idx   []int32
	after []<-chan struct{}
	done  chan struct{}
}

// start applies ops over the lanes in the background, after the lanes of the calls begun before, then hands the
// refused rows to DeadLetter.
//
// A call of at most RowsPerCall rows (the usual case at a steady load) is one script call in one round trip: it
// goes on a single lane that waits for every lane of the calls before it and that every lane of the next call
// waits for. Larger calls spread their rows over the lanes by key.
func (s *Sink) start(ctx context.Context, ops []op, rowErrs []rowError, source func(int) change.Change) *Pending {
	var jobs []laneJob
	s.chainMu.Lock()
	switch {
	case len(ops) == 0:
	case len(ops) <= s.opts.RowsPerCall || s.opts.Lanes == 1:
		job := laneJob{idx: make([]int32, len(ops)), done: make(chan struct{})}
		for i := range job.idx {
			job.idx[i] = int32(i)
		}
		for l, tail := range s.tails {
			job.after = append(job.after, tail)
			s.tails[l] = job.done
		}
		jobs = append(jobs, job)
	default:
		lanes := make([][]int32, s.opts.Lanes)
		for i := range ops {
			l := s.lane(&ops[i])
			lanes[l] = append(lanes[l], int32(i))
		}
		for l, idx := range lanes {
			if len(idx) > 0 {
				job := laneJob{lane: l, idx: idx, after: []<-chan struct{}{s.tails[l]}, done: make(chan struct{})}
				s.tails[l] = job.done
				jobs = append(jobs, job)
			}
		}
	}
	s.chainMu.Unlock()
	if len(jobs) == 1 && allClosed(jobs[0].after) {
		// Nothing before it is in flight (a steady load of small batches): apply in the caller's goroutine,
		// which saves handing the batch to another goroutine and back.
		return finished(s.run(ctx, jobs, ops, rowErrs, source))
	}
	return Started(func() (Stats, error) { return s.run(ctx, jobs, ops, rowErrs, source) })
}

func allClosed(chs []<-chan struct{}) bool {
	for _, ch := range chs {
		select {
		case <-ch:
		default:
			return false
		}
	}
	return true
}

// run applies the jobs' ops, one goroutine per job when there are several.
func (s *Sink) run(ctx context.Context, jobs []laneJob, ops []op, rowErrs []rowError, source func(int) change.Change) (Stats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]laneResult, len(jobs))
	runJob := func(i int) {
		defer close(jobs[i].done)
		results[i] = s.runLane(ctx, jobs[i].lane, ops, jobs[i].idx, jobs[i].after)
		if results[i].err != nil {
			cancel() // no point in finishing the other lanes
		}
	}
	var wg sync.WaitGroup
	if len(jobs) == 1 {
		runJob(0)
	} else {
		for i := range jobs {
			wg.Go(func() { runJob(i) })
		}
	}
	wg.Wait()
	var st Stats
	var firstErr error
	for _, r := range results {
		st.add(r.stats)
		rowErrs = append(rowErrs, r.rowErrs...)
		if r.err != nil && (firstErr == nil || errors.Is(firstErr, context.Canceled)) {
			firstErr = r.err
		}
	}
	if firstErr != nil {
		return st, firstErr
	}
	if len(rowErrs) == 0 {
		return st, nil
	}
	sort.SliceStable(rowErrs, func(a, b int) bool { return rowErrs[a].src < rowErrs[b].src })
	if s.opts.DeadLetter == nil {
		return st, fmt.Errorf("%d rows refused by Redis, first: %w; the checkpoint stays before them and a restart "+
			"applies them again: remove what Redis holds in the way (a key of another type: DEL it), or set "+
			"sink.dead_letter so that such rows are set aside and the stream goes on", len(rowErrs), rowErrs[0].err)
	}
	for i := 0; i < len(rowErrs); {
		j := i + 1
		for j < len(rowErrs) && rowErrs[j].src == rowErrs[i].src {
			j++
		}
		errs := make([]error, 0, j-i)
		for _, re := range rowErrs[i:j] {
			errs = append(errs, re.err)
		}
		c := source(rowErrs[i].src)
		if err := s.opts.DeadLetter(ctx, c, errors.Join(errs...)); err != nil {
			return st, fmt.Errorf("dead-lettering change of %s at version %s: %w", c.Table.FullName(), c.Version, err)
		}
		st.DeadLettered++
		i = j
	}
	return st, nil
}

// lane picks the lane of o: by slot on a cluster (so a lane's calls can hold several rows of one slot), by a
// hash of the key otherwise. Either way one key always maps to one lane.
func (s *Sink) lane(o *op) int {
	if s.opts.Lanes == 1 {
		return 0
	}
	if s.cluster {
		return int(o.slot) % s.opts.Lanes
	}
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(o.key); i++ {
		h = (h ^ uint32(o.key[i])) * 16777619
	}
	return int(h % uint32(s.opts.Lanes))
}

// runLane applies the ops idx of one lane, pipeline after pipeline. While one pipeline is in flight the next one is
// rendered, so that Redis does not wait for the client between two pipelines of a lane; the next is sent only when
// the one before it has completed, which keeps the changes of a key in order.
func (s *Sink) runLane(ctx context.Context, lane int, ops []op, idx []int32, after []<-chan struct{}) laneResult {
	var res laneResult
	// On a cluster a call holds rows of one master (owners) or, without a map, of one slot. A stable sort keeps
	// each key's changes in order.
	var owners []uint16
	group := func(k int32) int {
		if owners != nil {
			return int(owners[ops[k].slot])
		}
		return int(ops[k].slot)
	}
	if s.cluster {
		owners = s.slots.Owners(ctx, s.rdb)
		sort.SliceStable(idx, func(a, b int) bool { return group(idx[a]) < group(idx[b]) })
	}
	var inflight chan error
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		return err
	}
	for pos := 0; pos < len(idx); {
		var calls [][]int32
		rows, bytes := 0, 0
		for pos < len(idx) && rows < rowsPerPipeline && bytes < bytesPerPipeline {
			end := pos + 1
			b := change.RowBytes(ops[idx[pos]].row)
			for end < len(idx) && end-pos < s.opts.RowsPerCall && b < bytesPerCall &&
				(!s.cluster || group(idx[end]) == group(idx[pos])) {
				b += change.RowBytes(ops[idx[end]].row)
				end++
			}
			calls = append(calls, idx[pos:end])
			rows += end - pos
			bytes += b
			pos = end
		}
		p := s.prepare(ctx, ops, calls)
		for _, ch := range after { // the lanes of the calls before this one
			select {
			case <-ch:
			case <-ctx.Done():
				res.err = fmt.Errorf("applying rows to Redis: %w", ctx.Err())
				return res
			}
		}
		after = nil
		if err := wait(); err != nil {
			res.err = err
			return res
		}
		if pos == len(idx) { // the last pipeline: no next one to render meanwhile
			if err := s.execCalls(ctx, lane, ops, p, &res); err != nil {
				res.err = err
			}
			return res
		}
		inflight = make(chan error, 1)
		go func(done chan<- error) { done <- s.execCalls(ctx, lane, ops, p, &res) }(inflight)
	}
	return res // idx was empty: the loop returns after the last pipeline
}

// prepared is a pipeline of script calls, rendered and not yet sent.
type prepared struct {
	calls [][]int32
	pipe  redis.Pipeliner
	cmds  []*redis.Cmd
}

func (s *Sink) prepare(ctx context.Context, ops []op, calls [][]int32) prepared {
	p := prepared{calls: calls, pipe: s.rdb.Pipeline(), cmds: make([]*redis.Cmd, len(calls))}
	seen := make(map[string]struct{}, s.opts.RowsPerCall)
	for i, call := range calls {
		cmd := redis.NewCmd(ctx, s.buildCall(ops, call, seen)...)
		cmd.SetFirstKeyPos(3)
		_ = p.pipe.Process(ctx, cmd) // queued; Exec runs it
		p.cmds[i] = cmd
	}
	return p
}

// execCalls runs a prepared pipeline and retries the calls that did not complete.
func (s *Sink) execCalls(ctx context.Context, lane int, ops []op, p prepared, res *laneResult) error {
	backoff := minBackoff
	reloaded := false
	calls := p.calls
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			p = s.prepare(ctx, ops, calls)
		}
		cmds := p.cmds
		_, _ = p.pipe.Exec(ctx) // every command's own result is checked below

		var failed, split [][]int32
		var lastErr error
		tryAgain := -1 // the slot of a call Redis refused with TRYAGAIN
		noScript, noRestore, transient := false, false, false
		for i, cmd := range cmds {
			replies, err := cmd.Slice()
			if err == nil {
				if err := collect(ops, calls[i], replies, res); err != nil {
					return err
				}
				continue
			}
			if ctx.Err() != nil {
				return fmt.Errorf("applying rows to Redis: %w", ctx.Err())
			}
			if s.spansSlots(ops, calls[i]) && !redis.HasErrorPrefix(err, "NOSCRIPT") {
				// A call of one master's rows met a slot its master no longer serves (resharding, failover),
				// or failed otherwise: its rows are sent again in calls of one slot, which follow the cluster's
				// redirections and retry like any call. The rows it applied before are skipped by the fence.
				s.slots.Forget(err, false)
				split = append(split, bySlot(ops, calls[i])...)
				s.log.DebugContext(ctx, "a call of a cluster master's rows failed; sending them by slot",
					slog.String("error", err.Error()))
				continue
			}
			if redis.HasErrorPrefix(err, "TRYAGAIN") {
				tryAgain = int(ops[calls[i][0]].slot)
			}
			switch {
			case redis.HasErrorPrefix(err, "NOSCRIPT"):
				noScript = true
			case redis.HasErrorPrefix(err, "NORESTORE"):
				// Redis refused a payload: a server before 7.0, or RESTORE denied by an ACL or renamed away.
				// The rows of the call before it are applied, which the fence makes harmless to send again.
				noRestore = true
				now := time.Now()
				if prev := s.noRestoreUntil.Swap(now.Add(restoreRetry).UnixNano()); prev <= now.UnixNano() {
					s.log.WarnContext(ctx, "Redis refused RESTORE; writing hash rows with HSET, and trying RESTORE again later",
						slog.String("error", strings.TrimPrefix(err.Error(), "NORESTORE ")),
						slog.Duration("retry_in", restoreRetry))
				}
			case retryable(err):
				transient = true
			default:
				o := &ops[calls[i][0]]
				return fmt.Errorf("applying %d rows to Redis (first: %s key %q at version %s): %w",
					len(calls[i]), o.ts.table.FullName(), o.key, o.ver, err)
			}
			failed = append(failed, calls[i])
			if lastErr == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") && !redis.HasErrorPrefix(err, "NORESTORE") {
				lastErr = err
			}
		}
		if len(failed) == 0 && len(split) == 0 {
			return nil
		}
		calls = append(failed, split...)
		if len(failed) == 0 {
			continue // calls of one slot instead of a master's: no failure to wait after
		}
		if noScript {
			// The script cache is empty: a new server, a restart, a failover or SCRIPT FLUSH. A call that got
			// NOSCRIPT did not run, so it is simply sent again.
			// On a cluster, ScriptLoad loads it on every shard.
			err := s.rdb.ScriptLoad(ctx, applyScript).Err()
			if err == nil && s.cluster {
				if nerr := s.rdb.ScriptLoad(ctx, nodeApplyScript).Err(); nerr != nil {
					// Redis before 7.0 does not know the flag: calls of one slot from now on.
					s.slots.Forget(nerr, true)
					var one [][]int32
					for _, c := range calls {
						one = append(one, bySlot(ops, c)...)
					}
					calls = one
				}
			}
			if err != nil {
				lastErr = fmt.Errorf("loading the apply script: %w", err)
			} else if !transient && !reloaded {
				reloaded = true
				continue // a load after NOSCRIPT is no failure: retry at once (but not twice in a row)
			}
		}
		if noRestore && !transient && !noScript {
			continue // the calls are rendered again without payloads: retry at once
		}
		reloaded = false
		// Retrying is always safe: a call that failed may or may not have run, and running it again is a no-op
		// for every row it already applied, because the fence skips writes and deletes that are not newer than
		// the stored version. Calls of the same key may thus be re-sent after later ones; the fence keeps the
		// newest version regardless of arrival order.
		if c, ok := s.rdb.(*redis.ClusterClient); ok {
			// go-redis reads the cluster's slots again only after a redirection, or once a minute: after a
			// master's failover (or its removal) the calls kept dialling the dead node for up to that minute.
			c.ReloadState(ctx)
		}
		res.stats.Retries++
		if s.opts.OnRetry != nil {
			s.opts.OnRetry()
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		attrs := []any{slog.Int("lane", lane), slog.Int("attempt", attempt), slog.Int("calls", len(failed)),
			slog.Duration("backoff", wait), slog.String("error", lastErr.Error())}
		if tryAgain >= 0 {
			// Redis refuses calls of several keys of a slot while it migrates; one left half-migrated (a failed
			// reshard) holds the writes back until it is fixed.
			attrs = append(attrs, slog.Int("slot", tryAgain),
				slog.String("fix", "the slot is migrating between masters; if this goes on, finish or undo the "+
					"migration with redis-cli --cluster fix HOST:PORT"))
		}
		s.log.WarnContext(ctx, "retrying Redis writes", attrs...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("applying rows to Redis (last error: %v): %w", lastErr, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// retryable reports whether err is a transport error or a transient server state, after which the same call may
// succeed.
func retryable(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true // connection refused or reset, timeouts, EOF, pool timeouts
	}
	for _, p := range []string{"LOADING", "BUSY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "MOVED", "ASK",
		"NOREPLICAS", "OOM", "ERR max number of clients"} {
		if strings.HasPrefix(rerr.Error(), p) {
			return true
		}
	}
	return false
}

// restoreRetry is how long the sink writes hash rows with HSET after Redis refused a RESTORE before it tries
// RESTORE again (a server upgraded in place, an ACL fixed).
var restoreRetry = 10 * time.Minute

// restoreOK reports whether hash rows may be written as RESTORE payloads (see noRestoreUntil).
func (s *Sink) restoreOK() bool {
	u := s.noRestoreUntil.Load()
	return u == 0 || time.Now().UnixNano() >= u
}
