package reconcile

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/sink"
	"github.com/binlogsync/binlogsync/source"
)

// ErrBusy is returned by Run while another pass of the same Reconciler runs.
var ErrBusy = errors.New("a reconcile pass is already running")

// Defaults of Config.
const (
	DefaultChunkRows     = 1000
	DefaultChunkTarget   = 50 * time.Millisecond
	DefaultSettleTimeout = 30 * time.Second
	minChunkRows         = 50
	maxChunkRows         = 100_000
)

// TableOptions are the per-table settings the reconciler needs beyond the sink's.
type TableOptions struct {
	// Columns is the table's column rule, as the source applies it (nil: every column, unrenamed).
	Columns *source.ColumnRule
	// Format is the row format (the sink's TableOptions.Format for the table).
	Format sink.Format
	// KeyTemplate is the table's key template ("" = sink.DefaultKeyTemplate); used by --scan-orphans only, the
	// keys themselves come from the sink.
	KeyTemplate string
	// TTL is the table's key TTL. With a TTL, a missing key is taken for an expired one (not drift) unless
	// RestoreExpired is set.
	TTL            time.Duration
	RestoreExpired bool
	// KeyIndex says the sink keeps the table's key index (sink.TableOptions.KeyIndex): orphans of any primary-key
	// type are then found through it on every pass.
	KeyIndex bool
}

// Config is what a Reconciler needs. MySQL, DB, Flavor, Redis and Sink are required.
type Config struct {
	// MySQL opens the reconciler's own text-protocol connections.
	MySQL MySQLConfig
	// DB serves information_schema look-ups and binlog positions.
	DB *sql.DB
	// Flavor is "mysql" or "mariadb".
	Flavor string
	Redis  redis.UniversalClient
	// Sink makes the repairs: version-fenced writes and deletes, exactly as the stream renders them.
	Sink *sink.Sink
	// Prefix is the sink's key prefix (for --scan-orphans patterns).
	Prefix string
	// Selected reports whether db.table is reconciled (nil: every table outside the system schemas).
	Selected func(db, table string) bool
	// Table returns the options of db.table (nil: zero options).
	Table func(db, table string) TableOptions
	// StreamPosition returns the stream's checkpoint: every change before it is applied to Redis. found is false
	// when the stream never ran. Nil means there is no stream (a bootstrap): nothing is in flight.
	StreamPosition func(ctx context.Context) (pos change.Position, found bool, err error)
	// Identity is the source server's identity as checkpoints record it (change.Position.ServerUUID); when the
	// checkpoint names another server the stream moves to the next epoch, and so do repairs.
	Identity string
	// ChunkRows is the starting number of rows per range (default DefaultChunkRows); ChunkTarget the time the
	// range query is resized towards (default DefaultChunkTarget).
	ChunkRows   int
	ChunkTarget time.Duration
	// RateLimitRows caps the MySQL rows read per second (0: no limit).
	RateLimitRows int
	// ReportOnly, when set, finds drift but never repairs (like PassOptions.DryRun for every pass).
	ReportOnly bool
	// DeadLetterStream is the sink's dead-letter stream (sink.dead_letter; "" = none). Each pass resolves its
	// entries from MySQL and removes the ones it resolved.
	DeadLetterStream string
	// StateKey is the Redis key of the progress and the last report ("" = no state: no resume).
	StateKey string
	// SettleTimeout bounds how long a difference waits for the stream to reach its range's snapshot
	// (default DefaultSettleTimeout).
	SettleTimeout time.Duration
	// HashRows is where a full pass hashes the rows of a single Redis (hash format): "reconciler" (the default)
	// reads them with pipelined HGETALLs and hashes them in Go, a quarter of the Redis time of "redis", a Lua
	// script that returns only digests but moves no row over the network. A cluster and the JSON format always
	// use the script.
	HashRows string
	// RedisBytes, when set, returns the bytes read from Redis so far (a counter on the client's connections).
	RedisBytes func() int64
	Logger     *slog.Logger
	// Metrics, when set, receives drift counts and pass durations.
	Metrics *Metrics
}

// Config.HashRows values.
const (
	HashRowsReconciler = "reconciler"
	HashRowsRedis      = "redis"
)

