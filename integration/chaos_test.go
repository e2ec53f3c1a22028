package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// TestIntegrationChaos is the fault suite of the embedded transport. Under a
// steady write load (sysbench oltp_write_only, plus a generator over a table of
// every column type), it injects, one after the other with random gaps: kill
// -9 of binlogsync (5 times), CLIENT PAUSE of Redis, a Redis kill and restart,
// a MariaDB restart, and drops and stalls of the MySQL and Redis connections
// through TCP proxies. After each fault it measures the recovery time: from the
// end of the fault until a marker row written right after it is in Redis. At
// the end it compares every table, MySQL against Redis, and checks that no
// key's version was ever seen to go down.
//
// One round of faults takes about two minutes. CHAOS_DURATION (e.g. 10m)
// repeats rounds until that much time has passed; CHAOS_SEED replays an order.
// The figures go to RELIABILITY.md.
func TestIntegrationChaos(t *testing.T) {
	sysbenchBin, err := exec.LookPath("sysbench")
	if err != nil {
		testenv.Require(t, "sysbench not found (scripts/install-deps.sh sysbench): %v", err)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED: %v", err)
		}
	}
	var duration time.Duration
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		if duration, err = time.ParseDuration(s); err != nil {
			t.Fatalf("CHAOS_DURATION: %v", err)
		}
	}
	t.Logf("CHAOS_SEED=%d CHAOS_DURATION=%s", seed, duration)
	rng := rand.New(rand.NewSource(seed))
	began := time.Now()

	my := testenv.NewMariaDB(t, testenv.MariaDBOptions{})
	// appendfsync always: what Redis acknowledged survives its kill.
	rd := testenv.NewRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	myProxy := testenv.NewProxy(t, my.Addr())
	rdProxy := testenv.NewProxy(t, rd.Addr())
	e := newEnv(t, my, rd)
	e.extra = map[string]string{
		"BINLOGSYNC_MYSQL_ADDR":            myProxy.Addr(),
		"BINLOGSYNC_REDIS_ADDR":            rdProxy.Addr(),
		"BINLOGSYNC_MYSQL_HEARTBEAT":       "500ms",
		"BINLOGSYNC_MYSQL_READ_TIMEOUT":    "3s",
		"BINLOGSYNC_MYSQL_CONNECT_TIMEOUT": "3s",
		"BINLOGSYNC_REDIS_DIAL_TIMEOUT":    "2s",
		"BINLOGSYNC_REDIS_READ_TIMEOUT":    "2s",
		"BINLOGSYNC_REDIS_WRITE_TIMEOUT":   "2s",
		"BINLOGSYNC_CHECKPOINT_INTERVAL":   "1s",   // the default, so a kill -9 replays up to a second
		"BINLOGSYNC_LOG_LEVEL":             "info", // debug would keep megabytes of log per run
	}
	e.exec(allTypesDDL(), "CREATE TABLE chaos_marker (id INT PRIMARY KEY, fault VARCHAR(40), at DATETIME(6))")

	c := &chaos{t: t, e: e}
	c.p = e.start("--config", "../config.example.yaml")

	sb := &sysbenchLoad{bin: sysbenchBin, args: []string{"oltp_write_only", "--tables=4", "--table-size=10000",
		"--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(my.Port), "--mysql-user=root",
		"--mysql-password=" + my.RootPassword, "--mysql-db=" + e.db}}
	if out, err := exec.Command(sb.bin, append(sb.args, "prepare")...).CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	c.waitMarker(c.mark("initial load"), time.Now()) // the 40,000 prepared rows are in Redis

	sb.args = append(sb.args, "--threads=2", "--rate=100")
	sb.start()
	gen := startTypesLoad(t, my, e.db, 2)
	watch := startVersionWatch(e.rdb, e.db)

	// The faults. Each returns the moment the fault ended, from which the
	// recovery time is measured.
	kill9 := fault{name: "kill -9 binlogsync", hits: "replay", inject: func() time.Time {
		c.p.kill9(t)
		end := time.Now() // the restart counts in the recovery time
		c.p = e.start("--config", "../config.example.yaml")
		return end
	}}
	faults := []fault{kill9, kill9, kill9, kill9, kill9,
		{name: "Redis CLIENT PAUSE 3s", hits: "redis", inject: func() time.Time {
			if err := e.rdb.Do(context.Background(), "CLIENT", "PAUSE", "3000").Err(); err != nil {
				t.Fatalf("CLIENT PAUSE: %v", err)
			}
			time.Sleep(3 * time.Second) // longer than redis.read_timeout (2s)
			return time.Now()
		}},
		{name: "Redis kill -9 + restart", hits: "redis", inject: func() time.Time {
			rd.Stop()
			time.Sleep(2 * time.Second)
			if err := rd.Start(); err != nil {
				t.Fatalf("restarting Redis: %v", err)
			}
			return time.Now()
		}},
		{name: "MariaDB restart", hits: "mysql", inject: func() time.Time {
			sb.pause() // sysbench does not survive a server restart
			if err := my.Restart(); err != nil {
				t.Fatalf("restarting MariaDB: %v", err)
			}
			end := time.Now()
			sb.start()
			return end
		}},
		{name: "MySQL proxy drop + refuse 2s", hits: "mysql", inject: func() time.Time {
			myProxy.Refuse()
			myProxy.Drop()
			time.Sleep(2 * time.Second)
			myProxy.Resume()
			return time.Now()
		}},
		{name: "MySQL proxy stall 5s", hits: "mysql", inject: func() time.Time {
			myProxy.Stall() // longer than mysql.read_timeout (3s)
			time.Sleep(5 * time.Second)
			myProxy.Resume()
			return time.Now()
		}},
		{name: "Redis proxy drop + refuse 1s", hits: "redis", inject: func() time.Time {
			rdProxy.Refuse()
			rdProxy.Drop()
			time.Sleep(time.Second)
			rdProxy.Resume()
			return time.Now()
		}},
		{name: "Redis proxy stall 5s", hits: "redis", inject: func() time.Time {
			rdProxy.Stall() // longer than redis.read_timeout (2s)
			time.Sleep(5 * time.Second)
			rdProxy.Resume()
			return time.Now()
		}},
	}
	c.rdProxy = rdProxy
	for round := 0; round == 0 || time.Since(began) < duration; round++ {
		rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
		for _, f := range faults {
			time.Sleep(time.Duration(1000+rng.Intn(3000)) * time.Millisecond)
			c.inject(f)
		}
	}

	sb.pause()
	sbTxs := sb.finish(t)
	genTxs := gen.finish(t)
	c.waitMarker(c.mark("load stopped"), time.Now())
	tables := map[string][]string{"alltypes": {"id"}, "chaos_marker": {"id"}}
	for i := 1; i <= 4; i++ {
		tables[fmt.Sprintf("sbtest%d", i)] = []string{"id"}
	}
	rows, drift := c.compare(tables, 60*time.Second)
	samples, violations := watch.finish(t, e, tables)
	binlogs := e.binaryLogs()

	t.Logf("CHAOS SUMMARY (seed %d, %s total)", seed, time.Since(began).Round(time.Second))
	t.Logf("  transactions written: %d (sysbench oltp_write_only %d, every-type generator %d)", sbTxs+genTxs, sbTxs, genTxs)
	t.Logf("  rows compared: %d in %d tables; drift: %d", rows, len(tables), len(drift))
	t.Logf("  version reads: %d; versions seen going down: %d", samples, len(violations))
	t.Logf("  binlog files: %s to %s", binlogs[0], binlogs[len(binlogs)-1])
	t.Logf("  %-32s %10s  %s", "fault", "recovery", "effect seen")
	for _, r := range c.results {
		t.Logf("  %-32s %10s  %s", r.name, r.recovery.Round(10*time.Millisecond), r.effect)
	}
	if len(drift) > 0 {
		if len(drift) > 30 {
			drift = append(drift[:30], fmt.Sprintf("... and %d more", len(drift)-30))
		}
		t.Errorf("Redis differs from MySQL after the load stopped and the pipeline caught up:\n%s", strings.Join(drift, "\n"))
	}
	if len(violations) > 0 {
		t.Errorf("versions went down (an older change applied over a newer one):\n%s", strings.Join(violations, "\n"))
	}
	if sbTxs < 500 || genTxs < 500 {
		t.Errorf("only %d sysbench and %d generator transactions ran; the load did not exercise much", sbTxs, genTxs)
	}
	if code := c.p.stop(t, 30*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

// fault is one injected failure. hits names what it must have done to
// binlogsync, checked after it, so that a fault that missed the pipeline fails
// the test: "mysql", the binlog stream reconnected; "redis", binlogsync opened
// new Redis connections through the proxy. "replay" (after a kill -9) only
// reports how many replayed changes the fence skipped: none is possible when
// the kill fell right after a checkpoint.
type fault struct {
	name   string
	hits   string
	inject func() time.Time
}

type faultResult struct {
	name     string
	recovery time.Duration
	effect   string
}

// chaos holds the running binlogsync and the per-fault figures.
type chaos struct {
	t       *testing.T
	e       *env
	p       *proc
	rdProxy *testenv.Proxy
	markers int
	results []faultResult
}

func (c *chaos) inject(f fault) {
	c.t.Helper()
	c.alive()
	reconnects, redisConns := c.p.metric(c.t, "binlogsync_binlog_reconnects_total"), c.rdProxy.Accepted()
	c.t.Logf("fault: %s", f.name)
	p, logFrom := c.p, len(c.p.Log())
	end := f.inject()
	rec := c.waitMarker(c.mark(f.name), end)
	if rec > 3*time.Second && p == c.p { // slow: show what binlogsync said meanwhile
		c.t.Logf("%s: recovery took %s; what binlogsync logged since the fault began:\n%s",
			f.name, rec.Round(10*time.Millisecond), warnings(p.Log()[logFrom:], 20))
	}
	r := faultResult{name: f.name, recovery: rec, effect: "-"}
	switch f.hits {
	case "mysql":
		n := c.p.metric(c.t, "binlogsync_binlog_reconnects_total") - reconnects
		r.effect = fmt.Sprintf("binlog reconnects +%g", n)
		if n <= 0 {
			c.t.Errorf("%s: the binlog stream did not reconnect: the fault missed binlogsync", f.name)
		}
	case "redis":
		n := c.rdProxy.Accepted() - redisConns
		r.effect = fmt.Sprintf("new Redis connections +%d", n)
		if n <= 0 {
			c.t.Errorf("%s: binlogsync opened no new Redis connection: the fault missed it", f.name)
		}
	case "replay":
		r.effect = fmt.Sprintf("replayed changes fenced %g", c.p.metric(c.t, "binlogsync_rows_fenced_total"))
	}
	c.results = append(c.results, r)
}

// warnings returns at most n WARN and ERROR lines of log, and the binlog
// connections made.
func warnings(log string, n int) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
			strings.Contains(line, "Connected to server") {
			out = append(out, line)
		}
	}
	if len(out) > n {
		out = append(out[:n], fmt.Sprintf("... and %d more", len(out)-n))
	}
	return strings.Join(out, "\n")
}

