package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/reconcile"
)

var reconcilerBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "binlogsync-reconciler-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "reconciler")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/reconciler").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the reconciler: %v\n%s", err, out)
	}
	return bin, nil
})

// reconcile runs `reconciler run --output json` with the test's configuration and returns its report.
func (e *env) reconcile(args ...string) *reconcile.Report {
	e.t.Helper()
	return e.reconcileWith("../config.example.yaml", args...)
}

// reconcileWith is reconcile with another configuration file.
func (e *env) reconcileWith(config string, args ...string) *reconcile.Report {
	e.t.Helper()
	bin, err := reconcilerBin()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"run", "--config", config, "--output", "json"}, args...)...)
	cmd.Env = append(os.Environ(), e.environ()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("reconciler run %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), tail(stderr.String(), 6000))
	}
	var rep reconcile.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		e.t.Fatalf("decoding the report: %v\n%s", err, stdout.String())
	}
	return &rep
}

func (e *env) tableReport(rep *reconcile.Report, table string) reconcile.TableReport {
	e.t.Helper()
	for _, tr := range rep.Tables {
		if tr.Table == e.db+"."+table {
			return tr
		}
	}
	e.t.Fatalf("no report for %s.%s: %+v", e.db, table, rep.Tables)
	return reconcile.TableReport{}
}

// streamFrom starts binlogsync at the bootstrap position of rep.
func (e *env) streamFrom(rep *reconcile.Report) *proc {
	e.t.Helper()
	return e.start("--config", "../config.example.yaml", "--start-file", rep.Start.File,
		"--start-pos", strconv.FormatUint(uint64(rep.Start.Pos), 10))
}

// insertGenerated adds n rows with ids from+1..from+n to alltypes, every column derived from the id, NULLs and
// empty strings included.
func (e *env) insertGenerated(from, n int) {
	e.t.Helper()
	q := fmt.Sprintf(`INSERT INTO alltypes (id, c_tiny, c_utiny, c_small, c_usmall, c_med, c_umed, c_int, c_uint, c_big,
		c_ubig, c_dec, c_dec2, c_float, c_double, c_date, c_dt0, c_dt3, c_dt6, c_ts0, c_ts2, c_ts6, c_time0, c_time4,
		c_time6, c_year, c_char, c_char_l, c_varchar, c_varchar_l, c_text, c_text_l, c_binary, c_varbinary, c_blob,
		c_enum, c_set, c_bit1, c_bit64, c_json)
	SELECT s + %d, s %% 256 - 128, s %% 256, s %% 65536 - 32768, s %% 65536, s %% 16777216 - 8388608, s %% 16777216,
		s * 7919 %% 4294967296 - 2147483648, s * 7919 %% 4294967296, s * 1000000007 - 4611686018427387904,
		s * 18446744073709, IF(s %% 11 = 0, NULL, s / 7), s / 100, IF(s %% 13 = 0, NULL, (s %% 10000) / 4), s / 3e0,
		'2000-01-01' + INTERVAL s DAY, '2000-01-01' + INTERVAL s SECOND, '2000-01-01' + INTERVAL s * 1001 MICROSECOND,
		'2000-01-01' + INTERVAL s * 1000001 MICROSECOND, FROM_UNIXTIME(946684800 + s), FROM_UNIXTIME(946684800 + s / 100),
		FROM_UNIXTIME(946684800 + s / 1000000), SEC_TO_TIME(s %% 3000000 - 1500000), SEC_TO_TIME(s / 10000),
		IF(s %% 17 = 0, NULL, SEC_TO_TIME(-s / 1000000)), IF(s %% 19 = 0, 0, 1901 + s %% 255),
		CONCAT('c', s %% 1000, IF(s %% 5 = 0, '  ', '')), CONCAT('é', s %% 100), IF(s %% 23 = 0, '', CONCAT('v', s, 'é😀')),
		CONCAT('€', s), REPEAT('t', s %% 50), IF(s %% 29 = 0, NULL, CONCAT('ü', s)), UNHEX(LPAD(HEX(s %% 65536), 4, '0')),
		UNHEX(HEX(s)), CONCAT(CHAR(0), UNHEX(LPAD(HEX(s), 8, '0'))), ELT(1 + s %% 3, 'a', 'b c', 'é'),
		ELT(1 + s %% 4, '', 'x', 'y,é', 'x,y,é'), s %% 2, s * 1234567, JSON_OBJECT('k', s, 's', CONCAT('v', s))
	FROM (SELECT CAST(seq AS SIGNED) AS s FROM seq_1_to_%d) AS g`, from, n)
	e.exec(q)
}