// PassOptions tune one pass.
type PassOptions struct {
	// Tables limits the pass to these "db.table" names (they must be selected); empty: every selected table.
	Tables []string
	// DryRun finds drift without repairing it.
	DryRun bool
	// ScanOrphans SCANs each table's key pattern for keys written outside the pipeline also in a Cached pass; a
	// full pass does unless NoScanOrphans.
	ScanOrphans bool
	// NoScanOrphans leaves out the SCAN of a full pass (an initial load into an empty Redis has nothing to find).
	NoScanOrphans bool
	// Restart ignores the progress of an interrupted pass.
	Restart bool
	// RestoreExpired writes the missing keys of TTL tables too (an initial load), instead of taking them for
	// expired.
	RestoreExpired bool
	// Cached lets the Redis side use the row hashes earlier passes cached in each row (field "_h"), reading only
	// rows the pipeline rewrote since. Much cheaper for Redis, but an edit outside the pipeline that keeps "_h"
	// (HSET of one field) goes unseen until a pass without Cached. Hash format only.
	Cached bool
	// Progress, when set, is called as ranges complete (from the pass's goroutines, one call at a time).
	Progress func(Progress)
}

// Progress describes a running pass.
type Progress struct {
	Table      string `json:"table"`
	TableIndex int    `json:"table_index"` // 0-based
	Tables     int    `json:"tables"`
	Rows       int64  `json:"rows"`           // rows compared in this table
	EstRows    int64  `json:"estimated_rows"` // information_schema's estimate of the table's rows
}

// Reconciler compares MySQL tables with their Redis rows and repairs the differences.
type Reconciler struct {
	cfg    Config
	log    *slog.Logger
	redis  *redisSide
	mysqlN atomic.Int64 // bytes read from MySQL by the reconciler's connections
	// listedFixes counts the ranges fixed from the row hashes their digest query listed (tableRun.fixListed).
	listedFixes atomic.Int64

	running atomic.Bool
	mu      sync.Mutex
	current *Progress
	// stalledAt is the stream checkpoint that did not move during a whole settle wait: while the checkpoint is
	// still exactly there, later tables (and passes) do not wait for it again. A stopped stream (the runbook's
	// re-derive after a lost binlog) would otherwise cost SettleTimeout per table.
	stalledAt *change.Position
}

// New checks cfg and returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.DB == nil || cfg.Redis == nil || cfg.Sink == nil {
		return nil, errors.New("reconcile: DB, Redis and Sink are required")
	}
	if cfg.Flavor != "mysql" && cfg.Flavor != "mariadb" {
		return nil, fmt.Errorf("reconcile: flavor %q (want mysql or mariadb)", cfg.Flavor)
	}
	if cfg.ChunkRows <= 0 {
		cfg.ChunkRows = DefaultChunkRows
	}
	if cfg.ChunkTarget <= 0 {
		cfg.ChunkTarget = DefaultChunkTarget
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = DefaultSettleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Table == nil {
		cfg.Table = func(string, string) TableOptions { return TableOptions{} }
	}
	switch cfg.HashRows {
	case "":
		cfg.HashRows = HashRowsReconciler
	case HashRowsReconciler, HashRowsRedis:
	default:
		return nil, fmt.Errorf("reconcile: hash_rows %q (want %s or %s)", cfg.HashRows, HashRowsReconciler, HashRowsRedis)
	}
	_, cluster := cfg.Redis.(*redis.ClusterClient)
	rs := &redisSide{rdb: cfg.Redis, cluster: cluster}
	if c, ok := cfg.Redis.(*redis.Client); ok && cfg.HashRows == HashRowsReconciler {
		rs.pull = newPuller(c.Options())
	}
	return &Reconciler{cfg: cfg, log: cfg.Logger, redis: rs}, nil
}

// Current returns the progress of the running pass, nil when none runs.
func (r *Reconciler) Current() *Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current == nil {
		return nil
	}
	p := *r.current
	return &p
}

func (r *Reconciler) setProgress(p *Progress) {
	r.mu.Lock()
	r.current = p
	r.mu.Unlock()
}

