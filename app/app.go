// Package app wires configuration, servers and the pipeline together for the
// binlogsync command. cmd/binlogsync only parses flags and handles signals.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/checkpoint"
	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/metrics"
	"github.com/binlogsync/binlogsync/pipeline"
	"github.com/binlogsync/binlogsync/sink"
	"github.com/binlogsync/binlogsync/source"
)

// Exit codes, documented in docs/runbook.md (Exit codes).
const (
	ExitOK          = 0
	ExitRuntime     = 1 // an error while running (after start-up)
	ExitConfig      = 2 // bad configuration
	ExitServer      = 3 // a server is unreachable, refuses the credentials or is misconfigured
	ExitBinlogGone  = 4 // the checkpoint's binlog is no longer on the server
	ExitInterrupted = 0 // SIGINT/SIGTERM: a clean stop
)

// ExitError carries the process exit code with the message.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

func exitErr(code int, err error) error { return &ExitError{Code: code, Err: err} }

// Options are the command line's overrides.
type Options struct {
	// Start, when not zero, overrides the checkpoint (--start-file/--start-pos/--start-gtid).
	Start config.Start
	// CheckOnly runs the preflight checks and returns (--check).
	CheckOnly bool
	// Registry receives the metrics; nil = a new one.
	Registry *prometheus.Registry
	// Ready, when set, is called once the pipeline streams (tests use it).
	Ready func()
}

