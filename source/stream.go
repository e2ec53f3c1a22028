// Package source reads the MySQL/MariaDB binlog as a replica and turns row
// events of the included tables into change batches.
package source

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gmysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binlogsync/binlogsync/change"
)

// ErrBinlogGone means the position to resume from is no longer on the server.
var ErrBinlogGone = errors.New("binlog position to resume from is gone from the server")

// ColumnRule selects and renames the columns of a table (SPEC section 2).
type ColumnRule struct {
	Include []string // when set, only these columns (primary-key columns must be among them)
	Exclude []string
	Rename  map[string]string // source name -> field name
	// KeyColumns name the columns of a NOT NULL unique key that identify the rows of a table without a
	// primary key (tables.rules[].key_columns); without them such a table is skipped with a warning.
	KeyColumns []string
}

// Config is what a Source needs.
type Config struct {
	Addr      string
	User      string
	Password  string
	Flavor    string // "mysql" or "mariadb" (resolved, not "auto")
	ServerID  uint32
	TLS       *tls.Config
	Heartbeat time.Duration
	// ReadTimeout bounds how long a silent connection is trusted; it must
	// exceed Heartbeat.
	ReadTimeout time.Duration
	// ConnectTimeout bounds dialing the server. Default 10s.
	ConnectTimeout time.Duration
	// ReconnectMaxBackoff caps the wait between reconnect attempts. Default 10s.
	ReconnectMaxBackoff time.Duration
	// UseGTID makes the source resume by GTID set when the start position has one.
	UseGTID bool
	// Schemas, when set, keeps the schemas the source follows across DDL (tables whose table maps carry no column
	// names) over restarts; the checkpoint stores implement it. SchemasUpTo is the stored checkpoint: the saved
	// schemas miss no DDL statement before it (each one is saved before its boundary can be checkpointed), so
	// they are used for a start at or before it, and not for one after it (a DDL statement run while nothing
	// streamed would be missing).
	Schemas     SchemaStore
	SchemasUpTo change.Position
	// SnapshotSchemas says the start position is the server's current one (no checkpoint, no explicit start): the
	// source then reads every replicated table from information_schema before streaming, when the binlog carries
	// no column names, and follows them from there (with Schemas, over restarts too). Otherwise a table is read
	// when the stream first meets it, which may be after later DDL changed it.
	SnapshotSchemas bool
	// TrackGTID says the start position's GTID set (possibly empty) is complete: every transaction executed up
	// to it. Only then does the source add the GTIDs it reads and stamp boundaries with the set; a set gathered
	// from a file position would lack the transactions before it, and resuming by it would replay or fail.
	TrackGTID bool
	// BatchRows bounds the rows of one batch (a larger transaction spans batches).
	BatchRows int
	// BatchBytes bounds the size of the values of one batch (change.Batch.Bytes), so that large rows do not
	// gather BatchRows of them in memory. Default DefaultBatchBytes.
	BatchBytes int
	// BatchWait bounds how long a batch that could not be handed off at once
	// waits for more rows before the source blocks to hand it off.
	BatchWait time.Duration
	// Epoch and ServerUUID are stamped on every position (see change.Position).
	Epoch      uint16
	ServerUUID string
	// Tables reports whether db.table is included.
	Tables func(db, table string) bool
	// Columns returns the column rule of db.table, or nil.
	Columns func(db, table string) *ColumnRule
	Logger  *slog.Logger
	Metrics Metrics
	// Connected, when set, is told when the binlog connection comes up (true) and when it breaks (false).
	Connected func(up bool)
}

// Metrics receives what the source observes. Every method must be cheap.
type Metrics interface {
	RowsRead(t *change.Table, op change.Op, n int)
	Event(kind string)
	Reconnect()
	SourcePosition(p change.Position, eventTime time.Time)
	XAPrepared(n int)
}

// NopMetrics ignores everything.
type NopMetrics struct{}

func (NopMetrics) RowsRead(*change.Table, change.Op, int)    {}
func (NopMetrics) Event(string)                              {}
func (NopMetrics) Reconnect()                                {}
func (NopMetrics) SourcePosition(change.Position, time.Time) {}
func (NopMetrics) XAPrepared(int)                            {}

// Source streams the binlog.
type Source struct {
	cfg Config
	db  *sql.DB // for schema look-ups when the binlog lacks column names
	log *slog.Logger
	// schemas are the schemas of tables whose table maps carry no names, kept across DDL (ddl.go).
	schemas *schemaTracker
	// schemasSaved is when the schemas were last saved (Config.Schemas).
	schemasSaved time.Time
}

// SchemaStore keeps the schemas the source follows across DDL over restarts (checkpoint.File and checkpoint.Redis
// keep them beside the checkpoint).
type SchemaStore interface {
	// LoadSchemas returns what SaveSchemas saved last, nil when nothing was.
	LoadSchemas(ctx context.Context) ([]byte, error)
	SaveSchemas(ctx context.Context, b []byte) error
}

// loadSchemas restores the followed schemas as they were at start, when start is at or before SchemasUpTo.
func (s *Source) loadSchemas(ctx context.Context, start change.Position) {
	upTo := s.cfg.SchemasUpTo
	if s.cfg.Schemas == nil || start.File == "" || upTo.File == "" || upTo.Epoch != s.cfg.Epoch {
		return
	}
	a, err1 := change.FileSeq(start.File)
	b0, err2 := change.FileSeq(upTo.File)
	if err1 != nil || err2 != nil || a > b0 || a == b0 && start.Pos > upTo.Pos {
		return
	}
	b, err := s.cfg.Schemas.LoadSchemas(ctx)
	if err == nil && b != nil {
		seq, _ := change.FileSeq(start.File)
		var n int
		if n, err = s.schemas.restore(b, s.cfg.Epoch, seq, start.Pos); err == nil && n > 0 {
			s.log.Info("restored the schemas followed across DDL", slog.Int("tables", n))
		}
	}
	if err != nil {
		s.log.Warn("the schemas followed across DDL could not be restored; tables without column names in the "+
			"binlog are read from information_schema", slog.String("error", err.Error()))
	}
}