// alive fails the test when binlogsync exited without being told to.
func (c *chaos) alive() {
	c.t.Helper()
	select {
	case <-c.p.done:
		c.t.Fatalf("binlogsync exited on its own: %v\n%s", c.p.err, tail(c.p.Log(), 6000))
	default:
	}
}

// mark writes a marker row directly to MariaDB, retrying while the server
// restarts, and returns its id.
func (c *chaos) mark(name string) int {
	c.t.Helper()
	c.markers++
	id := c.markers
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := c.e.sqldb.Exec("INSERT INTO chaos_marker VALUES (?, ?, NOW(6))", id, name)
		if err == nil {
			return id
		}
		if !transientSQL(err) || time.Now().After(deadline) {
			c.t.Fatalf("writing marker %d (%s): %v", id, name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMarker waits until marker id is in Redis (read directly, not through the
// proxy) and returns the time since since.
func (c *chaos) waitMarker(id int, since time.Time) time.Duration {
	c.t.Helper()
	key := fmt.Sprintf("%s:chaos_marker:%d", c.e.db, id)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n, err := c.e.rdb.Exists(context.Background(), key).Result()
		if err == nil && n == 1 {
			return time.Since(since)
		}
		c.alive()
		if time.Now().After(deadline) {
			c.t.Fatalf("marker %d not in Redis after 2 minutes (last error %v)\n%s", id, err, tail(c.p.Log(), 6000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// compare reads every table from MySQL and Redis until they are equal or
// timeout passes, and returns the MySQL row count and the differences left.
func (c *chaos) compare(tables map[string][]string, timeout time.Duration) (int, []string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rows := 0
		var drift []string
		for table, pk := range tables {
			want := c.e.snapshotMySQL(table, pk...)
			got, _ := c.e.snapshotRedis(table)
			floatAsServer(got)
			rows += len(want)
			drift = append(drift, diff(want, got, allTypesFloats)...)
		}
		if len(drift) == 0 || time.Now().After(deadline) {
			return rows, drift
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// floatAsServer rounds Redis's FLOAT values (the shortest text of the
// float32, up to 9 digits) to the 6 significant digits the server prints for
// FLOAT, so that diff compares them at the precision MySQL can show.
func floatAsServer(rows map[string]map[string]string) {
	for _, row := range rows {
		if v, ok := row["c_float"]; ok {
			if f, err := strconv.ParseFloat(v, 32); err == nil {
				row["c_float"] = strconv.FormatFloat(f, 'g', 6, 32)
			}
		}
	}
}

// transientSQL tells errors a writer should retry (the server restarting, a
// dead pooled connection, a deadlock) from real failures.
func transientSQL(err error) bool {
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1213, 1205, // deadlock, lock wait timeout
			1053, 1927, 1317: // server shutdown, connection killed, query interrupted
			return true
		}
		return false
	}
	return true // network level: refused, reset, EOF, bad connection
}

// sysbenchLoad runs sysbench in back-to-back 5-second runs, so that each run
// reports its transaction count and the load can be paused (around a server
// restart) by letting the current run finish.
type sysbenchLoad struct {
	bin  string
	args []string

	mu   sync.Mutex
	txs  int
	errs []error
	stop chan struct{}
	done chan struct{}
}

var sysbenchTxs = regexp.MustCompile(`transactions:\s+(\d+)`)

func (s *sysbenchLoad) start() {
	stop, done := make(chan struct{}), make(chan struct{})
	s.stop, s.done = stop, done
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := exec.Command(s.bin, append(s.args, "--time=5", "run")...).CombinedOutput()
			m := sysbenchTxs.FindSubmatch(out)
			s.mu.Lock()
			if err != nil || m == nil {
				s.errs = append(s.errs, fmt.Errorf("sysbench run: %v\n%s", err, tail(string(out), 2000)))
				s.mu.Unlock()
				return
			}
			n, _ := strconv.Atoi(string(m[1]))
			s.txs += n
			s.mu.Unlock()
		}
	}()
}

// pause waits for the current run to end and starts no other.
func (s *sysbenchLoad) pause() {
	close(s.stop)
	<-s.done
}

func (s *sysbenchLoad) finish(t *testing.T) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, err := range s.errs {
		t.Error(err)
	}
	return s.txs
}

// typesLoad writes to alltypes (every column type) in multi-statement
// transactions: inserts and multi-row upserts, updates to and from NULL,
// multi-row updates, deletes and primary-key changes. It works through server
// restarts, retrying on transient errors.
type typesLoad struct {
	db   *sql.DB
	cols []string
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	txs     int
	retried int
	errs    []error
}

// typesIDs is the primary-key range of the generator: small, so that rows
// are updated, deleted and re-inserted many times.
const typesIDs = 300

func startTypesLoad(t *testing.T, my *testenv.MariaDB, db string, workers int) *typesLoad {
	t.Helper()
	// Writes in a +05:30 session with zero dates allowed, as writeAllTypes.
	h, err := sql.Open("mysql", my.DSN("root", my.RootPassword, db)+"&time_zone=%27%2B05%3A30%27&sql_mode=%27%27")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	g := &typesLoad{db: h, stop: make(chan struct{})}
	_, rows, err := testenv.SelectText(my.Addr(), "root", my.RootPassword, db,
		"SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '"+db+
			"' AND TABLE_NAME = 'alltypes' AND EXTRA NOT LIKE '%GENERATED%' AND COLUMN_NAME <> 'id' ORDER BY ORDINAL_POSITION")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		g.cols = append(g.cols, string(r[0]))
	}
	for w := 0; w < workers; w++ {
		g.wg.Add(1)
		go g.run(rand.New(rand.NewSource(time.Now().UnixNano() + int64(w))))
	}
	return g
}

func (g *typesLoad) run(r *rand.Rand) {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-time.After(time.Duration(r.Intn(20)) * time.Millisecond):
		}
		err := g.tx(r)
		g.mu.Lock()
		switch {
		case err == nil:
			g.txs++
		case transientSQL(err):
			g.retried++
		default:
			g.errs = append(g.errs, err)
		}
		g.mu.Unlock()
		if err != nil {
			if !transientSQL(err) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (g *typesLoad) tx(r *rand.Rand) error {
	tx, err := g.db.Begin()
	if err != nil {
		return err
	}
	for n := 1 + r.Intn(4); n > 0; n-- {
		q, args := g.statement(r)
		if _, err := tx.Exec(q, args...); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("%.300s: %w", q, err)
		}
	}
	return tx.Commit()
}

// statement returns one random write to alltypes.
func (g *typesLoad) statement(r *rand.Rand) (string, []any) {
	var args []any
	value := func(col string) string { // a SQL expression for a random value of col
		v := typeValue(r, col)
		if s, ok := v.(sqlLiteral); ok {
			return string(s)
		}
		args = append(args, v)
		return "?"
	}
	pickCols := func(max int) []string {
		cols := append([]string(nil), g.cols...)
		r.Shuffle(len(cols), func(i, j int) { cols[i], cols[j] = cols[j], cols[i] })
		return cols[:1+r.Intn(max)]
	}
	id := 1 + r.Intn(typesIDs)
	switch k := r.Intn(100); {
	case k < 35: // insert of 1 to 4 rows, upserting on a duplicate key
		cols := pickCols(len(g.cols))
		var tuples, updates []string
		for n := 1 + r.Intn(4)*r.Intn(2); n > 0; n-- {
			vals := []string{strconv.Itoa(1 + r.Intn(typesIDs))}
			for _, c := range cols {
				vals = append(vals, value(c))
			}
			tuples = append(tuples, "("+strings.Join(vals, ",")+")")
		}
		for _, c := range cols {
			updates = append(updates, c+"=VALUES("+c+")")
		}
		return "INSERT INTO alltypes (id," + strings.Join(cols, ",") + ") VALUES " + strings.Join(tuples, ",") +
			" ON DUPLICATE KEY UPDATE " + strings.Join(updates, ","), args
	case k < 55: // columns from NULL to a value and from a value to NULL
		var sets []string
		for _, c := range pickCols(3) {
			sets = append(sets, fmt.Sprintf("%s = IF(%s IS NULL, %s, NULL)", c, c, value(c)))
		}
		return fmt.Sprintf("UPDATE alltypes SET %s WHERE id = %d", strings.Join(sets, ", "), id), args
	case k < 70: // new values on a range of rows
		var sets []string
		for _, c := range pickCols(4) {
			sets = append(sets, c+" = "+value(c))
		}
		return fmt.Sprintf("UPDATE alltypes SET %s WHERE id BETWEEN %d AND %d", strings.Join(sets, ", "), id, id+r.Intn(5)), args
	case k < 85: // delete one or a few rows
		return fmt.Sprintf("DELETE FROM alltypes WHERE id BETWEEN %d AND %d", id, id+r.Intn(3)*r.Intn(2)), nil
	default: // primary-key change
		return fmt.Sprintf("UPDATE IGNORE alltypes SET id = %d WHERE id = %d", 1+r.Intn(typesIDs), id), nil
	}
}

func (g *typesLoad) finish(t *testing.T) int {
	t.Helper()
	close(g.stop)
	g.wg.Wait()
	for _, err := range g.errs {
		t.Errorf("every-type generator: %v", err)
	}
	t.Logf("every-type generator: %d transactions committed, %d retried after transient errors", g.txs, g.retried)
	return g.txs
}

// sqlLiteral is a value written into the statement as is (numbers, whose
// string form the server would convert differently, e.g. into BIT).
type sqlLiteral string

// typeValue returns a random value for a column of alltypes: a sqlLiteral or
// a placeholder argument (string or []byte).
func typeValue(r *rand.Rand, col string) any {
	lit := func(format string, a ...any) any { return sqlLiteral(fmt.Sprintf(format, a...)) }
	sign := func() string {
		if r.Intn(2) == 0 {
			return "-"
		}
		return ""
	}
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('0' + r.Intn(10))
		}
		return string(b)
	}
	frac := func() string { return fmt.Sprintf(".%06d", r.Intn(1000000)) }
	switch {
	case col == "c_tiny":
		return lit("%d", r.Intn(256)-128)
	case col == "c_utiny":
		return lit("%d", r.Intn(256))
	case col == "c_small":
		return lit("%d", r.Intn(1<<16)-1<<15)
	case col == "c_usmall":
		return lit("%d", r.Intn(1<<16))
	case col == "c_med":
		return lit("%d", r.Intn(1<<24)-1<<23)
	case col == "c_umed":
		return lit("%d", r.Intn(1<<24))
	case col == "c_int":
		return lit("%d", r.Int63n(1<<32)-1<<31)
	case col == "c_uint":
		return lit("%d", r.Int63n(1<<32))
	case col == "c_big":
		return lit("%s%d", sign(), r.Int63()>>r.Intn(63))
	case col == "c_ubig", col == "c_bit64":
		return lit("%d", r.Uint64()>>r.Intn(64))
	case col == "c_bit1":
		return lit("%d", r.Intn(2))
	case col == "c_dec":
		return lit("%s%s.%s", sign(), "0"+digits(r.Intn(35)), "0"+digits(r.Intn(30)))
	case col == "c_dec2":
		return lit("%s%d.%02d", sign(), r.Intn(100000000), r.Intn(100))
	case col == "c_float": // at most 7 significant digits, which FLOAT keeps
		return lit("%s%d.%02d", sign(), r.Intn(100000), r.Intn(100))
	case col == "c_double":
		return lit("%s", strconv.FormatFloat(r.NormFloat64()*math.Pow10(r.Intn(61)-30), 'g', -1, 64))
	case col == "c_year":
		if r.Intn(10) == 0 {
			return lit("0")
		}
		return lit("%d", 1901+r.Intn(255))
	case col == "c_date":
		if r.Intn(20) == 0 {
			return "0000-00-00"
		}
		return fmt.Sprintf("%04d-%02d-%02d", 1000+r.Intn(9000), 1+r.Intn(12), 1+r.Intn(28))
	case strings.HasPrefix(col, "c_dt"):
		return fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d%s", 1000+r.Intn(9000), 1+r.Intn(12), 1+r.Intn(28),
			r.Intn(24), r.Intn(60), r.Intn(60), frac())
	case strings.HasPrefix(col, "c_ts"): // in the +05:30 session, inside TIMESTAMP's range
		if r.Intn(20) == 0 {
			return "0000-00-00 00:00:00"
		}
		return fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d%s", 1971+r.Intn(66), 1+r.Intn(12), 1+r.Intn(28),
			r.Intn(24), r.Intn(60), r.Intn(60), frac())
	case strings.HasPrefix(col, "c_time"):
		return fmt.Sprintf("%s%d:%02d:%02d%s", sign(), r.Intn(838), r.Intn(60), r.Intn(60), frac())
	case col == "c_char":
		return randText(r, utf8Alphabet, 10)
	case col == "c_char_l":
		return randText(r, latin1Alphabet, 10)
	case col == "c_varchar":
		return randText(r, utf8Alphabet, 50)
	case col == "c_varchar_l":
		return randText(r, latin1Alphabet, 50)
	case col == "c_text":
		return randText(r, utf8Alphabet, 300)
	case col == "c_text_l":
		return randText(r, latin1Alphabet, 300)
	case col == "c_binary":
		return randBytes(r, 4)
	case col == "c_varbinary":
		return randBytes(r, 20)
	case col == "c_blob":
		return randBytes(r, 3000)
	case col == "c_char_u16":
		return randText(r, utf8Alphabet, 6)
	case col == "c_varchar_u32", col == "c_varchar_le":
		return randText(r, utf8Alphabet, 20)
	case col == "c_text_ucs2":
		return randText(r, bmpAlphabet, 100)
	case col == "c_varchar_cp":
		return randText(r, cp1251Alphabet, 20)
	case col == "c_char_l2":
		return randText(r, latin2Alphabet, 6)
	case col == "c_enum_cp":
		return []string{"а", "б", "x"}[r.Intn(3)]
	case col == "c_enum":
		return []string{"a", "b c", "é"}[r.Intn(3)]
	case col == "c_set":
		var labels []string
		for _, l := range []string{"x", "y", "é"} {
			if r.Intn(2) == 0 {
				labels = append(labels, l)
			}
		}
		return strings.Join(labels, ",")
	case col == "c_json":
		doc := map[string]any{"n": r.Intn(1000), "s": randText(r, utf8Alphabet, 8), "f": r.Float64(),
			"a": []any{nil, true, r.Intn(5)}}
		b, _ := json.Marshal(doc)
		return string(b)
	}
	panic("typeValue: no generator for column " + col)
}