// Run runs the pipeline until ctx ends (a clean stop returns nil) or a
// fatal error.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) error {
	if cfg.Transport.Kind == config.TransportKafka {
		return runKafka(ctx, cfg, log, opts)
	}
	if cfg.Transport.Kind != config.TransportEmbedded || cfg.Role != config.RoleAll {
		return exitErr(ExitConfig, fmt.Errorf("transport.kind %q with role %q is not available; "+
			"use transport.kind: embedded with role: all, or transport.kind: kafka", cfg.Transport.Kind, cfg.Role))
	}
	startCtx, cancelStart := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelStart()

	db, flavor, err := OpenMySQL(startCtx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	log = log.With(slog.String("flavor", flavor))

	problems, err := source.Preflight(startCtx, db, preflightOptions(cfg, flavor))
	if err != nil {
		return exitErr(ExitServer, fmt.Errorf("checking the server settings: %w", err))
	}
	if err := reportProblems(log, problems); err != nil {
		return err
	}

	rdb, err := OpenRedis(startCtx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if opts.CheckOnly {
		if err := checkResume(startCtx, cfg, opts, db, flavor, rdb); err != nil {
			return err
		}
		log.Info("all checks passed", slog.String("mysql", cfg.MySQL.Addr), slog.String("redis", redisAddr(cfg)))
		return nil
	}

	// Metrics and HTTP come up before the lease and the bootstrap, so a standby
	// or a long initial load is observable (/readyz answers 503 until streaming).
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	queue := make(chan *change.Batch, cfg.Sink.QueueBatches)
	m := metrics.New(reg, func() float64 { return float64(len(queue)) })
	var ready readiness
	if cfg.HTTP.Addr != "" {
		srv, err := serveHTTP(cfg.HTTP.Addr, reg, &ready, rdb, log)
		if err != nil {
			return exitErr(ExitConfig, err)
		}
		defer srv.Close()
	}

	ctx, release, err := lead(ctx, cfg, rdb, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while standing by
		}
		return err
	}
	defer release()
	// A standby may have waited long: the start-up deadline counts from now.
	startCtx, cancelStart = context.WithTimeout(ctx, 2*time.Minute)
	defer cancelStart()

	store, err := OpenCheckpoint(cfg, rdb)
	if err != nil {
		return err
	}
	defer store.Close()

	identity, err := serverIdentity(startCtx, db, flavor)
	if err != nil {
		return exitErr(ExitServer, err)
	}
	start, trackGTID, stored, err := startPosition(startCtx, cfg, opts, db, flavor, store, identity, log,
		bootstrapper(ctx, cfg, db, flavor, rdb, log))
	if err != nil {
		return err
	}

	m.CheckpointStart(start)
	snk, err := NewSink(cfg, rdb, log, m)
	if err != nil {
		return exitErr(ExitConfig, err)
	}

	src := newSource(cfg, db, flavor, start, trackGTID, identity, schemaStore(cfg, opts, store, stored), log, m, &ready)

	ckpt := &pipeline.Checkpointer{Store: store, Interval: cfg.Checkpoint.Interval, Metrics: m,
		Log: log.With(slog.String("component", "checkpoint"))}
	ckpt.Start()
	loop := &pipeline.ApplyLoop{In: queue, Sink: snk, Ckpt: ckpt, MaxRows: cfg.Sink.BatchRows * 2, Metrics: m,
		Log: log.With(slog.String("component", "sink"))}

	log.Info("streaming", slog.String("file", start.File), slog.Uint64("pos", uint64(start.Pos)),
		slog.String("gtid_set", start.GTIDSet), slog.Uint64("epoch", uint64(start.Epoch)),
		slog.String("mysql", cfg.MySQL.Addr), slog.String("redis", redisAddr(cfg)))

	srcCtx, stopSource := context.WithCancel(ctx)
	defer stopSource()
	srcErr := make(chan error, 1)
	go func() {
		err := src.Run(srcCtx, start, queue)
		close(queue) // the apply loop drains what is queued, then returns
		srcErr <- err
	}()
	ready.streaming.Store(true)
	if opts.Ready != nil {
		opts.Ready()
	}

	// The apply loop outlives ctx by up to shutdown_timeout, to finish the
	// batches in flight before the final checkpoint.
	applyCtx, cancelApply := context.WithCancel(context.Background())
	defer cancelApply()
	applyErr := make(chan error, 1)
	go func() { applyErr <- loop.Run(applyCtx) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: finishing the batches in flight", slog.Duration("timeout", cfg.ShutdownTimeout))
		stopSource()
		timer := time.AfterFunc(cfg.ShutdownTimeout, cancelApply)
		err := <-applyErr
		timer.Stop()
		if err != nil && !errors.Is(err, context.Canceled) {
			runErr = exitErr(ExitRuntime, err)
		}
		<-srcErr
	case err := <-srcErr:
		// The source stopped by itself: let the sink apply what it read.
		if aerr := <-applyErr; aerr != nil {
			log.Error("applying the queued changes failed", slog.String("error", aerr.Error()))
		}
		runErr = classifySourceError(err)
	case err := <-applyErr:
		stopSource()
		<-srcErr
		runErr = exitErr(ExitRuntime, err)
	}
	ready.streaming.Store(false)
	if err := ckpt.Close(); err != nil {
		log.Error("storing the final checkpoint failed", slog.String("error", err.Error()))
		if runErr == nil {
			runErr = exitErr(ExitRuntime, err)
		}
	}
	saved := ckpt.Saved()
	if saved.IsZero() {
		saved = start // nothing applied this run: the checkpoint is where it started
	}
	log.Info("stopped", slog.String("checkpoint_file", saved.File), slog.Uint64("checkpoint_pos", uint64(saved.Pos)))
	return leaseErr(ctx, runErr)
}

// sourceSchemas is where the source keeps the schemas it follows across DDL (beside the checkpoint), and the
// checkpoint found at start, up to which they miss no DDL statement.
type sourceSchemas struct {
	store source.SchemaStore
	upTo  change.Position
	// snapshot: the start is the server's current position (source.Config.SnapshotSchemas).
	snapshot bool
}

var (
	_ source.SchemaStore = (*checkpoint.File)(nil)
	_ source.SchemaStore = (*checkpoint.Redis)(nil)
)

// schemaStore describes the schemas for a start with the stored checkpoint: with none and no explicit start, the
// source starts at the server's current position (or a bootstrap pass's, taken just now) and reads every table's
// schema there.
func schemaStore(cfg *config.Config, opts Options, store checkpoint.Store, stored change.Position) sourceSchemas {
	s, _ := store.(source.SchemaStore)
	fresh := stored.IsZero() && opts.Start.IsZero() && cfg.MySQL.Start.IsZero()
	return sourceSchemas{store: s, upTo: stored, snapshot: fresh}
}