// snapshotSchemas reads every replicated table from information_schema and tracks it from start on (the server's
// current position, so the schemas are those there). Nothing is read when the binlog carries column names
// (binlog_row_metadata=FULL). A table that cannot be read is left to be read when first met.
func (s *Source) snapshotSchemas(ctx context.Context, start change.Position) {
	seq, err := change.FileSeq(start.File)
	if s.db == nil || err != nil {
		return
	}
	var meta sql.NullString
	if err := s.db.QueryRowContext(ctx, "SELECT @@binlog_row_metadata").Scan(&meta); err == nil &&
		strings.EqualFold(meta.String, "FULL") {
		return
	}
	rows, err := s.db.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
		WHERE TABLE_TYPE = 'BASE TABLE'
		AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')`)
	if err != nil {
		s.log.Warn("listing the tables to read their schemas failed; each is read when the stream first meets it",
			slog.String("error", err.Error()))
		return
	}
	var names [][2]string
	for rows.Next() {
		var db, table string
		if err := rows.Scan(&db, &table); err == nil && s.cfg.Tables(db, table) {
			names = append(names, [2]string{db, table})
		}
	}
	rows.Close()
	n := 0
	for _, nm := range names {
		ts, err := LoadTableSchema(ctx, s.db, nm[0], nm[1])
		if err != nil {
			s.log.Warn("reading a table's schema failed; it is read when the stream first meets it",
				slog.String("table", nm[0]+"."+nm[1]), slog.String("error", err.Error()))
			continue
		}
		s.schemas.putAt(ts, seq, start.Pos)
		n++
	}
	s.schemas.all = true
	s.schemas.dirty = true
	s.saveSchemas(ctx, true)
	s.log.Info("read the schemas of the replicated tables at the start position", slog.Int("tables", n))
}

// dbCharset returns a function giving a database's default character set from information_schema ("" when it
// cannot be read). It is asked at a CREATE TABLE, which is rare.
func (s *Source) dbCharset(ctx context.Context) func(string) string {
	return func(db string) string {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var cs string
		if err := s.db.QueryRowContext(qctx, `SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA
			WHERE SCHEMA_NAME = ?`, db).Scan(&cs); err != nil {
			return ""
		}
		return cs
	}
}

// saveSchemas saves the followed schemas when they changed, at most once a second unless force.
func (s *Source) saveSchemas(ctx context.Context, force bool) {
	if s.cfg.Schemas == nil || !s.schemas.dirty || !force && time.Since(s.schemasSaved) < time.Second {
		return
	}
	b, err := s.schemas.marshal(s.cfg.Epoch)
	if err == nil {
		err = s.cfg.Schemas.SaveSchemas(ctx, b)
	}
	s.schemasSaved = time.Now()
	if err != nil {
		s.log.Warn("saving the schemas followed across DDL failed; retrying later", slog.String("error", err.Error()))
		return
	}
	s.schemas.dirty = false
}

// New returns a Source; db is used for information_schema look-ups.
func New(cfg Config, db *sql.DB) *Source {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NopMetrics{}
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 2000
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = 2 * time.Millisecond
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.ReconnectMaxBackoff <= 0 {
		cfg.ReconnectMaxBackoff = 10 * time.Second
	}
	if cfg.Tables == nil {
		cfg.Tables = func(string, string) bool { return true }
	}
	return &Source{cfg: cfg, db: db, log: cfg.Logger, schemas: newSchemaTracker(cfg.Flavor)}
}

