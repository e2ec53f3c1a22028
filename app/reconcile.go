package app

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/reconcile"
	"github.com/binlogsync/binlogsync/sink"
	"github.com/binlogsync/binlogsync/source"
)

// Reconciler is a reconciler with the connections it owns.
type Reconciler struct {
	*reconcile.Reconciler
	DB     *sql.DB
	Redis  redis.UniversalClient
	Flavor string
	close  []func()
}

// Close releases the connections.
func (r *Reconciler) Close() {
	for i := len(r.close) - 1; i >= 0; i-- {
		r.close[i]()
	}
}

// OpenReconciler connects to MySQL and Redis and builds the reconciler the configuration describes (the
// `reconciler` command). Metrics go to reg when it is not nil. The stream's checkpoint (checkpoint.store) tells
// the reconciler how far the stream got; with the file store the reconciler must run where it can read the file.
func OpenReconciler(ctx context.Context, cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*Reconciler, error) {
	db, flavor, err := OpenMySQL(ctx, cfg)
	if err != nil {
		return nil, err
	}
	out := &Reconciler{DB: db, Flavor: flavor, close: []func(){func() { db.Close() }}}
	var redisBytes atomic.Int64
	rdb, err := openCountingRedis(ctx, cfg, &redisBytes)
	if err != nil {
		out.Close()
		return nil, err
	}
	out.Redis = rdb
	out.close = append(out.close, func() { rdb.Close() })
	store, err := OpenCheckpoint(cfg, rdb)
	if err != nil {
		out.Close()
		return nil, err
	}
	out.close = append(out.close, func() { store.Close() })
	identity, err := serverIdentity(ctx, db, flavor)
	if err != nil {
		out.Close()
		return nil, exitErr(ExitServer, err)
	}
	var m *reconcile.Metrics
	if reg != nil {
		m = reconcile.NewMetrics(reg, nil)
	}
	r, err := newReconciler(cfg, db, flavor, rdb, log, m, func(rc *reconcile.Config) {
		rc.StreamPosition = store.Load
		rc.Identity = identity
		rc.RedisBytes = redisBytes.Load
	})
	if err != nil {
		out.Close()
		return nil, err
	}
	out.Reconciler = r
	return out, nil
}

// Bootstrap loads every selected table into Redis with one reconciler pass and returns the position the stream
// must start from: a transaction boundary at or before every snapshot the pass read (SPEC section 5). Run calls
// it when bootstrap is true and there is no checkpoint; an interrupted bootstrap resumes where it stopped and
// returns the position of the pass it resumed.
func Bootstrap(ctx context.Context, cfg *config.Config, db *sql.DB, flavor string, rdb redis.UniversalClient, log *slog.Logger) (change.Position, error) {
	r, err := newReconciler(cfg, db, flavor, rdb, log, nil, nil)
	if err != nil {
		return change.Position{}, exitErr(ExitConfig, err)
	}
	log.Info("bootstrap: loading the selected tables into Redis before streaming")
	// Redis is empty or may be emptied (docs/runbook.md "Bootstrap"): no SCAN for keys written outside the pipeline.
	rep, err := r.Run(ctx, reconcile.PassOptions{RestoreExpired: true, NoScanOrphans: true})
	if err != nil {
		return change.Position{}, exitErr(ExitRuntime, fmt.Errorf("bootstrap pass: %w", err))
	}
	t := rep.Total()
	log.Info("bootstrap finished", slog.Int64("rows", t.Rows), slog.Int64("written", t.Missing.Repaired+t.Stale.Repaired),
		slog.Int64("orphans_removed", t.Extra.Repaired), slog.String("file", rep.Start.File),
		slog.Uint64("pos", uint64(rep.Start.Pos)), slog.Duration("took", rep.Finished.Sub(rep.Started)))
	return rep.Start, nil
}

// bootstrapper returns the bootstrap startPosition runs when there is no checkpoint, or nil when bootstrap is
// off. The pass runs under ctx, not under the start-up deadline: loading a large table takes as long as it takes.
func bootstrapper(ctx context.Context, cfg *config.Config, db *sql.DB, flavor string, rdb redis.UniversalClient,
	log *slog.Logger,
) func() (change.Position, error) {
	if !cfg.Bootstrap {
		return nil
	}
	return func() (change.Position, error) { return Bootstrap(ctx, cfg, db, flavor, rdb, log) }
}