// newSource builds the binlog source from the configuration.
func newSource(cfg *config.Config, db *sql.DB, flavor string, start change.Position, trackGTID bool,
	identity string, schemas sourceSchemas, log *slog.Logger, m *metrics.Metrics, ready *readiness,
) *source.Source {
	return source.New(source.Config{
		Addr:                cfg.MySQL.Addr,
		User:                cfg.MySQL.User,
		Password:            cfg.MySQL.Password,
		Flavor:              flavor,
		ServerID:            cfg.MySQL.ServerID,
		TLS:                 mysqlTLS(cfg),
		Heartbeat:           cfg.MySQL.Heartbeat,
		ReadTimeout:         cfg.MySQL.ReadTimeout,
		ConnectTimeout:      cfg.MySQL.ConnectTimeout,
		ReconnectMaxBackoff: cfg.MySQL.ReconnectMaxBackoff,
		UseGTID:             useGTID(cfg, start),
		TrackGTID:           trackGTID,
		Schemas:             schemas.store,
		SchemasUpTo:         schemas.upTo,
		SnapshotSchemas:     schemas.snapshot,
		BatchRows:           cfg.Sink.BatchRows,
		BatchWait:           cfg.Sink.BatchWait,
		Epoch:               start.Epoch,
		ServerUUID:          identity,
		Tables:              cfg.TableSelected,
		Columns:             columnRules(cfg),
		Logger:              log.With(slog.String("component", "source")),
		Metrics:             metrics.SourceAdapter{M: m},
		Connected:           func(up bool) { ready.binlogDown.Store(!up) },
	}, db)
}

func classifySourceError(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	if errors.Is(err, source.ErrBinlogGone) {
		return exitErr(ExitBinlogGone, err)
	}
	if errors.Is(err, source.ErrServerIDConflict) {
		return exitErr(ExitServer, err)
	}
	return exitErr(ExitRuntime, err)
}

func reportProblems(log *slog.Logger, problems []source.Problem) error {
	var fatal []string
	for _, p := range problems {
		if p.Fatal {
			fatal = append(fatal, p.Error())
		} else {
			log.Warn(p.Error())
		}
	}
	if len(fatal) > 0 {
		return exitErr(ExitServer, errors.New(strings.Join(fatal, "\n")))
	}
	return nil
}