// Run streams from start (a transaction boundary) into out until ctx ends or
// an error that reconnecting cannot cure. A lost connection is re-established
// with backoff, resuming from the last boundary handed to out.
//
// Resuming from a boundary that may lie before changes already handed out is
// safe: changes are re-read with the same versions (a version depends only on
// the transaction's start position and the change's place in it), and the
// sink's version fence skips what it already applied.
func (s *Source) Run(ctx context.Context, start change.Position, out chan<- *change.Batch) error {
	if start.IsZero() {
		return errors.New("source: no start position")
	}
	resume := start
	backoff := 100 * time.Millisecond
	if s.db != nil {
		var lower int
		if err := s.db.QueryRowContext(ctx, "SELECT @@lower_case_table_names").Scan(&lower); err == nil {
			s.schemas.fold = lower != 0
		}
	}
	s.loadSchemas(ctx, start)
	if s.cfg.SnapshotSchemas && len(s.schemas.tables) == 0 {
		s.snapshotSchemas(ctx, start)
	}
	if s.db != nil {
		s.schemas.include = s.cfg.Tables
		s.schemas.dbCharset = s.dbCharset(ctx)
	}
	defer s.saveSchemas(context.WithoutCancel(ctx), true)
	// A start that is not the stored checkpoint (a first start, an explicit position): XA transactions prepared
	// before it were never read.
	up := s.cfg.SchemasUpTo
	fresh := up.File != start.File || up.Pos != start.Pos || up.GTIDSet != start.GTIDSet
	var conflictSince, conflictLast time.Time
	for {
		st, err := s.newStream(resume, out)
		if err == nil {
			if s.cfg.Connected != nil {
				s.cfg.Connected(true)
			}
			st.fresh, fresh = fresh, false
			err = st.run(ctx)
			if st.published.File != "" || st.published.GTIDSet != "" {
				resume = st.published
			}
			if st.progressed {
				backoff = 100 * time.Millisecond
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if sameServerID(err) {
			// Another replica registered with this server id: the server drops one of the two connections
			// each time the other connects. A dump thread of this process's previous run can linger a
			// while, so only a conflict that lasts stops the source.
			now := time.Now()
			if now.Sub(conflictLast) > time.Minute {
				conflictSince = now
			}
			conflictLast = now
			msg := fmt.Sprintf("another replica of the server uses server id %d (mysql.server_id); give every "+
				"binlogsync and every replica its own", s.cfg.ServerID)
			if now.Sub(conflictSince) > sameIDPatience {
				return permanent(fmt.Errorf("%w: %s (the two have taken the connection from each other for %v)",
					ErrServerIDConflict, msg, sameIDPatience))
			}
			s.log.Warn(msg, slog.String("error", err.Error()))
		} else if !retryable(err) {
			return err
		}
		s.cfg.Metrics.Reconnect()
		if s.cfg.Connected != nil {
			s.cfg.Connected(false)
		}
		s.log.Warn("binlog stream interrupted; reconnecting",
			slog.String("error", err.Error()), slog.String("resume_file", resume.File),
			slog.Uint64("resume_pos", uint64(resume.Pos)), slog.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.cfg.ReconnectMaxBackoff)
	}
}

// DefaultBatchBytes is the default Config.BatchBytes: with the queue's batches and the two in flight, it keeps a
// transaction of large rows to some hundreds of megabytes however many rows it has.
const DefaultBatchBytes = 4 << 20

// ErrServerChanged means the server behind mysql.addr is no longer the one the stream started on (a failover
// behind a virtual IP, a DNS name or a proxy).
var ErrServerChanged = errors.New("the server behind mysql.addr changed while streaming")

// checkIdentity makes sure that a (re)connected stream reads the binlog of the server it started on (ServerUUID):
// it runs on the binlog connection itself, before the dump starts, so no event of another server is read. The
// positions of another server's binlog do not compare with the old one's, so its changes need versions of a new
// epoch, which only a start moves to (and a start resumes by GTID where it can).
func (s *Source) checkIdentity(c *client.Conn) error {
	if s.cfg.ServerUUID == "" {
		return nil
	}
	r, err := c.Execute(identityQuery(s.cfg.Flavor))
	if err != nil {
		return fmt.Errorf("reading the server identity: %w", err)
	}
	id, err := r.GetString(0, 0)
	if err != nil {
		return fmt.Errorf("reading the server identity: %w", err)
	}
	if id == s.cfg.ServerUUID {
		return nil
	}
	return permanent(fmt.Errorf("%w (it was %s, it is now %s): binlogsync stops after applying what it read from "+
		"the old server, and its checkpoint stays with that server. Start it again (a container restart does): it moves "+
		"versions to a new epoch, so the new server's changes win over the old one's, and resumes by GTID set "+
		"(mysql.gtid auto or on); without a GTID set in the checkpoint it stops with exit code 4 and the way to "+
		"re-derive Redis. See docs/runbook.md \"MySQL failover\"", ErrServerChanged, s.cfg.ServerUUID, id))
}

func identityQuery(flavor string) string {
	if flavor == gmysql.MariaDBFlavor {
		return "SELECT CONCAT('mariadb-server-id:', @@server_id)"
	}
	return "SELECT @@server_uuid"
}

// ServerIdentity names the server that writes the binlog, to notice a failover: @@server_uuid on MySQL, the
// server_id on MariaDB (which has no server_uuid).
func ServerIdentity(ctx context.Context, db *sql.DB, flavor string) (string, error) {
	var id string
	if err := db.QueryRowContext(ctx, identityQuery(flavor)).Scan(&id); err != nil {
		return "", fmt.Errorf("reading the server identity: %w", err)
	}
	return id, nil
}

// ErrServerIDConflict means another replica keeps registering with the source's server id.
var ErrServerIDConflict = errors.New("server id conflict")

// sameIDPatience is how long a server id conflict may last before the source stops.
var sameIDPatience = 2 * time.Minute

// sameServerID reports whether err is the server refusing or dropping the connection because another replica
// registered with the same server id (MariaDB error 4052; MySQL's 1236 with that message).
func sameServerID(err error) bool {
	var myErr *gmysql.MyError
	if !errors.As(err, &myErr) {
		return false
	}
	return myErr.Code == 4052 || myErr.Code == 1236 && strings.Contains(myErr.Message, "same server_uuid/server_id")
}

// retryable tells a broken connection (retry) from a permanent error.
func retryable(err error) bool {
	if err == nil {
		return true
	}
	var perm *permanentError
	if errors.As(err, &perm) {
		return false
	}
	var myErr *gmysql.MyError
	if errors.As(err, &myErr) {
		switch myErr.Code {
		case 1236, 1045, 1044, 1227, 1142, 1143:
			// binlog gone / access denied: reconnecting does not help
			return false
		}
	}
	return true
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

// stream is one connection's worth of reading.
type stream struct {
	s      *Source
	out    chan<- *change.Batch
	syncer *replication.BinlogSyncer
	bs     *replication.BinlogStreamer

	flavor string
	gset   gmysql.GTIDSet // executed set at the last boundary; nil without GTIDs

	file    string
	fileSeq uint32
	pos     uint32 // end of the last event read = start of the next one

	inTx    bool
	begun   bool   // a transaction (BEGIN, XA START, or a MariaDB GTID group that is not standalone): its other statements are not DDL
	txStart uint32 // position of the current transaction's first event
	txFile  uint32
	seq     uint32 // changes numbered within the transaction

	tables map[uint64]*tableState
	// shapes holds each table's fields and their binlog types as last resolved (kept across DDL), to warn when a
	// statement changed only the types: the sink notices changed names itself.
	shapes map[string]tableShape

	pending   *change.Batch
	arena     arena
	lastBatch int              // changes in the batch handed off last
	boundary  *change.Position // newest boundary not yet handed out
	published change.Position  // newest boundary handed out
	// progressed is set once the stream handed out anything, to reset backoff.
	progressed bool
	// waitCtx ends when the batch that could not be handed off must be.
	waitCtx    context.Context
	waitCancel context.CancelFunc
	eventTime  time.Time

	xa xaState // XA transactions (xa.go)
	// stmtStop is set when the transaction being read holds a row change logged as a statement: the stream stops
	// at the transaction's end, without committing it, so that the position it names is one a start accepts.
	stmtStop *stmtStop
	// fresh is set on the first stream of a run that did not start from a checkpoint.
	fresh bool
	// rotated is set once the stream read a rotation from the binlog: from there on it reads every event in order.
	rotated bool
}

type tableState struct {
	types  []byte // table map column types, to notice a changed definition
	table  *change.Table
	cols   []Column
	keep   []int // source column index for each output column
	skip   bool  // table excluded
	schema string
	name   string
}

func (s *Source) newStream(start change.Position, out chan<- *change.Batch) (*stream, error) {
	host, portStr, err := net.SplitHostPort(s.cfg.Addr)
	if err != nil {
		return nil, permanent(fmt.Errorf("mysql.addr %q is not host:port: %w", s.cfg.Addr, err))
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, permanent(fmt.Errorf("mysql.addr %q has a bad port: %w", s.cfg.Addr, err))
	}
	bcfg := replication.BinlogSyncerConfig{
		ServerID:         s.cfg.ServerID,
		Flavor:           s.cfg.Flavor,
		Host:             host,
		Port:             uint16(port),
		User:             s.cfg.User,
		Password:         s.cfg.Password,
		Charset:          "utf8mb4",
		TLSConfig:        s.cfg.TLS,
		HeartbeatPeriod:  s.cfg.Heartbeat,
		ReadTimeout:      s.cfg.ReadTimeout,
		DisableRetrySync: true, // we resume from transaction boundaries ourselves
		Logger:           slog.New(goMySQLHandler{s.log.Handler()}).With(slog.String("component", "go-mysql")),
		// Events read ahead of the parser. An event can hold a row of any size (a row larger than
		// binlog_row_event_max_size is an event of its own), so this bounds memory as much as speed: 256 held a
		// quarter of a gigabyte of 1 MiB rows, and drains of small rows go as fast with 16 (BENCHMARKS.md).
		EventCacheCount: 16,
		Dialer:          lazyDeadlineDialer(s.cfg.ConnectTimeout, s.cfg.ReadTimeout),
	}
	var identityErr error
	bcfg.Option = func(c *client.Conn) error {
		identityErr = s.checkIdentity(c)
		return identityErr
	}
	if s.cfg.Flavor == gmysql.MariaDBFlavor {
		bcfg.FillZeroLogPos = true // MariaDB 11.4+ sends zero log positions otherwise
	}
	ConfigureDecoding(&bcfg)
	st := &stream{
		s:         s,
		out:       out,
		flavor:    s.cfg.Flavor,
		tables:    map[uint64]*tableState{},
		published: start,
	}
	st.xa.lastCommit = start
	s.cfg.Metrics.XAPrepared(0) // a new stream reads the prepared transactions again
	if s.cfg.TrackGTID {
		st.gset, err = gmysql.ParseGTIDSet(s.cfg.Flavor, start.GTIDSet)
		if err != nil {
			return nil, permanent(fmt.Errorf("parsing the start GTID set %q: %w", start.GTIDSet, err))
		}
	}
	// The tracked schemas as they were at start (a reconnect may resume before DDL statements already applied).
	startSeq, _ := change.FileSeq(start.File)
	if s.schemas.rewind(startSeq, start.Pos) && startSeq != 0 {
		s.log.Warn("the schemas followed across DDL do not reach back to the resume position (more DDL statements "+
			"since it than are kept); tables without column names in the binlog are read from information_schema "+
			"again, which is only right if no DDL changed them since; binlog_row_metadata=FULL avoids this",
			slog.String("file", start.File), slog.Uint64("pos", uint64(start.Pos)))
	}
	st.syncer = replication.NewBinlogSyncer(bcfg)
	if s.cfg.UseGTID && st.gset != nil {
		st.bs, err = st.syncer.StartSyncGTID(st.gset.Clone())
	} else {
		if err := st.setFile(start.File); err != nil {
			st.syncer.Close()
			return nil, permanent(err)
		}
		st.pos = start.Pos
		st.bs, err = st.syncer.StartSync(gmysql.Position{Name: start.File, Pos: start.Pos})
	}
	if err != nil {
		st.syncer.Close()
		if identityErr != nil {
			return nil, identityErr // go-mysql's wrapping hides whether it is permanent
		}
		return nil, fmt.Errorf("starting the binlog dump at %s:%d: %w", start.File, start.Pos, err)
	}
	return st, nil
}

func (st *stream) setFile(name string) error {
	seq, err := change.FileSeq(name)
	if err != nil {
		return err
	}
	st.file, st.fileSeq = name, seq
	return nil
}

func (st *stream) run(ctx context.Context) error {
	defer st.syncer.Close()
	defer st.stopWaiting()
	for {
		ev, err := st.nextEvent(ctx)
		if err != nil {
			return st.explain(err)
		}
		if ev == nil { // waited BatchWait with a batch that could not be handed off
			if err := st.flush(ctx, true); err != nil {
				return err
			}
			continue
		}
		if err := st.handle(ctx, ev, ev.Header.LogPos); err != nil {
			return err
		}
	}
}

// nextEvent reads the next event. While a batch waits to be handed off it
// waits only until that batch's deadline (BatchWait after the first failed
// hand-off) and returns nil when it passes.
func (st *stream) nextEvent(ctx context.Context) (*replication.BinlogEvent, error) {
	if st.waitCtx == nil {
		return st.bs.GetEvent(ctx)
	}
	ev, err := st.bs.GetEvent(st.waitCtx)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, nil
	}
	return ev, err
}

// stopWaiting forgets the hand-off deadline of the batch just handed off.
func (st *stream) stopWaiting() {
	if st.waitCancel != nil {
		st.waitCancel()
		st.waitCtx, st.waitCancel = nil, nil
	}
}

func (st *stream) explain(err error) error {
	var myErr *gmysql.MyError
	if errors.As(err, &myErr) && myErr.Code == 1236 && !sameServerID(err) {
		return permanent(fmt.Errorf("%w: %s:%d (server said: %s). Keep the checkpoint and re-derive Redis from "+
			"MySQL: `reconciler run --config FILE --scan-orphans --restore-expired --restart --output json`, then "+
			"start binlogsync with --start-file and --start-pos from the report's start; see docs/runbook.md "+
			"\"The binlog to resume from is gone\"", ErrBinlogGone, st.published.File, st.published.Pos, myErr.Message))
	}
	return fmt.Errorf("reading the binlog at %s:%d: %w", st.file, st.pos, err)
}

// handle processes one event; endPos is the position right after it.
func (st *stream) handle(ctx context.Context, ev *replication.BinlogEvent, endPos uint32) error {
	if ev.Header.Timestamp != 0 {
		st.eventTime = time.Unix(int64(ev.Header.Timestamp), 0)
	}
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		if err := st.setFile(string(e.NextLogName)); err != nil {
			return permanent(err)
		}
		st.pos = uint32(e.Position)
		// A rotation read from the binlog (the one a connection starts with has no timestamp): the next file is
		// read from its start, so its opening events may move the boundary (passHeader).
		// MariaDB follows a rotation with a rotation of its own making (no timestamp) into the same file.
		if ev.Header.Timestamp != 0 {
			st.rotated = true
		}
		st.s.cfg.Metrics.Event("rotate")
		return nil
	case *replication.FormatDescriptionEvent, *replication.PreviousGTIDsEvent, *replication.MariadbGTIDListEvent,
		*replication.MariadbBinlogCheckPointEvent:
		return st.passHeader(ctx, ev, endPos)
	case *replication.GTIDEvent:
		st.atEventStart(ev)
		st.beginTx()
		if err := st.addGTID(e); err != nil {
			return err
		}
	case *replication.MariadbGTIDEvent:
		st.atEventStart(ev)
		st.beginTx()
		// MariaDB writes no BEGIN: a group that is not standalone (DDL is) ends with a COMMIT or XID.
		st.begun = !e.IsStandalone()
		if e.Flags&xaFlagPrepared != 0 {
			st.xaBegin()
		}
		if ms, ok := st.gset.(*gmysql.MariadbGTIDSet); ok {
			// The direct path: GTIDNext and Update format and parse the GTID
			// twice, a cost that shows with one row per transaction.
			if err := ms.AddSet(&e.GTID); err != nil {
				return permanent(fmt.Errorf("adding GTID %s at %s:%d: %w", e.GTID.String(), st.file, st.pos, err))
			}
		} else if err := st.addGTID(e); err != nil {
			return err
		}
	case *replication.QueryEvent:
		q := strings.TrimSpace(string(e.Query))
		switch {
		case hasPrefixFold(q, "XA COMMIT") || hasPrefixFold(q, "XA ROLLBACK"):
			return st.xaOutcome(ctx, q, endPos)
		case strings.EqualFold(q, "BEGIN") || hasPrefixFold(q, "XA START"):
			if !st.inTx {
				st.beginTx()
			}
			st.begun = true
			if len(q) > 2 && (q[0] == 'X' || q[0] == 'x') {
				st.xaBegin()
			}
		case strings.EqualFold(q, "COMMIT") || st.begun && strings.EqualFold(q, "ROLLBACK"):
			// ROLLBACK ends a transaction whose non-transactional changes stay (and are in the binlog).
			st.setPos(endPos)
			return st.commit(ctx)
		case st.statementDMLTable(string(e.Schema), q) != "":
			if st.stmtStop == nil {
				st.stmtStop = &stmtStop{file: st.file, pos: st.pos, query: logQuery(q)}
			}
			st.stmtStop.add(st.statementDMLTable(string(e.Schema), q))
			if !st.begun { // a group of its own: its end is here
				st.setPos(endPos)
				return st.stopAtStatement(ctx)
			}
			// Inside a transaction: read on to its end, committing nothing.
		case st.begun:
			// SAVEPOINT, ROLLBACK TO, RELEASE SAVEPOINT, XA END inside a transaction: no boundary and no DDL
			// (DDL commits implicitly and comes in a group of its own).
		default:
			// DDL (or a statement logged as such): its own transaction. Any
			// table's definition may have changed: table ids are mapped
			// again, and the schemas of tables without names in their table
			// maps follow the statement.
			clear(st.tables)
			st.s.cfg.Metrics.Event("ddl")
			st.s.log.Info("DDL in the binlog", slog.String("schema", string(e.Schema)),
				slog.String("query", logQuery(q)), slog.String("file", st.file), slog.Uint64("pos", uint64(endPos)))
			if !st.s.schemas.seen(st.fileSeq, endPos) {
				if forgot := st.s.schemas.apply(string(e.Schema), q, st.fileSeq, endPos); forgot != nil {
					st.s.log.Warn("a DDL statement the source cannot follow: the schemas of these tables are read "+
						"from information_schema again, which is only right if no later DDL changed them; "+
						"binlog_row_metadata=FULL avoids this", slog.Any("tables", forgot), slog.String("query", logQuery(q)))
				}
				// Saved before the statement's boundary can reach a checkpoint: a restart after it must not
				// take the schemas from before it.
				st.s.saveSchemas(ctx, true)
			}
			st.setPos(endPos)
			return st.commit(ctx)
		}
	case *replication.TableMapEvent:
		if err := st.tableMap(ctx, e); err != nil {
			return err
		}
	case *replication.RowsEvent:
		if err := st.rows(ctx, ev.Header.EventType, e); err != nil {
			return err
		}
	case *replication.XIDEvent:
		st.setPos(endPos)
		return st.commit(ctx)
	case *replication.TransactionPayloadEvent:
		// MySQL 8 binlog_transaction_compression: the inner events carry no
		// positions of their own; the whole payload ends at endPos.
		for _, inner := range e.Events {
			if err := st.handle(ctx, inner, endPos); err != nil {
				return err
			}
		}
		st.setPos(endPos)
		return nil
	case *replication.HeartbeatEvent:
		st.s.cfg.Metrics.Event("heartbeat")
		return st.heartbeat(ctx)
	case *replication.GenericEvent:
		if data, ok := isXAPrepare(ev); ok {
			return st.xaPrepared(ctx, data, endPos)
		}
	}
	st.setPos(endPos)
	return nil
}

// setPos records the end of the event just handled, when the server gave one.
func (st *stream) setPos(p uint32) {
	if p != 0 {
		st.pos = p
	}
}

// atEventStart sets the position to where ev starts by its own header, when it has one. The end of the event
// before is not always there: a start by GTID set skips the transactions already in the set, and MySQL tells where
// the skipping ended only in a heartbeat. A transaction's versions come from its start, so the first transaction
// after a GTID resume was versioned at the end of the file's opening events, below the changes already applied
// from before, and the fence dropped it.
func (st *stream) atEventStart(ev *replication.BinlogEvent) {
	if h := ev.Header; h.LogPos != 0 && h.LogPos >= h.EventSize {
		st.pos = h.LogPos - h.EventSize
	}
}

func (st *stream) beginTx() {
	st.inTx, st.begun = true, false
	st.xa.open = false
	st.stmtStop = nil
	st.txStart = st.pos
	st.txFile = st.fileSeq
	st.seq = 0
}

type gtidNexter interface {
	GTIDNext() (gmysql.GTIDSet, error)
}

func (st *stream) addGTID(e gtidNexter) error {
	if st.gset == nil {
		return nil // not tracking (Config.TrackGTID)
	}
	next, err := e.GTIDNext()
	if err != nil {
		return permanent(fmt.Errorf("decoding a GTID event at %s:%d: %w", st.file, st.pos, err))
	}
	if err := st.gset.Update(next.String()); err != nil {
		return permanent(fmt.Errorf("adding GTID %s at %s:%d: %w", next, st.file, st.pos, err))
	}
	return nil
}

// passHeader moves the boundary over an event that opens a binlog file (format description, previous GTIDs on
// MySQL, GTID list and binlog checkpoint on MariaDB) after a rotation read from the binlog: these belong to no
// transaction, and on a server idle since the rotation nothing else follows them. Before, the checkpoint stayed in
// the previous file until the next transaction, and a reconciler pass waited SettleTimeout for a stream that had
// read everything. The events a connection starts with move nothing: a start by GTID set is sent the file's
// opening events and then the events from its place further on.
func (st *stream) passHeader(ctx context.Context, ev *replication.BinlogEvent, endPos uint32) error {
	if !st.rotated || st.inTx || ev.Header.LogPos == 0 || endPos <= st.pos {
		if _, ok := ev.Event.(*replication.FormatDescriptionEvent); !ok {
			st.setPos(endPos) // a connection's format description is the file's, not an event at the position
		}
		return nil
	}
	st.setPos(endPos)
	st.markBoundary()
	return st.flush(ctx, false)
}

// markBoundary makes the current position (and GTID set) the newest boundary to hand out.
func (st *stream) markBoundary() {
	b := change.Position{
		File:       st.file,
		Pos:        st.pos,
		Flavor:     st.flavor,
		Epoch:      st.s.cfg.Epoch,
		ServerUUID: st.s.cfg.ServerUUID,
	}
	if st.gset != nil {
		b.GTIDSet = formatGTIDSet(st.gset)
	}
	b = st.boundaryNow(b)
	st.boundary = &b
}

// commit marks a transaction boundary at the current position.
func (st *stream) commit(ctx context.Context) error {
	if st.stmtStop != nil {
		return st.stopAtStatement(ctx)
	}
	st.inTx, st.begun = false, false
	if st.xa.open { // an XA transaction that ended without XA PREPARE (one phase): its rows are committed
		if err := st.xaUnpark(ctx); err != nil {
			return err
		}
	}
	st.s.cfg.Metrics.Event("commit")
	if st.s.schemas.dirty {
		st.s.saveSchemas(ctx, false)
	}
	st.markBoundary()
	return st.flush(ctx, false)
}

// formatGTIDSet is set.String(), without fmt for the usual MariaDB set of one domain (every transaction
// formats the set).
func formatGTIDSet(set gmysql.GTIDSet) string {
	ms, ok := set.(*gmysql.MariadbGTIDSet)
	if !ok || len(ms.Sets) != 1 {
		return set.String()
	}
	for _, g := range ms.Sets {
		if g.DomainID == 0 && g.ServerID == 0 && g.SequenceNumber == 0 {
			return ""
		}
		b := make([]byte, 0, 32)
		b = strconv.AppendUint(b, uint64(g.DomainID), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(g.ServerID), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, g.SequenceNumber, 10)
		return string(b)
	}
	return ""
}

// heartbeat: the server has nothing new. Hand off what waits, and an empty
// batch stamped now so the sink knows it is caught up (lag 0).
func (st *stream) heartbeat(ctx context.Context) error {
	if st.inTx {
		return nil
	}
	st.eventTime = time.Now()
	st.ensurePending()
	return st.flush(ctx, true)
}

func (st *stream) ensurePending() {
	if st.pending == nil {
		// Sized like the batch before: a steady load of small transactions hands off a batch per transaction,
		// and each should not allocate (and clear) room for hundreds of changes.
		st.pending = &change.Batch{Changes: make([]change.Change, 0, min(st.s.cfg.BatchRows, max(st.lastBatch, 8)))}
		st.arena.reset()
	}
}

// flush hands the pending batch to out. Without block it only tries, so that
// batches grow while the sink is busy (throughput) and leave at once while it
// is idle (latency).
func (st *stream) flush(ctx context.Context, block bool) error {
	if st.pending == nil && st.boundary == nil {
		return nil
	}
	st.ensurePending()
	b := st.pending
	b.Boundary = st.boundary
	b.EventTime = st.eventTime
	if block {
		select {
		case st.out <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
	} else {
		select {
		case st.out <- b:
		default:
			if st.waitCtx == nil {
				st.waitCtx, st.waitCancel = context.WithTimeout(ctx, st.s.cfg.BatchWait)
			}
			return nil
		}
	}
	st.stopWaiting()
	if st.boundary != nil {
		st.published = *st.boundary
		// The newest boundary read, which a parked XA transaction may keep the published one behind.
		st.s.cfg.Metrics.SourcePosition(st.xa.lastCommit, st.eventTime)
	}
	st.progressed = true
	st.lastBatch = len(b.Changes)
	st.pending, st.boundary = nil, nil
	return nil
}

func (st *stream) tableMap(ctx context.Context, e *replication.TableMapEvent) error {
	if ts, ok := st.tables[e.TableID]; ok && string(ts.types) == string(e.ColumnType) &&
		ts.schema == string(e.Schema) && ts.name == string(e.Table) {
		return nil
	}
	db, name := string(e.Schema), string(e.Table)
	ts := &tableState{types: append([]byte(nil), e.ColumnType...), schema: db, name: name}
	st.tables[e.TableID] = ts
	if !st.s.cfg.Tables(db, name) {
		ts.skip = true
		return nil
	}
	var fallback *TableSchema
	tracked := false
	if len(e.ColumnName) == 0 {
		if fallback = st.s.schemas.get(db, name); fallback != nil {
			tracked = true
		} else {
			var err error
			if fallback, err = LoadTableSchema(ctx, st.s.db, db, name); err != nil {
				return fmt.Errorf("loading the schema of %s.%s (the binlog carries no column names; "+
					"binlog_row_metadata=FULL avoids this look-up): %w", db, name, err)
			}
			st.s.schemas.putAt(fallback, st.txFile, st.txStart)
		}
	} else if fallback = st.s.schemas.get(db, name); fallback == nil {
		// The table map names every column, but not ZEROFILL or MariaDB's UUID/INET types: the schema adds
		// them where it still describes the same columns (ResolveColumns checks).
		var err error
		if fallback, err = LoadTableSchema(ctx, st.s.db, db, name); err != nil {
			st.s.log.Debug("reading the schema for ZEROFILL and UUID/INET columns failed; rendering without it",
				slog.String("table", db+"."+name), slog.String("error", err.Error()))
			fallback = nil
		}
	}
	var rule *ColumnRule
	if st.s.cfg.Columns != nil {
		rule = st.s.cfg.Columns(db, name)
	}
	cols, pk, err := ResolveColumns(e, fallback)
	if err != nil && tracked && !errors.Is(err, ErrNoPrimaryKey) {
		// The tracked schema does not fit the rows (a statement it followed wrongly): read the table again.
		st.s.log.Warn("the tracked schema does not match the table map; reading information_schema again",
			slog.String("table", db+"."+name), slog.String("error", err.Error()))
		st.s.schemas.forget(db, name)
		if fallback, err = LoadTableSchema(ctx, st.s.db, db, name); err != nil {
			return fmt.Errorf("loading the schema of %s.%s: %w", db, name, err)
		}
		st.s.schemas.putAt(fallback, st.txFile, st.txStart)
		cols, pk, err = ResolveColumns(e, fallback)
	}
	if errors.Is(err, ErrNoPrimaryKey) {
		if rule == nil || len(rule.KeyColumns) == 0 {
			ts.skip = true
			st.s.log.Warn("skipping the changes of a table without a primary key; set tables.rules[].key_columns "+
				"to the columns of a NOT NULL unique key to replicate it, or leave it out with tables.exclude",
				slog.String("table", db+"."+name), slog.String("file", st.file), slog.Uint64("pos", uint64(st.pos)))
			return nil
		}
		pk, err = keyColumns(db, name, cols, rule.KeyColumns)
	}
	if err != nil {
		return permanent(fmt.Errorf("reading the table map of %s.%s at %s:%d: %w", db, name, st.file, st.pos, err))
	}
	table, keep, err := project(db, name, cols, pk, rule)
	if err != nil {
		return permanent(err)
	}
	ts.cols, ts.keep, ts.table = cols, keep, table
	st.noteShape(e, table, keep)
	return nil
}

// tableShape is a table's fields and the binlog types of their columns (type and metadata, which hold lengths,
// precisions and scales).
type tableShape struct {
	fields []string
	types  string
}

// noteShape warns when a table's columns keep their names but not their types (ALTER TABLE ... MODIFY, CONVERT
// TO CHARACTER SET): the rows written before keep their old values in Redis until they change.
func (st *stream) noteShape(e *replication.TableMapEvent, table *change.Table, keep []int) {
	var b strings.Builder
	for _, i := range keep {
		if i < len(e.ColumnType) {
			b.WriteByte(e.ColumnType[i])
		}
		if i < len(e.ColumnMeta) {
			fmt.Fprintf(&b, ":%d,", e.ColumnMeta[i])
		}
	}
	cur := tableShape{fields: table.Columns, types: b.String()}
	name := table.FullName()
	prev, ok := st.shapes[name]
	if st.shapes == nil {
		st.shapes = map[string]tableShape{}
	}
	st.shapes[name] = cur
	if ok && slices.Equal(prev.fields, cur.fields) && prev.types != cur.types {
		st.s.log.Warn("the column types of a table changed (ALTER TABLE): its rows written before may keep their "+
			"old values in Redis until they change; "+ReshapeHint(name), slog.String("table", name))
	}
}

// ReshapeHint is how rows written before an ALTER TABLE of table get its new columns, for the warnings.
func ReshapeHint(table string) string {
	return "`reconciler serve` reconciles the table within reconcile.schema_check, or run `reconciler run --table " +
		table + "`"
}

// keyColumns returns the indexes in cols of a table's configured key columns.
func keyColumns(db, name string, cols []Column, names []string) ([]int, error) {
	pk := make([]int, 0, len(names))
	for _, n := range names {
		i := slices.IndexFunc(cols, func(c Column) bool { return c.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("tables.rules[].key_columns of %s.%s names %q, which the table does not have; "+
				"name the columns of a NOT NULL unique key", db, name, n)
		}
		pk = append(pk, i)
	}
	return pk, nil
}

// project applies a column rule: which source columns become which fields.
func project(db, name string, cols []Column, pk []int, rule *ColumnRule) (*change.Table, []int, error) {
	t := &change.Table{DB: db, Name: name}
	included := func(c string) bool { return true }
	if rule != nil {
		inc := toSet(rule.Include)
		exc := toSet(rule.Exclude)
		included = func(c string) bool {
			if len(inc) > 0 && !inc[c] {
				return false
			}
			return !exc[c]
		}
	}
	outIdx := make(map[int]int, len(cols))
	var keep []int
	seen := map[string]string{}
	for i, c := range cols {
		if !included(c.Name) {
			continue
		}
		field := c.Name
		if rule != nil && rule.Rename[c.Name] != "" {
			field = rule.Rename[c.Name]
		}
		if strings.HasPrefix(field, "_") {
			return nil, nil, fmt.Errorf("column %s.%s.%s: field name %q starts with '_', which SPEC reserves "+
				"for metadata such as _v; rename it with tables.rules[].columns.rename", db, name, c.Name, field)
		}
		if prev, dup := seen[field]; dup {
			return nil, nil, fmt.Errorf("columns %s and %s of %s.%s both map to field %q; fix tables.rules[].columns.rename",
				prev, c.Name, db, name, field)
		}
		seen[field] = c.Name
		outIdx[i] = len(t.Columns)
		t.Columns = append(t.Columns, field)
		keep = append(keep, i)
	}
	for _, p := range pk {
		o, ok := outIdx[p]
		if !ok {
			return nil, nil, fmt.Errorf("the column rules of %s.%s remove primary-key column %s; "+
				"the key is built from it, so keep it in tables.rules[].columns", db, name, cols[p].Name)
		}
		t.PK = append(t.PK, o)
	}
	return t, keep, nil
}

func toSet(l []string) map[string]bool {
	if len(l) == 0 {
		return nil
	}
	m := make(map[string]bool, len(l))
	for _, s := range l {
		m[s] = true
	}
	return m
}

func (st *stream) rows(ctx context.Context, et replication.EventType, e *replication.RowsEvent) error {
	ts, ok := st.tables[e.TableID]
	if !ok {
		return permanent(fmt.Errorf("rows event for unknown table id %d at %s:%d", e.TableID, st.file, st.pos))
	}
	if ts.skip {
		return nil
	}
	if !st.inTx { // a server that logs rows without BEGIN (not seen in practice)
		st.beginTx()
	}
	var op change.Op
	switch et {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2,
		replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		op = change.Insert
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2,
		replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1:
		op = change.Update
	case replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2,
		replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		op = change.Delete
	default:
		return permanent(fmt.Errorf("%s.%s: unsupported rows event %s at %s:%d (partial JSON updates need "+
			"binlog_row_value_options='' on the server)", ts.schema, ts.name, et, st.file, st.pos))
	}
	if len(e.SkippedColumns) > 0 {
		for _, sk := range e.SkippedColumns {
			if len(sk) > 0 {
				return permanent(fmt.Errorf("%s.%s: the binlog row image at %s:%d lacks columns; set "+
					"binlog_row_image=FULL on the server", ts.schema, ts.name, st.file, st.pos))
			}
		}
	}
	step := 1
	if op == change.Update {
		step = 2
	}
	commit := st.eventTime
	n := 0
	for i := 0; i+step-1 < len(e.Rows); i += step {
		st.ensurePending()
		c := change.Change{Op: op, Table: ts.table, CommitTime: commit}
		var err error
		switch op {
		case change.Insert:
			c.After, err = st.render(ts, e.Rows[i])
		case change.Delete:
			c.Before, err = st.render(ts, e.Rows[i])
		case change.Update:
			if c.Before, err = st.render(ts, e.Rows[i]); err == nil {
				c.After, err = st.render(ts, e.Rows[i+1])
			}
		}
		if err != nil {
			return permanent(fmt.Errorf("rendering a row of %s.%s at %s:%d: %w", ts.schema, ts.name, st.file, st.pos, err))
		}
		if row := c.After; row != nil || c.Before != nil {
			if row == nil {
				row = c.Before
			}
			for _, k := range ts.table.PK {
				if row[k] == nil {
					return permanent(fmt.Errorf("%s.%s: a row at %s:%d has NULL in key column %s; key columns "+
						"(tables.rules[].key_columns) must be NOT NULL", ts.schema, ts.name, st.file, st.pos, ts.table.Columns[k]))
				}
			}
		}
		st.seq++
		c.Version = change.Version{Epoch: st.s.cfg.Epoch, File: st.txFile, Pos: st.txStart, Seq: st.seq}
		n++
		if kept, err := st.xaKeep(ctx, c); err != nil {
			return err
		} else if kept {
			continue
		}
		st.ensurePending() // an overflowing XA transaction may have handed the batch off
		st.pending.Changes = append(st.pending.Changes, c)
		st.pending.Bytes += change.RowBytes(c.Before) + change.RowBytes(c.After)
		if len(st.pending.Changes) >= st.s.cfg.BatchRows || st.pending.Bytes >= st.s.cfg.BatchBytes {
			if err := st.flush(ctx, true); err != nil {
				return err
			}
		}
	}
	st.s.cfg.Metrics.RowsRead(ts.table, op, n)
	return nil
}

func (st *stream) render(ts *tableState, img []any) (change.Row, error) {
	if len(img) != len(ts.cols) {
		return nil, fmt.Errorf("row image has %d columns, the table map %d", len(img), len(ts.cols))
	}
	row := st.arena.row(len(ts.keep))
	for o, i := range ts.keep {
		start := len(st.arena.buf)
		buf, null, err := ts.cols[i].AppendValue(st.arena.buf, img[i])
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", ts.cols[i].Name, err)
		}
		if null {
			st.arena.buf = buf[:start]
			row[o] = nil
			continue
		}
		if cap(buf) != cap(st.arena.buf) && start > 0 {
			// The value did not fit and was appended to a fresh array that
			// also holds a copy of earlier values; start a new chunk with it.
			v := buf[start:]
			st.arena.buf = v[len(v):]
			row[o] = v[:len(v):len(v)]
			continue
		}
		st.arena.buf = buf
		row[o] = buf[start:len(buf):len(buf)]
	}
	return row, nil
}

// arena hands out value bytes and row slices from large chunks, so a batch of
// rows costs a few allocations rather than one per value.
type arena struct {
	buf  []byte
	rows [][]byte
}

const arenaChunk = 64 << 10

func (a *arena) reset() { a.buf, a.rows = nil, nil }

func (a *arena) row(n int) change.Row {
	if len(a.rows)+n > cap(a.rows) {
		// Grow geometrically: a batch of one small transaction should not
		// pay for a chunk sized for thousands of rows.
		a.rows = make([][]byte, 0, max(n, min(2*cap(a.rows), 1024), 32))
	}
	r := a.rows[len(a.rows) : len(a.rows)+n : len(a.rows)+n]
	a.rows = a.rows[:len(a.rows)+n]
	if cap(a.buf)-len(a.buf) < 256 {
		a.buf = make([]byte, 0, min(max(2*cap(a.buf), 1024), arenaChunk))
	}
	return change.Row(r)
}

// dmlStatement matches a row change written as a statement, and names its table where it is one table
// (INSERT/REPLACE ... [INTO] t, UPDATE t SET, DELETE FROM t WHERE/LIMIT/ORDER or the end).
var (
	dmlStatement = regexp.MustCompile(`(?is)^\s*(?:/\*.*?\*/\s*)*(?:INSERT|REPLACE|UPDATE|DELETE|LOAD\s+DATA|LOAD\s+XML)\b`)
	dmlTable     = regexp.MustCompile("(?is)^\\s*(?:/\\*.*?\\*/\\s*)*(?:(?:INSERT|REPLACE)(?:\\s+(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE))*(?:\\s+INTO)?|" +
		"UPDATE(?:\\s+(?:LOW_PRIORITY|IGNORE))*|DELETE(?:\\s+(?:LOW_PRIORITY|QUICK|IGNORE))*\\s+FROM)\\s+" +
		"(?:(`[^`]+`|\\w+)\\.)?(`[^`]+`|\\w+)\\s*(?:\\(|SET\\b|VALUES?\\b|SELECT\\b|WHERE\\b|LIMIT\\b|ORDER\\b|$)")
)

// statementDMLTable reports whether q, a statement of the binlog run with default database db, changes rows of a
// replicated table (or of tables it cannot tell): a change the stream would not see. It returns the table as
// db.table, "?" when it cannot tell the tables, and "" when q changes no replicated table.
func (st *stream) statementDMLTable(db, q string) string {
	if !dmlStatement.MatchString(q) {
		return ""
	}
	m := dmlTable.FindStringSubmatch(q)
	if m == nil {
		return "?" // several tables, or a form not recognised: do not guess
	}
	if m[1] != "" {
		db = m[1]
	}
	unquote := func(s string) string { return strings.ReplaceAll(strings.Trim(s, "`"), "``", "`") }
	db, table := unquote(db), unquote(m[2])
	if !st.s.cfg.Tables(db, table) {
		return ""
	}
	return db + "." + table
}

// stopAtStatement ends the stream at the end of a transaction holding row changes logged as statements (st.pos).
// What was read before it is handed off first, with the boundary before the transaction: the transactions before
// it, and its own row-logged changes (it did commit), are applied, while the checkpoint stays before it, so a
// restart without flags stops here again. The position the error gives skips the transaction, and with it the XA
// PREPARE of transactions still prepared: their tables are named for the repair too.
func (st *stream) stopAtStatement(ctx context.Context) error {
	for _, p := range st.xa.parked {
		if p.early {
			continue // applied already
		}
		for i := range p.changes {
			st.stmtStop.add(p.changes[i].Table.FullName())
		}
	}
	if err := st.flush(ctx, true); err != nil {
		return err
	}
	return st.stmtStop.err(st.file, st.pos)
}

// stmtStop is a transaction holding row changes logged as statements.
type stmtStop struct {
	file   string
	pos    uint32   // where the first such statement starts
	query  string   // it, as it may be logged
	tables []string // the replicated tables to repair: the statements', "?" for one naming none clearly
}

func (s *stmtStop) add(table string) {
	if !slices.Contains(s.tables, table) {
		s.tables = append(s.tables, table)
	}
}

// err is the stop, at the end of the transaction (file, end): the position a restart after it gives.
func (s *stmtStop) err(file string, end uint32) error {
	var repair []string
	unknown := false
	for _, t := range s.tables {
		if t == "?" {
			unknown = true
			continue
		}
		repair = append(repair, "--table "+t)
	}
	how := "`reconciler run --config FILE " + strings.Join(repair, " ") + "`"
	if unknown {
		how = "`reconciler run --config FILE` (a statement names its tables in a form binlogsync does not read, so " +
			"all of them)"
	}
	return permanent(fmt.Errorf("a row change logged as a statement at %s:%d (%s): the session that wrote it ran with "+
		"binlog_format STATEMENT or MIXED, and binlogsync reads only row events, so going on would lose it. Set binlog_format=ROW globally and keep "+
		"applications from changing it per session; then repair the tables those statements changed with %s and "+
		"start binlogsync after the transaction with --start-file %s --start-pos %d",
		s.file, s.pos, s.query, how, file, end))
}

// secretStatement matches the statements that can carry a password (CREATE/ALTER USER ... IDENTIFIED BY, SET
// PASSWORD, GRANT ... IDENTIFIED BY, CHANGE MASTER ... MASTER_PASSWORD, CREATE/ALTER SERVER ... PASSWORD).
var secretStatement = regexp.MustCompile(`(?is)^\s*(?:/\*.*?\*/\s*)*(CREATE\s+(?:OR\s+REPLACE\s+)?USER|ALTER\s+USER|` +
	`SET\s+PASSWORD|GRANT|CHANGE\s+MASTER|CHANGE\s+REPLICATION|CREATE\s+(?:OR\s+REPLACE\s+)?SERVER|ALTER\s+SERVER)\b`)

// logQuery is a statement as it may be logged: the first 200 bytes, or only its kind when it can carry a password.
func logQuery(q string) string {
	if m := secretStatement.FindStringSubmatch(q); m != nil {
		return strings.ToUpper(strings.Join(strings.Fields(m[1]), " ")) + " ... (the rest is not logged: it may hold a password)"
	}
	return truncate(q, 200)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// hasPrefixFold reports whether s begins with prefix, ignoring case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