var (
	utf8Alphabet   = []rune("abcXYZ019 _-'\"\\\t\né€ÿ😀👍🏽中\x00")
	latin1Alphabet = []rune("abcXYZ019 _-'\"\\éÿ€Ÿ")
	bmpAlphabet    = []rune("abc 019_'\\éĠΩж中€\x00")
	cp1251Alphabet = []rune("abc 019_'абвЖЁё№€")
	latin2Alphabet = []rune("abc 019_'ŁźŻąęß")
)

func randText(r *rand.Rand, alphabet []rune, max int) string {
	out := make([]rune, r.Intn(max+1))
	for i := range out {
		out[i] = alphabet[r.Intn(len(alphabet))]
	}
	return string(out)
}

func randBytes(r *rand.Rand, max int) []byte {
	b := make([]byte, r.Intn(max+1))
	r.Read(b)
	return b
}

// versionWatch reads the version (_v) of a sample of keys from Redis every
// 100 ms during the run and records any key whose version went down.
type versionWatch struct {
	rdb  *redis.Client
	db   string
	stop chan struct{}
	done chan struct{}

	max        map[string]string // highest version seen per key
	reads      int
	violations []string
}

func startVersionWatch(rdb *redis.Client, db string) *versionWatch {
	w := &versionWatch{rdb: rdb, db: db, stop: make(chan struct{}), done: make(chan struct{}), max: map[string]string{}}
	go w.run()
	return w
}