// startPosition picks where to start: the command line, else the checkpoint,
// else (bootstrap not nil) the position of a bootstrap pass, else the server's
// current position. gtidComplete reports that the position's GTID set (possibly
// empty) is every transaction executed up to it, so that the source may track
// GTIDs from there (source.Config.TrackGTID). stored is the checkpoint found
// in the store (zero when there was none).
func startPosition(ctx context.Context, cfg *config.Config, opts Options, db *sql.DB, flavor string,
	store checkpoint.Store, identity string, log *slog.Logger, bootstrap func() (change.Position, error),
) (p change.Position, gtidComplete bool, stored change.Position, err error) {
	saved, found, err := store.Load(ctx)
	if found {
		stored = saved
	}
	if err != nil {
		return p, false, stored, exitErr(ExitRuntime, fmt.Errorf("loading the checkpoint: %w", err))
	}
	explicit := explicitStart(cfg, opts)
	switch {
	case !explicit.IsZero():
		p = change.Position{File: explicit.File, GTIDSet: explicit.GTIDSet}
		if p.File != "" {
			p.Pos = max(explicit.Pos, 4)
			if err := checkExplicitStart(ctx, db, p); err != nil {
				return p, false, stored, err
			}
		} else if cfg.MySQL.GTID == "off" {
			return p, false, stored, exitErr(ExitConfig, errors.New("a start GTID set (--start-gtid, mysql.start.gtid_set) "+
				"needs mysql.gtid auto or on; it is off"))
		}
		// A GTID start names no file: the server streams by the set, and the file and position come with the
		// first events (the checkpoint names them from the first transaction on).
		log.Info("starting from the position given explicitly", slog.String("file", p.File),
			slog.Uint64("pos", uint64(p.Pos)), slog.String("gtid_set", p.GTIDSet))
		gtidComplete = p.File == ""
	case found:
		p = saved
		if err := checkGTIDOnly(cfg, p); err != nil {
			return p, false, stored, err
		}
		log.Info("resuming from the checkpoint", slog.String("file", p.File), slog.Uint64("pos", uint64(p.Pos)),
			slog.String("gtid_set", p.GTIDSet))
	case bootstrap != nil:
		if p, err = bootstrap(); err != nil {
			return p, false, stored, err
		}
		log.Info("no checkpoint: starting from the bootstrap pass's position", slog.String("file", p.File),
			slog.Uint64("pos", uint64(p.Pos)), slog.String("gtid_set", p.GTIDSet))
	default:
		p, err = source.CurrentPosition(ctx, db, flavor)
		if err != nil {
			return p, false, stored, exitErr(ExitServer, fmt.Errorf("reading the server's current binlog position: %w", err))
		}
		log.Info("no checkpoint: starting from the server's current position", slog.String("file", p.File),
			slog.Uint64("pos", uint64(p.Pos)))
		gtidComplete = true // read with the position
	}
	// A set in a checkpoint was written by a source that tracked a complete one. A file position without a set
	// gets it from the server where it can (MariaDB), so that checkpoints carry sets from here on.
	gtidComplete = gtidComplete || p.GTIDSet != ""
	otherServer := explicit.IsZero() && found && saved.ServerUUID != "" && saved.ServerUUID != identity
	if otherServer {
		if p, err = fromOtherServer(cfg, saved, identity); err != nil {
			return p, false, stored, err
		}
		log.Info("the checkpoint is another server's: resuming by its GTID set, not by its file and position",
			slog.String("gtid_set", p.GTIDSet), slog.String("checkpoint_file", saved.File),
			slog.Uint64("checkpoint_pos", uint64(saved.Pos)))
	}
	if !gtidComplete && flavor == "mariadb" && !otherServer { // another server's position means nothing here
		set, ok, err := source.MariaDBGTIDAt(ctx, db, p.File, p.Pos)
		if err != nil {
			return p, false, stored, exitErr(ExitServer, err)
		}
		p.GTIDSet, gtidComplete = set, ok
	}
	p.Flavor = flavor
	if found {
		p.Epoch = saved.Epoch
		if saved.ServerUUID != "" && saved.ServerUUID != identity {
			// Another server (failover): its binlog positions are not comparable
			// with the old one's, so versions move to a new epoch.
			p.Epoch = saved.Epoch + 1
			log.Warn("the server differs from the checkpoint's; starting a new version epoch",
				slog.String("checkpoint_server", saved.ServerUUID), slog.String("server", identity),
				slog.Uint64("epoch", uint64(p.Epoch)))
		}
	}
	if err := checkBinlogThere(ctx, cfg, db, p); err != nil {
		return p, false, stored, err
	}
	p.ServerUUID = identity
	if !found || !explicit.IsZero() || p.Epoch != saved.Epoch {
		// Store where we start before anything streams: a crash before the
		// first transaction is applied must resume here, not at whatever the
		// server's current position is by then (that would skip changes).
		if err := store.Save(ctx, p); err != nil {
			return p, false, stored, exitErr(ExitRuntime, fmt.Errorf("storing the start position as the checkpoint: %w", err))
		}
	}
	return p, gtidComplete, stored, nil
}

// explicitStart is the start position given by hand: the command line's, else mysql.start.
func explicitStart(cfg *config.Config, opts Options) config.Start {
	if opts.Start.IsZero() {
		return cfg.MySQL.Start
	}
	return opts.Start
}