func newReconciler(cfg *config.Config, db *sql.DB, flavor string, rdb redis.UniversalClient, log *slog.Logger,
	m *reconcile.Metrics, tune func(*reconcile.Config),
) (*reconcile.Reconciler, error) {
	log = log.With(slog.String("component", "reconcile"))
	// Rows Redis refuses (a key holding another type) are counted in the report, not fatal.
	snk, err := sink.New(rdb, sink.Options{
		Prefix: cfg.Sink.KeyPrefix, Lanes: cfg.Sink.Lanes, RowsPerCall: cfg.Sink.RowsPerCall,
		TombstoneTTL: cfg.Sink.TombstoneTTL, Logger: log, Table: sinkTableOptions(cfg),
		DeadLetter: func(ctx context.Context, c change.Change, reason error) error {
			log.WarnContext(ctx, "Redis refused a repair", slog.String("table", c.Table.FullName()),
				slog.String("error", reason.Error()))
			return nil
		},
	})
	if err != nil {
		return nil, exitErr(ExitConfig, err)
	}
	rc := reconcile.Config{
		MySQL: reconcile.MySQLConfig{Addr: cfg.MySQL.Addr, User: cfg.MySQL.User, Password: cfg.MySQL.Password,
			TLS: mysqlTLS(cfg), Timeout: cfg.MySQL.ConnectTimeout},
		DB: db, Flavor: flavor, Redis: rdb, Sink: snk, Prefix: cfg.Sink.KeyPrefix,
		Selected: cfg.TableSelected,
		Table: func(db, table string) reconcile.TableOptions {
			r := cfg.Rule(db, table)
			if r == nil {
				return reconcile.TableOptions{Format: sinkFormat(cfg.Sink.Format)}
			}
			return reconcile.TableOptions{
				Columns: &source.ColumnRule{Include: r.Columns.Include, Exclude: r.Columns.Exclude, Rename: r.Columns.Rename,
					KeyColumns: r.KeyColumns},
				Format: sinkFormat(r.Format), KeyTemplate: r.Key, TTL: r.TTL, RestoreExpired: r.RestoreExpired,
				KeyIndex: r.KeyIndex,
			}
		},
		ChunkRows: cfg.Reconcile.ChunkRows, ChunkTarget: cfg.Reconcile.ChunkTarget, HashRows: cfg.Reconcile.HashRows,
		RateLimitRows: cfg.Reconcile.RateLimitRows, ReportOnly: !cfg.Reconcile.Repair,
		StateKey: cfg.Reconcile.StateKey, DeadLetterStream: cfg.Sink.DeadLetter, Logger: log, Metrics: m,
	}
	if tune != nil {
		tune(&rc)
	}
	return reconcile.New(rc)
}

// sinkTableOptions is the per-table sink options of the configuration, as NewSink sets them.
func sinkTableOptions(cfg *config.Config) func(t *change.Table) (sink.TableOptions, error) {
	def := sink.TableOptions{Format: sinkFormat(cfg.Sink.Format)}
	return func(t *change.Table) (sink.TableOptions, error) {
		r := cfg.Rule(t.DB, t.Name)
		if r == nil {
			return def, nil
		}
		return sink.TableOptions{Format: sinkFormat(r.Format), KeyTemplate: r.Key, TTL: r.TTL, KeyIndex: r.KeyIndex}, nil
	}
}

// byteCountingConn counts the bytes read through a connection.
type byteCountingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *byteCountingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// openCountingRedis is OpenRedis with a connection dialer that counts the bytes read into n.
func openCountingRedis(ctx context.Context, cfg *config.Config, n *atomic.Int64) (redis.UniversalClient, error) {
	r := cfg.Redis
	tlsConf, err := r.TLS.Config()
	if err != nil {
		return nil, exitErr(ExitConfig, fmt.Errorf("redis.tls: %w", err))
	}
	base := redis.NewDialer(&redis.Options{DialTimeout: r.DialTimeout, TLSConfig: tlsConf})
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := base(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &byteCountingConn{Conn: c, n: n}, nil
	}
	var rdb redis.UniversalClient
	if r.Cluster() {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: r.Addrs, Username: r.Username, Password: r.Password, TLSConfig: tlsConf, Dialer: dialer,
			PoolSize: r.PoolSize, DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout,
			MaxRedirects: 16, DisableIdentity: true,
		})
	} else {
		rdb = redis.NewClient(&redis.Options{
			Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB, TLSConfig: tlsConf, Dialer: dialer,
			PoolSize: r.PoolSize, DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout,
			DisableIdentity: true,
		})
	}
	pctx, cancel := context.WithTimeout(ctx, r.DialTimeout+2*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, exitErr(ExitServer, explainRedisError(cfg, err))
	}
	return rdb, nil
}