func (w *versionWatch) run() {
	defer close(w.done)
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		keys := make([]string, 0, 2*typesIDs)
		for id := 1; id <= typesIDs; id++ {
			keys = append(keys, fmt.Sprintf("%s:alltypes:%d", w.db, id))
		}
		for i := 0; i < typesIDs; i++ {
			keys = append(keys, fmt.Sprintf("%s:sbtest%d:%d", w.db, 1+r.Intn(4), 1+r.Intn(10000)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		pipe := w.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.HGet(ctx, k, "_v")
		}
		_, _ = pipe.Exec(ctx) // Redis paused or down: a tick with errors, skipped below
		cancel()
		for i, cmd := range cmds {
			v, err := cmd.Result()
			if err != nil {
				continue
			}
			w.observe(keys[i], v, "during the run")
		}
	}
}

func (w *versionWatch) observe(key, v, when string) {
	w.reads++
	if old, ok := w.max[key]; ok && v < old {
		w.violations = append(w.violations, fmt.Sprintf("%s: _v %s %s after %s", key, v, when, old))
	}
	if v > w.max[key] {
		w.max[key] = v
	}
}

// finish stops the sampling and checks every key's final version against the
// highest seen; it returns the number of version reads and the violations.
func (w *versionWatch) finish(t *testing.T, e *env, tables map[string][]string) (int, []string) {
	t.Helper()
	close(w.stop)
	<-w.done
	names := make([]string, 0, len(tables))
	for table := range tables {
		names = append(names, table)
	}
	sort.Strings(names)
	for _, table := range names {
		_, versions := e.snapshotRedis(table)
		for k, v := range versions {
			w.observe(k, v, "at the end")
		}
	}
	return w.reads, w.violations
}