// fromOtherServer is where to resume from saved, the checkpoint of another server than identity: its GTID set
// alone. A file and position name a place in one server's binlog only: on another server the same name can exist
// and point anywhere (into another transaction, or past changes never streamed). Without a set (or with
// mysql.gtid off) there is nowhere to resume, which is an ErrBinlogGone.
func fromOtherServer(cfg *config.Config, saved change.Position, identity string) (change.Position, error) {
	if saved.GTIDSet == "" || cfg.MySQL.GTID == "off" {
		why := "the checkpoint holds no GTID set"
		if saved.GTIDSet != "" {
			why = "mysql.gtid is off"
		}
		return saved, exitErr(ExitBinlogGone, fmt.Errorf("%w: the checkpoint (%s) is %s:%d on server %s, "+
			"and mysql.addr now reaches server %s; a binlog position of one server means nothing on another, "+
			"and %s. Keep the checkpoint and re-derive Redis from MySQL: `reconciler run --config FILE "+
			"--scan-orphans --restore-expired --restart --output json`, then start binlogsync with --start-file "+
			"and --start-pos from the report's start; see docs/runbook.md \"MySQL failover\". If this is the "+
			"same server under a new identity (server_id or server_uuid changed, data directory restored), start "+
			"with --start-file %s --start-pos %d instead", source.ErrBinlogGone, checkpointWhere(cfg), saved.File,
			saved.Pos, saved.ServerUUID, identity, why, saved.File, saved.Pos))
	}
	p := saved
	p.File, p.Pos = "", 0
	return p, nil
}

// checkGTIDOnly refuses a checkpoint of a GTID set alone with mysql.gtid off.
func checkGTIDOnly(cfg *config.Config, p change.Position) error {
	if p.File == "" && cfg.MySQL.GTID == "off" {
		return exitErr(ExitConfig, fmt.Errorf("the checkpoint (%s) names only a GTID set (a --start-gtid start "+
			"stopped before its first transaction, or a start after a failover), which needs mysql.gtid auto or on; "+
			"it is off", checkpointWhere(cfg)))
	}
	return nil
}

// checkBinlogThere refuses to resume by file and position from a binlog the server no longer has.
func checkBinlogThere(ctx context.Context, cfg *config.Config, db *sql.DB, p change.Position) error {
	if useGTID(cfg, p) {
		return nil
	}
	ok, err := source.BinlogAvailable(ctx, db, p.File)
	if err != nil {
		return exitErr(ExitServer, fmt.Errorf("listing the server's binlogs: %w", err))
	}
	if !ok {
		return exitErr(ExitBinlogGone, fmt.Errorf("%w: %s:%d is not in SHOW BINARY LOGS (purged, or another "+
			"server). Changes since then cannot be streamed. Keep the checkpoint (%s) and re-derive Redis from "+
			"MySQL: `reconciler run --config FILE --scan-orphans --restore-expired --restart --output json`, then "+
			"start binlogsync with --start-file and --start-pos from the report's start; see docs/runbook.md "+
			"\"The binlog to resume from is gone\"", source.ErrBinlogGone, p.File, p.Pos, checkpointWhere(cfg)))
	}
	return nil
}

// checkResume is --check's look at where a start would resume: an explicit start must name a binlog the server
// has, at a transaction boundary; a checkpoint must be resumable on this server (its GTID set after a failover,
// else a binlog the server still has). It changes nothing.
func checkResume(ctx context.Context, cfg *config.Config, opts Options, db *sql.DB, flavor string,
	rdb redis.UniversalClient,
) error {
	if st := explicitStart(cfg, opts); !st.IsZero() {
		if st.File == "" {
			return nil
		}
		return checkExplicitStart(ctx, db, change.Position{File: st.File, Pos: max(st.Pos, 4)})
	}
	store, err := OpenCheckpoint(cfg, rdb)
	if err != nil {
		return err
	}
	defer store.Close()
	saved, found, err := store.Load(ctx)
	if err != nil {
		return exitErr(ExitRuntime, fmt.Errorf("loading the checkpoint: %w", err))
	}
	if !found {
		return nil
	}
	if err := checkGTIDOnly(cfg, saved); err != nil {
		return err
	}
	identity, err := serverIdentity(ctx, db, flavor)
	if err != nil {
		return exitErr(ExitServer, err)
	}
	p := saved
	if saved.ServerUUID != "" && saved.ServerUUID != identity {
		if p, err = fromOtherServer(cfg, saved, identity); err != nil {
			return err
		}
	}
	return checkBinlogThere(ctx, cfg, db, p)
}