// Tables lists the selected tables ("db.table"), sorted.
func (r *Reconciler) Tables(ctx context.Context) ([]string, error) {
	rows, err := r.cfg.DB.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
		WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')`)
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var db, name string
		if err := rows.Scan(&db, &name); err != nil {
			return nil, fmt.Errorf("listing tables: %w", err)
		}
		if r.cfg.Selected == nil || r.cfg.Selected(db, name) {
			out = append(out, db+"."+name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// Run does one pass over the tables: compares every range, repairs what differs (unless DryRun or ReportOnly)
// and returns the report. It returns an error when the pass could not finish; its progress is then kept under
// StateKey and the next pass resumes from the last finished range. The report is returned even with an error,
// with what was done so far.
func (r *Reconciler) Run(ctx context.Context, opts PassOptions) (*Report, error) {
	if !r.running.CompareAndSwap(false, true) {
		return nil, ErrBusy
	}
	defer r.running.Store(false)
	defer r.setProgress(nil)
	if r.redis.pull != nil {
		defer r.redis.pull.close()
	}

	names, err := r.Tables(ctx)
	if err != nil {
		return nil, err
	}
	if len(opts.Tables) > 0 {
		selected := toSet(names)
		for _, t := range opts.Tables {
			if !selected[t] {
				return nil, fmt.Errorf("table %s is not among the selected tables (tables.include/exclude) or does not exist", t)
			}
		}
		names = append([]string(nil), opts.Tables...)
		sort.Strings(names)
	}

	st := &stateStore{rdb: r.cfg.Redis, key: r.cfg.StateKey}
	ctx, release, err := st.lock(ctx, leaseHolder())
	if err != nil {
		return nil, err
	}
	defer release()
	var ps *passState
	if !opts.Restart {
		if ps, err = st.loadPass(ctx); err != nil {
			return nil, err
		}
	}
	rep := &Report{Started: time.Now().UTC(), DryRun: opts.DryRun || r.cfg.ReportOnly, Cached: opts.Cached}
	if ps != nil {
		rep.ID, rep.Start, rep.Resumed = ps.ID, ps.Start, true
		rep.Cached, rep.DryRun = rep.Cached || ps.Cached, rep.DryRun || ps.DryRun
		r.log.InfoContext(ctx, "resuming an interrupted pass", slog.String("pass", ps.ID),
			slog.Time("started", ps.Started))
	} else {
		if err := st.clearProgress(ctx); err != nil {
			return nil, err
		}
		start, err := source.CurrentPosition(ctx, r.cfg.DB, r.cfg.Flavor)
		if err != nil {
			return nil, fmt.Errorf("reading the binlog position: %w", err)
		}
		epoch, err := r.epoch(ctx)
		if err != nil {
			return nil, err
		}
		start.Epoch = epoch
		start.ServerUUID = r.cfg.Identity
		rep.ID, rep.Start = newID(), start
		ps = &passState{ID: rep.ID, Started: rep.Started, Start: start, Cached: rep.Cached, DryRun: rep.DryRun}
		if err := st.savePass(ctx, ps); err != nil {
			return nil, err
		}
	}

	passStart := time.Now()
	for i, name := range names {
		tr, err := r.runTable(ctx, st, name, i, len(names), rep.Start.Epoch, opts)
		if tr != nil {
			rep.Tables = append(rep.Tables, *tr)
		}
		if err != nil {
			rep.Finished = time.Now().UTC()
			r.cfg.Metrics.pass(false, time.Since(passStart))
			if cause := context.Cause(ctx); errors.Is(cause, errLeaseLost) {
				err = cause
			}
			return rep, err
		}
	}
	if r.cfg.DeadLetterStream != "" {
		only := map[string]bool{}
		for _, n := range opts.Tables {
			only[n] = true
		}
		dl, err := r.resolveDeadLetters(ctx, st, rep.Start.Epoch, opts, only)
		rep.DeadLetters = dl
		if err != nil {
			rep.Finished = time.Now().UTC()
			r.cfg.Metrics.pass(false, time.Since(passStart))
			return rep, err
		}
	}
	rep.Finished = time.Now().UTC()
	r.cfg.Metrics.pass(true, time.Since(passStart))
	if err := st.finish(ctx, rep); err != nil {
		return rep, err
	}
	for i := range rep.Tables {
		t := &rep.Tables[i]
		if t.Error == "" {
			r.cfg.Metrics.verified(t.Table, rep.Finished, fullyVerifies(rep, t))
		}
	}
	return rep, nil
}

// epoch is the version epoch the stream uses now: the checkpoint's, or the next one when the checkpoint names
// another server (the stream moves to it on its next start).
func (r *Reconciler) epoch(ctx context.Context) (uint16, error) {
	if r.cfg.StreamPosition == nil {
		return 0, nil
	}
	p, found, err := r.cfg.StreamPosition(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the stream's checkpoint: %w", err)
	}
	if !found {
		return 0, nil
	}
	if p.ServerUUID != "" && r.cfg.Identity != "" && p.ServerUUID != r.cfg.Identity {
		return p.Epoch + 1, nil
	}
	return p.Epoch, nil
}

// leaseHolder names this process in the reconcile lease: host and process id.
func leaseHolder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s pid %d", host, os.Getpid())
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// runTable reconciles one table, resuming from its saved progress.
func (r *Reconciler) runTable(ctx context.Context, st *stateStore, name string, idx, total int, epoch uint16, opts PassOptions) (*TableReport, error) {
	prog, err := st.loadTable(ctx, name)
	if err != nil {
		return nil, err
	}
	if prog != nil && prog.Done {
		r.log.InfoContext(ctx, "table already reconciled by the interrupted pass", slog.String("table", name))
		return &prog.Report, nil
	}
	db, tname, _ := cut(name)
	// The signature is read before the table: an ALTER TABLE between the two leaves the older one, so the change
	// is noticed again.
	sigs, err := columnSignatures(ctx, r.cfg.DB, db, tname)
	if err != nil {
		return nil, err
	}
	tb, err := loadTable(ctx, r.cfg.DB, db, tname, r.cfg.Table(db, tname))
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			r.log.WarnContext(ctx, "skipping table", slog.String("table", name), slog.String("reason", err.Error()))
			return &TableReport{Table: name, Error: err.Error()}, nil
		}
		return nil, err
	}
	if err := r.cfg.Sink.CheckTable(tb.t); err != nil {
		return nil, fmt.Errorf("table %s: %w", name, err)
	}
	var est int64
	_ = r.cfg.DB.QueryRowContext(ctx, "SELECT IFNULL(TABLE_ROWS, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
		db, tname).Scan(&est)

	tr := &TableReport{Table: name}
	var after [][]byte
	if prog != nil {
		tr = &prog.Report
		if after, err = prog.after(); err != nil {
			return nil, err
		}
		r.log.InfoContext(ctx, "resuming table", slog.String("table", name), slog.Int64("rows_done", tr.Rows))
	}
	p := &Progress{Table: name, TableIndex: idx, Tables: total, Rows: tr.Rows, EstRows: est}
	r.setProgress(p)

	run := &tableRun{r: r, tb: tb, st: st, opts: opts, epoch: epoch, rep: tr, progress: p,
		dry: opts.DryRun || r.cfg.ReportOnly}
	started := time.Now()
	rows0, mysql0, redis0 := tr.Rows, r.mysqlN.Load(), r.redisBytes()
	err = run.run(ctx, after)
	tr.Duration += time.Since(started)
	tr.MySQLBytes += r.mysqlN.Load() - mysql0
	tr.RedisBytes += r.redisBytes() - redis0
	r.cfg.Metrics.table(name, tr.Rows-rows0, run.found, run.repaired)
	if err != nil {
		return tr, fmt.Errorf("reconciling %s: %w", name, err)
	}
	if err := st.tableDone(ctx, tr); err != nil {
		return tr, err
	}
	// The columns are recorded once the table's rows have the shape they give: not by a dry run that found drift.
	if sig := sigs[name]; sig != "" && (!run.dry || tr.Drift() == 0) {
		if err := st.set(ctx, columnsField(name), sig); err != nil {
			return tr, err
		}
	}
	r.log.InfoContext(ctx, "table reconciled", slog.String("table", name), slog.Int64("rows", tr.Rows),
		slog.Int64("ranges_differed", tr.RangesDiffered), slog.Int64("missing", tr.Missing.Found),
		slog.Int64("extra", tr.Extra.Found), slog.Int64("stale", tr.Stale.Found), slog.Duration("took", tr.Duration))
	return tr, nil
}

func (r *Reconciler) redisBytes() int64 {
	if r.cfg.RedisBytes == nil {
		return 0
	}
	return r.cfg.RedisBytes()
}

func cut(name string) (db, table string, ok bool) {
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			return name[:i], name[i+1:], true
		}
	}
	return name, "", false
}