// writeLoad changes rows with ids in [lo, hi) and inserts rows from insertFrom on, through the binlog, until ctx
// ends, at most about 1000 statements a second; it returns the number of statements run.
func (e *env) writeLoad(ctx context.Context, lo, hi, insertFrom int, wg *sync.WaitGroup) *atomic.Int64 {
	var n atomic.Int64
	for w := range 2 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			next := insertFrom + w*1_000_000
			for ctx.Err() == nil {
				id := lo + r.IntN(hi-lo)
				var err error
				switch r.IntN(10) {
				case 0:
					_, err = e.sqldb.ExecContext(ctx, "DELETE FROM alltypes WHERE id = ?", id)
				case 1, 2:
					next++
					_, err = e.sqldb.ExecContext(ctx, "INSERT INTO alltypes (id, c_int, c_varchar) VALUES (?, ?, 'new')", next, next)
				default:
					_, err = e.sqldb.ExecContext(ctx, "UPDATE alltypes SET c_int = c_int + 1, c_varchar = CONCAT('u', ?), "+
						"c_double = c_double * 1.5 WHERE id = ?", r.IntN(1000), id)
				}
				if err != nil && ctx.Err() == nil {
					e.t.Errorf("write load: %v", err)
					return
				}
				n.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return &n
}

// TestIntegrationReconcileBootstrapDriftFlush bootstraps 200k rows of every type with the reconciler, streams
// from the position it recorded, injects every kind of drift while a write load runs through the stream, and
// checks that one pass finds exactly what was injected and leaves Redis equal to MySQL; then FLUSHDB.
func TestIntegrationReconcileBootstrapDriftFlush(t *testing.T) {
	e := sharedEnv(t)
	writeAllTypes(t, e) // the edge values (zero dates, maxima, NULLs), ids < 100
	const rows = 200_000
	e.insertGenerated(1000, rows)
	var total int
	if err := e.sqldb.QueryRow("SELECT COUNT(*) FROM alltypes").Scan(&total); err != nil {
		t.Fatal(err)
	}

	rep := e.reconcile()
	tr := e.tableReport(rep, "alltypes")
	if tr.Missing.Found != int64(total) || tr.Missing.Repaired != int64(total) || tr.Stale.Found+tr.Extra.Found != 0 {
		t.Fatalf("bootstrap pass: %+v, want %d missing rows written and nothing else", tr, total)
	}
	p := e.streamFrom(rep)
	e.exec("UPDATE alltypes SET c_varchar = 'after bootstrap' WHERE id = 1001") // streamed, not lost
	// The bootstrapped rows themselves are compared with MySQL after the drift pass below (most are untouched).
	deadline := time.Now().Add(time.Minute)
	for e.rdb.HGet(context.Background(), e.db+":alltypes:1001", "c_varchar").Val() != "after bootstrap" {
		if time.Now().After(deadline) {
			t.Fatal("the change made after the bootstrap position did not reach Redis")
		}
		time.Sleep(50 * time.Millisecond)
	}

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	ops := e.writeLoad(ctx, 150_000, 1000+rows, 10_000_000, &wg)

	// Drift, in ids 2000..99999, away from the load.
	rctx := context.Background()
	key := func(id int) string { return fmt.Sprintf("%s:alltypes:%d", e.db, id) }
	for i := range 100 {
		e.rdb.Del(rctx, key(2000+i*11))
	}
	for i := range 100 {
		e.rdb.HSet(rctx, key(5001+i*13), "c_varchar", "drift!")
	}
	for i := range 50 {
		e.rdb.HSet(rctx, key(9001+i*7), "zz_extra", "x")
		e.rdb.HDel(rctx, key(12001+i*7), "c_int")
	}
	// Rows deleted behind the stream's back (one connection: sql_log_bin is a session variable).
	conn, err := e.sqldb.Conn(rctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SET sql_log_bin = 0",
		"DELETE FROM alltypes WHERE id BETWEEN 20000 AND 22900 AND (id - 20000) % 97 = 0", "SET sql_log_bin = 1"} {
		if _, err := conn.ExecContext(rctx, q); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	for i := range 10 {
		e.rdb.HSet(rctx, key(50_000_000+i*1000), "c_int", "1") // written outside the pipeline
	}

	rep = e.reconcile() // a plain full pass (SPEC's `reconciler run`) also finds the keys written far off
	tr = e.tableReport(rep, "alltypes")
	stopLoad()
	wg.Wait()
	if ops.Load() < 50 {
		t.Fatalf("the write load ran only %d statements", ops.Load())
	}
	t.Logf("pass under load (%d statements): %+v", ops.Load(), tr)
	want := map[string][2]int64{"missing": {tr.Missing.Found, 100}, "stale": {tr.Stale.Found, 200}, "extra": {tr.Extra.Found, 40}}
	for k, v := range want {
		if v[0] != v[1] {
			t.Errorf("%s found %d, want %d (%+v)", k, v[0], v[1], tr)
		}
	}
	if tr.Missing.Repaired != 100 || tr.Stale.Repaired != 200 || tr.Extra.Repaired != 40 || tr.Unsettled != 0 {
		t.Errorf("repairs %+v, want every drifted row repaired, all settled", tr)
	}
	e.waitSame("alltypes", 2*time.Minute, allTypesFloats, "id")

	// FLUSHDB: everything is missing, and the next pass puts it back.
	if err := e.rdb.FlushDB(rctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.sqldb.QueryRow("SELECT COUNT(*) FROM alltypes").Scan(&total); err != nil {
		t.Fatal(err)
	}
	rep = e.reconcile()
	if tr := e.tableReport(rep, "alltypes"); tr.Missing.Found != int64(total) || tr.Missing.Repaired != int64(total) {
		t.Fatalf("pass after FLUSHDB: %+v, want %d missing rows restored", tr, total)
	}
	e.waitSame("alltypes", 2*time.Minute, allTypesFloats, "id")
	if code := p.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("binlogsync exited with %d", code)
	}
}

// TestIntegrationReconcileRaceWithStream repairs rows the stream keeps updating: the result is the newest value
// of every row, never an older one brought back by a repair.
func TestIntegrationReconcileRaceWithStream(t *testing.T) {
	e := sharedEnv(t)
	e.exec("CREATE TABLE q (id INT PRIMARY KEY, v INT NOT NULL, w VARCHAR(20))",
		"INSERT INTO q SELECT seq, 0, CONCAT('w', seq) FROM seq_1_to_20000")
	rep := e.reconcile()
	if tr := e.tableReport(rep, "q"); tr.Missing.Found != 20000 {
		t.Fatalf("bootstrap: %+v", tr)
	}
	p := e.streamFrom(rep)
	e.waitSame("q", time.Minute, nil, "id")

	rctx := context.Background()
	for id := 1; id <= 5000; id++ {
		e.rdb.HSet(rctx, fmt.Sprintf("%s:q:%d", e.db, id), "v", "-1", "w", "drift")
	}
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	var updates atomic.Int64
	for w := range 3 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 11))
			for ctx.Err() == nil {
				id := 1 + r.IntN(5000)
				if _, err := e.sqldb.ExecContext(ctx, "UPDATE q SET v = v + 1, w = CONCAT('u', v) WHERE id = ?", id); err != nil {
					if ctx.Err() == nil {
						t.Errorf("update: %v", err)
					}
					return
				}
				updates.Add(1)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	rep = e.reconcile("--table", e.db+".q")
	time.Sleep(200 * time.Millisecond)
	stopLoad()
	wg.Wait()
	tr := e.tableReport(rep, "q")
	t.Logf("pass racing %d updates: %+v", updates.Load(), tr)
	if tr.Stale.Found == 0 || tr.Stale.Found > 5000 || tr.Missing.Found+tr.Extra.Found != 0 {
		t.Fatalf("report %+v, want up to 5000 stale rows (the others the stream fixed first)", tr)
	}
	e.waitSame("q", time.Minute, nil, "id")
	if code := p.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("binlogsync exited with %d", code)
	}
}