// checkExplicitStart refuses a start file the server does not have, or a position in it that is not a
// transaction boundary, before anything (the checkpoint) changes.
func checkExplicitStart(ctx context.Context, db *sql.DB, p change.Position) error {
	ok, err := source.BinlogAvailable(ctx, db, p.File)
	if err != nil {
		return exitErr(ExitServer, fmt.Errorf("listing the server's binlogs: %w", err))
	}
	if !ok {
		return exitErr(ExitBinlogGone, fmt.Errorf("%w: the start position given explicitly, %s:%d, "+
			"names a binlog the server does not have (SHOW BINARY LOGS lists those it has); the checkpoint is "+
			"left as it was", source.ErrBinlogGone, p.File, p.Pos))
	}
	if err := source.CheckStart(ctx, db, p.File, p.Pos); err != nil {
		if errors.Is(err, source.ErrBadStart) {
			return exitErr(ExitConfig, fmt.Errorf("%w; the checkpoint is left as it was", err))
		}
		return exitErr(ExitServer, err)
	}
	return nil
}

func checkpointWhere(cfg *config.Config) string {
	if cfg.Checkpoint.Store == "redis" {
		return "Redis key " + cfg.Checkpoint.Key
	}
	return "file " + cfg.Checkpoint.Path
}

// useGTID reports whether the source streams from p by its GTID set rather than its file and position: always
// with mysql.gtid on (a set survives a failover to another server), never with off, and with auto only when p
// names no file (a GTID start), since file/position needs no gtid_strict_mode on MariaDB.
func useGTID(cfg *config.Config, p change.Position) bool {
	switch cfg.MySQL.GTID {
	case "on":
		return p.GTIDSet != ""
	case "off":
		return false
	}
	return p.GTIDSet != "" && p.File == ""
}

// serverIdentity names the server that writes the binlog, to notice a failover.
func serverIdentity(ctx context.Context, db *sql.DB, flavor string) (string, error) {
	return source.ServerIdentity(ctx, db, flavor)
}

// preflightOptions are the start-up checks of the configuration's source.
func preflightOptions(cfg *config.Config, flavor string) source.PreflightOptions {
	return source.PreflightOptions{Flavor: flavor, ServerID: cfg.MySQL.ServerID, User: cfg.MySQL.User,
		Tables: cfg.Tables.Include, Selected: cfg.TableSelected,
		KeyColumns: func(db, table string) []string {
			if r := cfg.Rule(db, table); r != nil {
				return r.KeyColumns
			}
			return nil
		},
		Columns: columnRules(cfg),
		KeyTemplate: func(db, table string, fields, key []string) error {
			r := cfg.Rule(db, table)
			if r == nil || r.Key == "" {
				return nil
			}
			t := &change.Table{DB: db, Name: table, Columns: fields}
			for _, k := range key {
				t.PK = append(t.PK, slices.Index(fields, k))
			}
			return sink.CheckKeyTemplate(t, r.Key)
		}}
}

func columnRules(cfg *config.Config) func(db, table string) *source.ColumnRule {
	return func(db, table string) *source.ColumnRule {
		r := cfg.Rule(db, table)
		if r == nil {
			return nil
		}
		return &source.ColumnRule{Include: r.Columns.Include, Exclude: r.Columns.Exclude, Rename: r.Columns.Rename,
			KeyColumns: r.KeyColumns}
	}
}

func redisAddr(cfg *config.Config) string {
	if cfg.Redis.Cluster() {
		return strings.Join(cfg.Redis.Addrs, ",")
	}
	return cfg.Redis.Addr
}

// NewSink builds the Redis applier from the configuration.
// With sink.dead_letter set, rows Redis refuses (WRONGTYPE on the row key, an
// empty key) go to that stream and the pipeline goes on; otherwise they stop it.
func NewSink(cfg *config.Config, rdb redis.UniversalClient, log *slog.Logger, m *metrics.Metrics) (*sink.Sink, error) {
	def := sink.TableOptions{Format: sinkFormat(cfg.Sink.Format)}
	var dead func(context.Context, change.Change, error) error
	if cfg.Sink.DeadLetter != "" {
		dead = RedisDeadLetter(rdb, cfg.Sink.DeadLetter, m)
	}
	var onRetry func()
	if m != nil {
		onRetry = m.RedisRetries.Inc
	}
	sinkLog := log.With(slog.String("component", "sink"))
	return sink.New(rdb, sink.Options{
		OnRetry:      onRetry,
		DeadLetter:   dead,
		Prefix:       cfg.Sink.KeyPrefix,
		Lanes:        cfg.Sink.Lanes,
		RowsPerCall:  cfg.Sink.RowsPerCall,
		TombstoneTTL: cfg.Sink.TombstoneTTL,
		Logger:       sinkLog,
		ColumnsChanged: func(table string, before, after []string) {
			sinkLog.Warn("the columns of a table changed (ALTER TABLE): its rows written before keep their old "+
				"fields in Redis until they change; "+source.ReshapeHint(table), slog.String("table", table),
				slog.Any("columns_before", before), slog.Any("columns", after))
		},
		Table: func(t *change.Table) (sink.TableOptions, error) {
			r := cfg.Rule(t.DB, t.Name)
			if r == nil {
				return def, nil
			}
			return sink.TableOptions{Format: sinkFormat(r.Format), KeyTemplate: r.Key, TTL: r.TTL, KeyIndex: r.KeyIndex}, nil
		},
	})
}

func sinkFormat(s string) sink.Format {
	if s == "json" {
		return sink.FormatJSON
	}
	return sink.FormatHash
}

// OpenCheckpoint opens the configured checkpoint store.
func OpenCheckpoint(cfg *config.Config, rdb redis.UniversalClient) (checkpoint.Store, error) {
	if cfg.Checkpoint.Store == "redis" {
		return checkpoint.NewRedis(rdb, cfg.Checkpoint.Key), nil
	}
	f, err := checkpoint.NewFile(cfg.Checkpoint.Path)
	if err != nil {
		return nil, exitErr(ExitConfig, err)
	}
	return f, nil
}

// readiness is what /readyz answers from: streaming is set while the pipeline runs, binlogDown while the source
// reconnects to MySQL.
type readiness struct {
	streaming, binlogDown atomic.Bool
}

func serveHTTP(addr string, reg *prometheus.Registry, ready *readiness, rdb redis.UniversalClient, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.addr %q: cannot listen: %w; pick a free host:port or \"\" to disable", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.streaming.Load() {
			http.Error(w, "not streaming", http.StatusServiceUnavailable)
			return
		}
		if ready.binlogDown.Load() {
			http.Error(w, "the binlog connection is down; reconnecting", http.StatusServiceUnavailable)
			return
		}
		if rdb == nil { // a Kafka source without Redis
			_, _ = w.Write([]byte("ready\n"))
			return
		}
		// go-redis bounds a call by its read timeout, not the context: wait a second at most.
		ping := make(chan error, 1)
		go func() { ping <- rdb.Ping(context.WithoutCancel(r.Context())).Err() }()
		var err error
		select {
		case err = <-ping:
		case <-time.After(time.Second):
			err = errors.New("no answer to PING within 1s")
		}
		if err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", slog.String("error", err.Error()))
		}
	}()
	log.Info("http listening", slog.String("addr", ln.Addr().String()))
	return srv, nil
}

// NewLogger builds the slog logger the configuration asks for, and sends go-redis's own messages (failed dials,
// pool errors) through it: go-redis printed them to stderr in its own format, outside log.format.
func NewLogger(cfg *config.Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	hopts := &slog.HandlerOptions{Level: lvl}
	var log *slog.Logger
	if cfg.Log.Format == "text" {
		log = slog.New(slog.NewTextHandler(os.Stderr, hopts))
	} else {
		log = slog.New(slog.NewJSONHandler(os.Stderr, hopts))
	}
	redis.SetLogger(&redisLog{log: log.With(slog.String("component", "go-redis"))})
	return log
}

// redisLog passes go-redis's messages to a logger: at most one warning every 10 s, the others at debug level,
// since binlogsync's own retries already warn about the outage behind them.
type redisLog struct {
	log  *slog.Logger
	last atomic.Int64 // UnixNano of the last warning
}

func (l *redisLog) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	now := time.Now().UnixNano()
	if last := l.last.Load(); now-last >= int64(10*time.Second) && l.last.CompareAndSwap(last, now) {
		l.log.WarnContext(ctx, "redis client: "+msg)
		return
	}
	l.log.DebugContext(ctx, "redis client: "+msg)
}
