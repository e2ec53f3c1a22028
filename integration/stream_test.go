package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

const usersDDL = "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(40), score DECIMAL(10,2), note TEXT NULL, updated DATETIME(6))"

func TestIntegrationTransactionsAndPKChanges(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL, "CREATE TABLE pairs (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b))")
	p := e.start("--config", "../config.example.yaml")

	e.exec(
		"INSERT INTO users VALUES (1,'ann',1.50,NULL,NOW(6)),(2,'bob',2.00,'x',NOW(6)),(3,'cy',3.25,'',NOW(6))",
		"BEGIN",
		"UPDATE users SET score = score * 2, note = NULL WHERE id = 2",
		"DELETE FROM users WHERE id = 3",
		"INSERT INTO users VALUES (4,'dee',4.00,'new',NOW(6))",
		"UPDATE users SET id = 40 WHERE id = 4", // primary-key change inside the transaction
		"COMMIT",
		"UPDATE users SET id = 10, name = 'ann2' WHERE id = 1",
		"INSERT INTO pairs VALUES (1,'x',1),(1,'y',2),(2,'x',3)",
		"UPDATE pairs SET b = 'z' WHERE a = 1 AND b = 'y'",
		"DELETE FROM pairs WHERE a = 2",
		// rolled back: must leave no trace
		"BEGIN", "INSERT INTO users VALUES (99,'ghost',0,NULL,NOW(6))", "ROLLBACK",
	)
	e.waitSame("users", 20*time.Second, nil, "id")
	e.waitSame("pairs", 20*time.Second, nil, "a", "b")

	got, _ := e.snapshotRedis("users")
	for _, gone := range []string{"1", "3", "4", "99"} {
		if _, ok := got[e.db+":users:"+gone]; ok {
			t.Errorf("key for id %s should not exist", gone)
		}
	}
	if v := got[e.db+":users:2"]; v["note"] != "" || len(v) != 4 {
		t.Errorf("id 2 should have note absent (NULL): %v", v)
	}
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	if !strings.Contains(p.Log(), "msg=stopped") {
		t.Errorf("no orderly stop in the log")
	}
	raw, err := os.ReadFile(e.ckpt)
	if err != nil || !strings.Contains(string(raw), "mariadb-bin.") {
		t.Fatalf("checkpoint not written on stop: %q %v", raw, err)
	}
}

// loadGen writes random inserts, updates (to and from NULL), deletes and
// primary-key changes in multi-statement transactions until stopped.
type loadGen struct {
	e     *env
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	txs   int
	errs  []error
	maxID int
}

func startLoad(e *env, workers int) *loadGen {
	g := &loadGen{e: e, stop: make(chan struct{}), maxID: 2000}
	for w := 0; w < workers; w++ {
		g.wg.Add(1)
		go g.run(int64(w))
	}
	return g
}

func (g *loadGen) run(seed int64) {
	defer g.wg.Done()
	r := rand.New(rand.NewSource(seed + time.Now().UnixNano()))
	for {
		select {
		case <-g.stop:
			return
		default:
		}
		tx, err := g.e.sqldb.Begin()
		if err != nil {
			g.fail(err)
			return
		}
		n := 1 + r.Intn(5)
		for i := 0; i < n; i++ {
			id := r.Intn(g.maxID)
			var q string
			switch r.Intn(6) {
			case 0, 1:
				q = fmt.Sprintf("INSERT INTO users VALUES (%d,'n%d',%d.%02d,NULL,NOW(6)) ON DUPLICATE KEY UPDATE name=VALUES(name), score=score+1", id, r.Intn(1000), r.Intn(1000), r.Intn(100))
			case 2:
				q = fmt.Sprintf("UPDATE users SET note = IF(note IS NULL, 'note %d', NULL), updated = NOW(6) WHERE id = %d", r.Intn(100), id)
			case 3:
				q = fmt.Sprintf("DELETE FROM users WHERE id = %d", id)
			case 4:
				q = fmt.Sprintf("UPDATE IGNORE users SET id = %d WHERE id = %d", r.Intn(g.maxID), id)
			case 5:
				q = fmt.Sprintf("UPDATE users SET score = score + 1 WHERE id BETWEEN %d AND %d", id, id+20)
			}
			if _, err := tx.Exec(q); err != nil {
				_ = tx.Rollback()
				if strings.Contains(err.Error(), "Deadlock") || strings.Contains(err.Error(), "Lock wait") {
					goto next
				}
				g.fail(fmt.Errorf("%s: %w", q, err))
				return
			}
		}
		if err := tx.Commit(); err != nil {
			g.fail(err)
			return
		}
		g.mu.Lock()
		g.txs++
		g.mu.Unlock()
	next:
	}
}

func (g *loadGen) fail(err error) {
	g.mu.Lock()
	g.errs = append(g.errs, err)
	g.mu.Unlock()
}

func (g *loadGen) finish(t *testing.T) int {
	t.Helper()
	close(g.stop)
	g.wg.Wait()
	if len(g.errs) > 0 {
		t.Fatalf("load generator: %v", g.errs[0])
	}
	return g.txs
}

func TestIntegrationKill9Restart(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	e.extra["BINLOGSYNC_SINK_BATCH_ROWS"] = "200"
	p := e.start("--config", "../config.example.yaml")
	load := startLoad(e, 3)
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 5; i++ {
		time.Sleep(time.Duration(300+r.Intn(700)) * time.Millisecond)
		p.kill9(t)
		time.Sleep(time.Duration(r.Intn(300)) * time.Millisecond)
		p = e.start("--config", "../config.example.yaml")
	}
	txs := load.finish(t)
	e.waitSame("users", 60*time.Second, nil, "id")
	t.Logf("%d transactions under 5 kill -9 restarts; Redis equals MySQL", txs)
	if txs < 50 {
		t.Fatalf("only %d transactions ran; the test did not exercise much", txs)
	}
	p.stop(t, 15*time.Second)
}

func TestIntegrationRestartFromOlderCheckpointLeavesNoStaleValue(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (1,'v1',1,NULL,NOW(6)),(2,'keep',2,NULL,NOW(6)),(3,'del',3,NULL,NOW(6))")
	e.waitSame("users", 20*time.Second, nil, "id")
	p.stop(t, 15*time.Second)
	old, err := os.ReadFile(e.ckpt)
	if err != nil {
		t.Fatal(err)
	}
	p = e.start("--config", "../config.example.yaml")
	e.exec("UPDATE users SET name = 'v2' WHERE id = 1", "DELETE FROM users WHERE id = 3", "UPDATE users SET name='v3' WHERE id = 1")
	e.waitSame("users", 20*time.Second, nil, "id")
	_, versionsBefore := e.snapshotRedis("users")
	p.stop(t, 15*time.Second)

	// Roll the checkpoint back: the updates and the delete are replayed.
	if err := os.WriteFile(e.ckpt, old, 0o600); err != nil {
		t.Fatal(err)
	}
	p = e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (5,'after',5,NULL,NOW(6))") // proves the replay was passed
	e.waitSame("users", 20*time.Second, nil, "id")
	got, versionsAfter := e.snapshotRedis("users")
	if got[e.db+":users:1"]["name"] != "v3" {
		t.Fatalf("replay left a stale value: %v", got[e.db+":users:1"])
	}
	for k, v := range versionsBefore {
		if versionsAfter[k] != v {
			t.Errorf("%s version changed on replay: %s -> %s (replays must be skipped)", k, v, versionsAfter[k])
		}
	}
	if p.waitMetric(t, "binlogsync_rows_fenced_total", 3, 5*time.Second) < 3 {
		t.Errorf("expected the replayed changes to be counted as fenced")
	}
	p.stop(t, 15*time.Second)
}

func TestIntegrationRedisDown10s(t *testing.T) {
	my := testenv.SharedMariaDB(t)
	// appendfsync always: what Redis acknowledged survives its kill.
	rd := testenv.NewRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	e := newEnv(t, my, rd)
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	load := startLoad(e, 2)
	time.Sleep(time.Second)
	rd.Stop()
	start := time.Now()
	waitReadyz(t, p, http.StatusServiceUnavailable, "redis")
	time.Sleep(10*time.Second - time.Since(start))
	if p.metric(t, "binlogsync_redis_retries_total") == 0 {
		t.Errorf("no Redis retries counted while Redis is down")
	}
	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	txs := load.finish(t)
	e.waitSame("users", 60*time.Second, nil, "id")
	if p.metric(t, "binlogsync_redis_retries_total") == 0 {
		t.Errorf("no Redis retries counted while Redis was down")
	}
	select {
	case <-p.done:
		t.Fatalf("binlogsync exited while Redis was down:\n%s", tail(p.Log(), 3000))
	default:
	}
	t.Logf("%d transactions with Redis down for 10 s; nothing lost", txs)
	p.stop(t, 15*time.Second)
}

// TestIntegrationDDLMidStream runs ALTER TABLE ADD/DROP/RENAME COLUMN between writes. The connection to MariaDB
// is held while the statements run, so that binlogsync reads them all after the last one: information_schema
// then describes the table after every statement, and without names in the binlog (MINIMAL, or MariaDB's default
// NO_LOG) the source must follow the statements to name the columns of the rows between them.
func TestIntegrationDDLMidStream(t *testing.T) {
	for _, meta := range []string{"FULL", "MINIMAL", "NO_LOG"} {
		t.Run("binlog_row_metadata="+meta, func(t *testing.T) {
			var my *testenv.MariaDB
			if meta == "FULL" {
				my = testenv.SharedMariaDB(t)
			} else {
				my = testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--binlog-row-metadata=" + meta}})
			}
			e := newEnv(t, my, testenv.NewRedis(t))
			proxy := testenv.NewProxy(t, my.Addr())
			e.extra["BINLOGSYNC_MYSQL_ADDR"] = proxy.Addr()
			e.exec("CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10), b INT)")
			p := e.start("--config", "../config.example.yaml")
			e.exec("INSERT INTO t VALUES (1,'a1',10),(2,'a2',20)")
			e.waitSame("t", 20*time.Second, nil, "id")
			proxy.Stall()
			e.exec(
				"ALTER TABLE t ADD COLUMN c VARCHAR(10) DEFAULT 'cdef'",
				"INSERT INTO t VALUES (3,'a3',30,'c3')",
				"UPDATE t SET b = 11 WHERE id = 1",
				"ALTER TABLE t DROP COLUMN a",
				"INSERT INTO t VALUES (4,40,'c4')",
				"UPDATE t SET c = 'c2' WHERE id = 2",
				"ALTER TABLE t RENAME COLUMN b TO bb",
				"INSERT INTO t VALUES (5,50,'c5')",
				"UPDATE t SET bb = 31 WHERE id = 3",
			)
			proxy.Resume()
			// Each row holds what the binlog said when it last changed, under the names its columns had then.
			want := map[string]map[string]string{
				"1": {"id": "1", "a": "a1", "b": "11", "c": "cdef"},
				"2": {"id": "2", "b": "20", "c": "c2"},
				"3": {"id": "3", "bb": "31", "c": "c3"},
				"4": {"id": "4", "b": "40", "c": "c4"},
				"5": {"id": "5", "bb": "50", "c": "c5"},
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				got, _ := e.snapshotRedis("t")
				same := len(got) == len(want)
				for id, w := range want {
					same = same && fmt.Sprint(got[e.db+":t:"+id]) == fmt.Sprint(w)
				}
				if same {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Redis holds %v, want %v\n%s", got, want, tail(p.Log(), 3000))
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Rows written before a DDL keep the old shape until they change
			// again (Redis holds what the binlog said); touch them all so the
			// final state must have the new shape everywhere.
			e.exec("ALTER TABLE t MODIFY bb BIGINT", "UPDATE t SET bb = bb + 1")
			e.waitSame("t", 30*time.Second, nil, "id")
			if !strings.Contains(p.Log(), "the columns of a table changed") {
				t.Errorf("the changed columns were not logged (rows written before an ALTER keep their old fields)")
			}
			if n := strings.Count(p.Log(), "the column types of a table changed"); n != 1 {
				t.Errorf("the changed column type was logged %d times, want once", n)
			}
			p.stop(t, 15*time.Second)
		})
	}
}

func TestIntegrationBinlogGone(t *testing.T) {
	my := testenv.NewMariaDB(t, testenv.MariaDBOptions{})
	e := newEnv(t, my, testenv.NewRedis(t))
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO t VALUES (1)")
	e.waitSame("t", 20*time.Second, nil, "id")
	p.stop(t, 15*time.Second)
	e.exec("FLUSH BINARY LOGS", "INSERT INTO t VALUES (2)", "FLUSH BINARY LOGS")
	// The server keeps a file a dump thread still reads; retry until the
	// stopped binlogsync's thread is gone and the purge takes.
	deadline := time.Now().Add(20 * time.Second)
	for {
		logs := e.binaryLogs()
		e.exec("PURGE BINARY LOGS TO '" + logs[len(logs)-1] + "'")
		if logs = e.binaryLogs(); len(logs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("binlogs not purged: %v", logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A start file the server does not have (a typo) is refused before it replaces the checkpoint.
	p = e.spawn("--config", "../config.example.yaml", "--start-file", "nosuch-bin.000099")
	if code := p.wait(t, 30*time.Second); code != 4 || !strings.Contains(p.Log(), "names a binlog the server does not have") {
		t.Fatalf("a missing --start-file: exit %d, want 4 with the file named\n%s", code, p.Log())
	}
	// --check sees it too, rather than report that all checks passed.
	p = e.spawn("--config", "../config.example.yaml", "--check")
	if code := p.wait(t, 30*time.Second); code != 4 || !strings.Contains(p.Log(), "is not in SHOW BINARY LOGS") {
		t.Fatalf("--check with the checkpoint's binlog purged: exit %d, want 4 naming it\n%s", code, p.Log())
	}
	p = e.spawn("--config", "../config.example.yaml")
	code := p.wait(t, 30*time.Second)
	if code != 4 {
		t.Fatalf("exit code = %d, want 4 (binlog gone)\n%s", code, p.Log())
	}
	if strings.Contains(p.Log(), "nosuch-bin") {
		t.Fatalf("the refused --start-file replaced the checkpoint:\n%s", p.Log())
	}
	for _, want := range []string{"is not in SHOW BINARY LOGS", "reconciler run", "docs/runbook.md"} {
		if !strings.Contains(p.Log(), want) {
			t.Errorf("the message should mention %q:\n%s", want, p.Log())
		}
	}
	got, _ := e.snapshotRedis("t")
	if len(got) != 1 {
		t.Errorf("nothing should have been applied after the gap, Redis has %d keys", len(got))
	}
}

func TestIntegrationBadStart(t *testing.T) {
	e := sharedEnv(t)
	cases := []struct {
		name string
		env  map[string]string
		code int
		want string
	}{
		{"wrong password", map[string]string{"BINLOGSYNC_MYSQL_PASSWORD": "nope"}, 3, "mysql.password"},
		{"closed port", map[string]string{"BINLOGSYNC_MYSQL_ADDR": "127.0.0.1:1"}, 3, "mysql.addr"},
		{"unknown key", map[string]string{"BINLOGSYNC_MYSQL_ADRESS": "x"}, 2, "BINLOGSYNC_MYSQL_ADRESS"},
		{"bad flavor", map[string]string{"BINLOGSYNC_MYSQL_FLAVOR": "oracle"}, 2, "mysql.flavor"},
		{"redis down", map[string]string{"BINLOGSYNC_REDIS_ADDR": "127.0.0.1:1"}, 3, "redis.addr"},
		{"redis db out of range", map[string]string{"BINLOGSYNC_REDIS_DB": "99"}, 3, "set redis.db below"},
	}
	// Start flags: refused before anything (the checkpoint) changes. A transaction's events give a position in
	// the middle of one, and one in the middle of an event.
	e.exec(usersDDL, "BEGIN", "INSERT INTO users VALUES (1,'a',1,NULL,NOW(6))", "INSERT INTO users VALUES (2,'b',1,NULL,NOW(6))", "COMMIT")
	logs := e.binaryLogs()
	file := logs[len(logs)-1]
	var tableMap, gtid string
	rows, err := e.sqldb.Query("SHOW BINLOG EVENTS IN '" + file + "'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name, typ, info string
		var pos, server, end int64
		if err := rows.Scan(&name, &pos, &typ, &server, &end, &info); err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "Table_map":
			tableMap = fmt.Sprint(pos)
		case "Gtid":
			gtid = fmt.Sprint(pos)
		}
	}
	rows.Close()
	midEvent := fmt.Sprint(mustAtoi(t, tableMap) + 3)
	type startCase struct {
		name string
		args []string
		code int
		want string
	}
	for _, c := range []startCase{
		{"bad gtid", []string{"--start-gtid", "garbage"}, 2, "is not a GTID set"},
		{"pos without file", []string{"--start-pos", "120"}, 2, "--start-pos needs --start-file"},
		{"gtid and file", []string{"--start-gtid", "0-1-1", "--start-file", file}, 2, "both given"},
		{"mid-transaction", []string{"--start-file", file, "--start-pos", tableMap}, 2, "inside a transaction"},
		{"mid-event", []string{"--start-file", file, "--start-pos", midEvent}, 2, "is not the start of an event"},
		{"mid-transaction, --check", []string{"--check", "--start-file", file, "--start-pos", tableMap}, 2, "inside a transaction"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := e.spawn(append([]string{"--config", "../config.example.yaml"}, c.args...)...)
			if code := p.wait(t, 30*time.Second); code != c.code || !strings.Contains(p.Log(), c.want) {
				t.Fatalf("exit code %d, want %d with %q:\n%s", code, c.code, c.want, p.Log())
			}
		})
	}
	if p := e.spawn("--config", "../config.example.yaml", "--check", "--start-file", file, "--start-pos", gtid); p.wait(t, 30*time.Second) != 0 {
		t.Fatalf("--check at a Gtid event should pass:\n%s", p.Log())
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			saved := e.extra
			e.extra = c.env
			defer func() { e.extra = saved }()
			p := e.spawn("--config", "../config.example.yaml")
			code := p.wait(t, 30*time.Second)
			if code != c.code {
				t.Fatalf("exit code = %d, want %d\n%s", code, c.code, p.Log())
			}
			if !strings.Contains(p.Log(), c.want) {
				t.Fatalf("message should name %q:\n%s", c.want, p.Log())
			}
			if strings.Contains(p.Log(), "nope") && c.name == "wrong password" {
				t.Fatalf("the password leaked into the output:\n%s", p.Log())
			}
		})
	}
}

func TestIntegrationLagAndMetrics(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (1,'a',1,NULL,NOW(6))", "UPDATE users SET name='b' WHERE id=1")
	e.waitSame("users", 20*time.Second, nil, "id")
	if got := p.waitMetric(t, "binlogsync_rows_applied_total", 2, 5*time.Second); got < 2 {
		t.Errorf("binlogsync_rows_applied_total = %v, want >= 2", got)
	}
	time.Sleep(1500 * time.Millisecond) // heartbeats every 200ms while idle
	if lag := p.metric(t, "binlogsync_replication_lag_seconds"); lag > 1.5 {
		t.Errorf("lag on an idle, caught-up server = %vs, want about 0", lag)
	}
	p.stop(t, 15*time.Second)
	raw, _ := os.ReadFile(e.ckpt)
	if !strings.Contains(string(raw), `"pos"`) {
		t.Fatalf("bad checkpoint %s", raw)
	}
}

func TestIntegrationVersionsOnlyGrow(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (1,'a',1,NULL,NOW(6))")
	e.waitSame("users", 20*time.Second, nil, "id")
	_, v1 := e.snapshotRedis("users")
	e.exec("UPDATE users SET name='b' WHERE id=1")
	e.waitSame("users", 20*time.Second, nil, "id")
	_, v2 := e.snapshotRedis("users")
	a, err1 := change.ParseVersion(v1[e.db+":users:1"])
	b, err2 := change.ParseVersion(v2[e.db+":users:1"])
	if err1 != nil || err2 != nil || !a.Less(b) {
		t.Fatalf("versions must grow: %v (%v) then %v (%v)", a, err1, b, err2)
	}
	_ = context.Background()
	p.stop(t, 15*time.Second)
}

func (e *env) binaryLogs() []string {
	e.t.Helper()
	rows, err := e.sqldb.Query("SHOW BINARY LOGS")
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	cols, _ := rows.Columns()
	for rows.Next() {
		dest := make([]any, len(cols))
		for i := range dest {
			dest[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(dest...); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, string(*dest[0].(*sql.RawBytes)))
	}
	return out
}

func TestIntegrationMariaDBRestartMidStream(t *testing.T) {
	my := testenv.NewMariaDB(t, testenv.MariaDBOptions{})
	e := newEnv(t, my, testenv.NewRedis(t))
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	for i := 0; i < 100; i++ {
		e.exec(fmt.Sprintf("INSERT INTO users VALUES (%d,'before',%d,NULL,NOW(6))", i, i))
	}
	my.Stop()
	// While the source reconnects, /readyz says so.
	waitReadyz(t, p, http.StatusServiceUnavailable, "the binlog connection is down")
	if err := my.Start(); err != nil { // a new binlog file follows
		t.Fatal(err)
	}
	e.sqldb = my.Root(t, e.db) // the old pool's connections are dead
	for i := 100; i < 200; i++ {
		e.exec(fmt.Sprintf("INSERT INTO users VALUES (%d,'after',%d,NULL,NOW(6))", i, i))
	}
	e.exec("UPDATE users SET name = 'updated' WHERE id < 50", "DELETE FROM users WHERE id >= 150")
	e.waitSame("users", 60*time.Second, nil, "id")
	waitReadyz(t, p, http.StatusOK, "ready")
	if n := p.metric(t, "binlogsync_binlog_reconnects_total"); n < 1 {
		t.Errorf("binlogsync_binlog_reconnects_total = %v, want >= 1", n)
	}
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestIntegrationCheckFlag(t *testing.T) {
	e := sharedEnv(t)
	p := e.spawn("--config", "../config.example.yaml", "--check")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("--check on a good setup exited %d:\n%s", code, p.Log())
	}
	if !strings.Contains(p.Log(), "all checks passed") {
		t.Fatalf("--check should say the checks passed:\n%s", p.Log())
	}
	// A column the source cannot convert to UTF-8 is named, with the fix.
	e.exec("CREATE TABLE cjk (id INT PRIMARY KEY, name VARCHAR(10) CHARACTER SET gbk)")
	p = e.spawn("--config", "../config.example.yaml", "--check")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("--check with a gbk column exited %d, want 0 (a warning):\n%s", code, p.Log())
	}
	if !strings.Contains(p.Log(), "column "+e.db+".cjk.name is in character set gbk") ||
		!strings.Contains(p.Log(), "CONVERT TO CHARACTER SET utf8mb4") {
		t.Fatalf("--check should name the gbk column and the fix:\n%s", p.Log())
	}
	// An include pattern that matches no table is named (a typo), without failing the check.
	e.extra["BINLOGSYNC_TABLES_INCLUDE"] = e.db + ".cjk," + e.db + ".nosuch_table"
	p = e.spawn("--config", "../config.example.yaml", "--check")
	if code := p.wait(t, 30*time.Second); code != 0 || !strings.Contains(p.Log(), `tables.include pattern \"`+e.db+`.nosuch_table\" is matching no table now`) {
		t.Fatalf("--check with an include typo: exit %d, want 0 and the pattern named:\n%s", code, p.Log())
	}
	delete(e.extra, "BINLOGSYNC_TABLES_INCLUDE")
	// A column whose field would be a metadata name fails the check, before anything streams.
	e.exec("CREATE TABLE meta (id INT PRIMARY KEY, _v INT)")
	p = e.spawn("--config", "../config.example.yaml", "--check")
	if code := p.wait(t, 30*time.Second); code != 3 || !strings.Contains(p.Log(), "column "+e.db+".meta._v") ||
		!strings.Contains(p.Log(), "columns.rename") {
		t.Fatalf("--check with a column _v: exit %d, want 3 and the column and fix named:\n%s", code, p.Log())
	}
	e.exec("DROP TABLE meta")
	// A key template that does not determine the whole primary key fails the check (it used to fail at the
	// table's first change); one that names every key field (renamed) passes.
	e.exec("CREATE TABLE kv (k INT, n INT, v INT, PRIMARY KEY (k, n))")
	for _, c := range []struct {
		rule string
		code int
	}{
		{`key: "kv:${k}"`, 3},
		{`key: "kv:${k}:${nn}"` + "\n      columns:\n        rename: {n: nn}", 0},
	} {
		path := filepath.Join(t.TempDir(), "binlogsync.yaml")
		yaml := fmt.Sprintf("tables:\n  rules:\n    - match: \"%s.kv\"\n      %s\n", e.db, c.rule)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		p = e.spawn("--config", path, "--check")
		if code := p.wait(t, 30*time.Second); code != c.code ||
			c.code != 0 && !strings.Contains(p.Log(), "tables.rules[].key for "+e.db+".kv") {
			t.Fatalf("--check with %s: exit %d, want %d and the setting named:\n%s", c.rule, code, c.code, tail(p.Log(), 2000))
		}
	}
	e.exec("DROP TABLE kv")
	// A server with STATEMENT binlogs fails the check with the fix named.
	bad := testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--binlog-format=STATEMENT"}})
	e2 := newEnv(t, bad, e.rd)
	p = e2.spawn("--config", "../config.example.yaml", "--check")
	if code := p.wait(t, 30*time.Second); code != 3 {
		t.Fatalf("--check on a STATEMENT server exited %d, want 3:\n%s", code, p.Log())
	}
	if !strings.Contains(p.Log(), "binlog_format is STATEMENT") || !strings.Contains(p.Log(), "binlog_format=ROW") {
		t.Fatalf("message should name binlog_format and the fix:\n%s", p.Log())
	}
}

func TestIntegrationPoisonRowGoesToDeadLetterStream(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	ctx := context.Background()
	// Someone wrote a string where row 5's hash belongs: Redis answers WRONGTYPE.
	if err := e.rdb.Set(ctx, e.db+":users:5", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	e.extra["BINLOGSYNC_SINK_DEAD_LETTER"] = "binlogsync:dead"
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (4,'a',1,NULL,NOW(6)),(5,'poison',2,NULL,NOW(6)),(6,'c',3,NULL,NOW(6))",
		"INSERT INTO users VALUES (7,'after',4,NULL,NOW(6))")
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, _ := e.rdb.Exists(ctx, e.db+":users:7").Result()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline did not go on past the poison row")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range []string{"4", "6", "7"} {
		if v, _ := e.rdb.HGet(ctx, e.db+":users:"+id, "id").Result(); v != id {
			t.Errorf("row %s not applied", id)
		}
	}
	entries, err := e.rdb.XRange(ctx, "binlogsync:dead", "-", "+").Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("dead-letter stream has %d entries (%v), want 1", len(entries), err)
	}
	v := entries[0].Values
	if v["table"] != e.db+".users" || v["op"] != "insert" || !strings.Contains(fmt.Sprint(v["reason"]), "WRONGTYPE") ||
		!strings.Contains(fmt.Sprint(v["pk"]), `"5"`) || len(fmt.Sprint(v["version"])) != change.VersionLen ||
		!regexp.MustCompile(`^\d{6}:\d+#\d+$`).MatchString(fmt.Sprint(v["position"])) {
		t.Fatalf("dead letter lacks table/op/reason/pk/version: %v", v)
	}
	if n := p.waitMetric(t, "binlogsync_dead_letters_total", 1, 5*time.Second); n != 1 {
		t.Fatalf("binlogsync_dead_letters_total = %v, want 1", n)
	}

	// The reconciler resolves the dead-lettered row from MySQL and removes the entry.
	rep := e.reconcile("--table", e.db+".users")
	if dl := rep.DeadLetters; dl == nil || dl.Entries != 1 || dl.Resolved != 1 || dl.Remaining != 0 {
		t.Fatalf("reconciler dead letters = %+v, want the entry resolved", rep.DeadLetters)
	}
	if n, err := e.rdb.XLen(ctx, "binlogsync:dead").Result(); err != nil || n != 0 {
		t.Fatalf("dead-letter stream holds %d entries after the pass (%v), want 0", n, err)
	}
	e.waitSame("users", 20*time.Second, nil, "id")
	p.stop(t, 15*time.Second)
}

func TestIntegrationPoisonRowStopsWithoutDeadLetter(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	if err := e.rdb.Set(context.Background(), e.db+":users:5", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (5,'poison',2,NULL,NOW(6))")
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(p.Log(), e.db+":users:5") || !strings.Contains(p.Log(), "WRONGTYPE") ||
		!strings.Contains(p.Log(), "sink.dead_letter") {
		t.Fatalf("the error should name the key and the reason:\n%s", tail(p.Log(), 2000))
	}
	// Nothing after the poison row was checkpointed past it: a restart retries it.
	raw, _ := os.ReadFile(e.ckpt)
	p2 := e.start("--config", "../config.example.yaml")
	if code := p2.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("restart should stop again on the same row (exit %d); checkpoint was %s", code, raw)
	}
}

// TestIntegrationStartFromGTID starts from a MariaDB GTID set given on the command line (mysql.gtid auto):
// only the transactions after the set arrive, the checkpoint carries the set on, and a restart resumes from it,
// also when the process stopped before its first transaction (a checkpoint without a file).
func TestIntegrationStartFromGTID(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL, "INSERT INTO users (id, name) VALUES (1, 'before'), (2, 'before')")
	gtidPos := func() string {
		var g string
		if err := e.sqldb.QueryRow("SELECT @@gtid_binlog_pos").Scan(&g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	set := gtidPos()
	e.exec("INSERT INTO users (id, name) VALUES (3, 'after')")
	p := e.start("--config", "../config.example.yaml", "--start-gtid", set)
	e.exec("INSERT INTO users (id, name) VALUES (4, 'after')")
	waitKeys := func(want ...int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, _ := e.snapshotRedis("users")
			ok := len(got) == len(want)
			for _, id := range want {
				ok = ok && got[fmt.Sprintf("%s:users:%d", e.db, id)]["name"] == "after"
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Redis holds %v, want the rows %v (written after the start set)", got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitKeys(3, 4)
	p.stop(t, 15*time.Second)
	ck := readCheckpoint(t, e.ckpt)
	if ck.File == "" || !strings.Contains(ck.GTIDSet, "-") {
		t.Fatalf("checkpoint after streaming %+v: want a file and a GTID set", ck)
	}

	p = e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users (id, name) VALUES (5, 'after')")
	waitKeys(3, 4, 5)
	p.stop(t, 15*time.Second)
	// The checkpoint's set is the server's own GTID position at its file and position (complete, so a restart
	// may stream by it).
	ck = readCheckpoint(t, e.ckpt)
	var atPos string
	if err := e.sqldb.QueryRow("SELECT BINLOG_GTID_POS(?, ?)", ck.File, ck.Pos).Scan(&atPos); err != nil {
		t.Fatal(err)
	}
	if ck.GTIDSet != atPos {
		t.Fatalf("checkpoint %s:%d has the GTID set %q, the server says %q", ck.File, ck.Pos, ck.GTIDSet, atPos)
	}

	// Stopped before any transaction: the checkpoint names only the set, and the restart streams by it.
	set = gtidPos()
	p = e.start("--config", "../config.example.yaml", "--start-gtid", set)
	p.stop(t, 15*time.Second)
	if ck := readCheckpoint(t, e.ckpt); ck.File != "" || ck.GTIDSet != set {
		t.Fatalf("checkpoint of a GTID start stopped at once: %+v, want only the set %s", ck, set)
	}
	// Such a checkpoint needs GTIDs: --check says so as the start does (it took it for a purged binlog).
	e.extra["BINLOGSYNC_MYSQL_GTID"] = "off"
	check := e.spawn("--config", "../config.example.yaml", "--check")
	if code := check.wait(t, 30*time.Second); code != 2 || !strings.Contains(check.Log(), "names only a GTID set") {
		t.Fatalf("--check of a GTID-only checkpoint with mysql.gtid off: exit %d, want 2 naming it\n%s", code, check.Log())
	}
	delete(e.extra, "BINLOGSYNC_MYSQL_GTID")
	e.exec("INSERT INTO users (id, name) VALUES (6, 'after')")
	p = e.start("--config", "../config.example.yaml")
	waitKeys(3, 4, 5, 6)
	p.stop(t, 15*time.Second)

	// A file start takes the set at that position from the server, so the checkpoints carry complete sets.
	var file, doDB, ignoreDB string
	var pos uint32
	if err := e.sqldb.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &doDB, &ignoreDB); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO users (id, name) VALUES (7, 'after')")
	p = e.start("--config", "../config.example.yaml", "--start-file", file, "--start-pos", fmt.Sprint(pos))
	waitKeys(3, 4, 5, 6, 7)
	p.stop(t, 15*time.Second)
	ck = readCheckpoint(t, e.ckpt)
	if err := e.sqldb.QueryRow("SELECT BINLOG_GTID_POS(?, ?)", ck.File, ck.Pos).Scan(&atPos); err != nil {
		t.Fatal(err)
	}
	if ck.GTIDSet == "" || ck.GTIDSet != atPos {
		t.Fatalf("checkpoint %s:%d after a file start has the GTID set %q, the server says %q", ck.File, ck.Pos,
			ck.GTIDSet, atPos)
	}

	// A GTID start with GTIDs turned off is a configuration error.
	e.extra["BINLOGSYNC_MYSQL_GTID"] = "off"
	p = e.spawn("--config", "../config.example.yaml", "--start-gtid", set)
	if code := p.wait(t, 30*time.Second); code != 2 || !strings.Contains(p.Log(), "needs mysql.gtid auto or on") {
		t.Fatalf("exit code %d, want 2 and the reason:\n%s", code, tail(p.Log(), 2000))
	}
}

// readCheckpoint reads the file store's checkpoint.
func readCheckpoint(t *testing.T, path string) change.Position {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var p change.Position
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("checkpoint %s: %v", b, err)
	}
	return p
}

// TestIntegrationRestartAcrossDDL: without column names in the binlog (NO_LOG, MariaDB's default), binlogsync
// stops, DDL and writes run, and it restarts from its checkpoint before them: the schemas it followed were saved
// beside the checkpoint, so the rows before, between and after the statements get their columns' names of the
// time (information_schema only knows the last shape). Once with the file store, once with the Redis store.
func TestIntegrationRestartAcrossDDL(t *testing.T) {
	my := testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--binlog-row-metadata=NO_LOG"}})
	for _, store := range []string{"file", "redis"} {
		t.Run(store, func(t *testing.T) {
			e := newEnv(t, my, testenv.NewRedis(t))
			e.extra["BINLOGSYNC_CHECKPOINT_STORE"] = store
			e.exec("CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10), b INT)",
				// u gets no row before the stop: its schema is read at the first start, not first met after the
				// rename below.
				"CREATE TABLE u (id INT PRIMARY KEY, x VARCHAR(10), y INT)")
			p := e.start("--config", "../config.example.yaml")
			e.exec("INSERT INTO t VALUES (1,'a1',10)")
			e.waitSame("t", 20*time.Second, nil, "id")
			p.stop(t, 15*time.Second)
			e.exec(
				"INSERT INTO t VALUES (2,'a2',20)",
				"ALTER TABLE t ADD COLUMN c VARCHAR(10) DEFAULT 'cdef' AFTER id",
				"INSERT INTO t VALUES (3,'c3','a3',30)",
				"ALTER TABLE t DROP COLUMN a",
				"INSERT INTO t VALUES (4,'c4',40)",
				"ALTER TABLE t RENAME COLUMN b TO bb",
				"INSERT INTO t VALUES (5,'c5',50)",
				"INSERT INTO u VALUES (1,'x1',1)",
				"ALTER TABLE u RENAME COLUMN x TO xx",
				"INSERT INTO u VALUES (2,'x2',2)",
				// v is created while binlogsync is down: tracked from its CREATE TABLE (a column in the
				// database's character set too), not from information_schema after the change below.
				"CREATE TABLE v (id INT PRIMARY KEY, p VARCHAR(10), q INT) DEFAULT CHARSET=latin1",
				"INSERT INTO v VALUES (1,'p1',1)",
				"ALTER TABLE v CHANGE p pp VARCHAR(10), ADD COLUMN r TEXT FIRST",
				"INSERT INTO v VALUES ('r2',2,'p2',2)",
			)
			p = e.start("--config", "../config.example.yaml")
			for table, want := range map[string]map[string]map[string]string{
				"t": {
					"1": {"id": "1", "a": "a1", "b": "10"},
					"2": {"id": "2", "a": "a2", "b": "20"},
					"3": {"id": "3", "c": "c3", "a": "a3", "b": "30"},
					"4": {"id": "4", "c": "c4", "b": "40"},
					"5": {"id": "5", "c": "c5", "bb": "50"},
				},
				"u": {
					"1": {"id": "1", "x": "x1", "y": "1"},
					"2": {"id": "2", "xx": "x2", "y": "2"},
				},
				"v": {
					"1": {"id": "1", "p": "p1", "q": "1"},
					"2": {"id": "2", "pp": "p2", "q": "2", "r": "r2"},
				},
			} {
				deadline := time.Now().Add(30 * time.Second)
				for {
					got, _ := e.snapshotRedis(table)
					same := len(got) == len(want)
					for id, w := range want {
						same = same && fmt.Sprint(got[e.db+":"+table+":"+id]) == fmt.Sprint(w)
					}
					if same {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("Redis holds %v for %s, want %v\n%s", got, table, want, tail(p.Log(), 3000))
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			if !strings.Contains(p.Log(), "restored the schemas followed across DDL") {
				t.Errorf("the followed schemas were not restored:\n%s", tail(p.Log(), 3000))
			}
			p.stop(t, 15*time.Second)
		})
	}
}

// TestIntegrationSavepoints: SAVEPOINT, ROLLBACK TO and RELEASE SAVEPOINT inside a transaction (ORMs nest
// transactions this way) are logged as statements of the transaction: they are neither DDL nor a transaction
// boundary, so no checkpoint can name the middle of the transaction, and the rolled-back row leaves no trace.
func TestIntegrationSavepoints(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	e.exec("CREATE TABLE other (id INT PRIMARY KEY)", "INSERT INTO users (id, name) VALUES (100, 'warm-up')")
	e.waitSame("users", 20*time.Second, nil, "id")
	ddl := p.metric(t, `binlogsync_binlog_events_total{kind="ddl"}`) // 1: the CREATE TABLE
	ctx := context.Background()
	conn, err := e.sqldb.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		"BEGIN",
		"INSERT INTO users (id, name) VALUES (1, 'one')",
		"SAVEPOINT s1",
		"INSERT INTO users (id, name) VALUES (2, 'rolled back')",
		"ROLLBACK TO SAVEPOINT s1",
		"INSERT INTO users (id, name) VALUES (3, 'three')",
		"SAVEPOINT s2",
		"UPDATE users SET name = 'one again' WHERE id = 1",
		"RELEASE SAVEPOINT s2",
		"COMMIT",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	e.waitSame("users", 20*time.Second, nil, "id")
	if got := p.metric(t, `binlogsync_binlog_events_total{kind="ddl"}`); got != ddl {
		t.Errorf("DDL events %v -> %v: a savepoint was taken for DDL (a boundary inside the transaction)", ddl, got)
	}
	if got, _ := e.snapshotRedis("users"); got[e.db+":users:2"] != nil {
		t.Errorf("the row rolled back to a savepoint is in Redis: %v", got[e.db+":users:2"])
	}
	p.stop(t, 15*time.Second)
}

// TestIntegrationXATransactions: a prepared XA transaction's rows reach Redis only with its XA COMMIT, a rolled
// back one's never, and a restart between prepare and commit loses nothing (the checkpoint stays before it).
func TestIntegrationXATransactions(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users (id, name) VALUES (100, 'before')")
	e.waitSame("users", 20*time.Second, nil, "id")
	ctx := context.Background()
	run := func(conn *sql.Conn, qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	conns := e.sessions(ctx, 3)
	run(conns[0], "XA START 'a'", "INSERT INTO users (id, name) VALUES (1, 'xa a')",
		"UPDATE users SET name = 'by a' WHERE id = 100", "XA END 'a'", "XA PREPARE 'a'")
	run(conns[1], "XA START 'b', 'q', 7", "INSERT INTO users (id, name) VALUES (2, 'xa b')",
		"XA END 'b', 'q', 7", "XA PREPARE 'b', 'q', 7")
	e.exec("INSERT INTO users (id, name) VALUES (3, 'plain')")
	waitFor(t, 20*time.Second, "the plain insert after the prepared ones", func() bool {
		got, _ := e.snapshotRedis("users")
		return got[e.db+":users:3"] != nil
	})
	got, _ := e.snapshotRedis("users")
	if got[e.db+":users:1"] != nil || got[e.db+":users:2"] != nil || got[e.db+":users:100"]["name"] != "before" {
		t.Fatalf("rows of prepared XA transactions are in Redis before their outcome: %v", got)
	}
	if n := p.metric(t, "binlogsync_xa_prepared_transactions"); n != 2 {
		t.Errorf("binlogsync_xa_prepared_transactions = %v, want 2", n)
	}
	// Restart while both are prepared: the checkpoint must not have passed them.
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	p = e.start("--config", "../config.example.yaml")
	run(conns[0], "XA COMMIT 'a'")
	run(conns[1], "XA ROLLBACK 'b', 'q', 7")
	run(conns[2], "XA START 'c'", "INSERT INTO users (id, name) VALUES (4, 'one phase')", "XA END 'c'",
		"XA COMMIT 'c' ONE PHASE")
	e.exec("INSERT INTO users (id, name) VALUES (5, 'marker')")
	e.waitSame("users", 20*time.Second, nil, "id")
	got, versions := e.snapshotRedis("users")
	if got[e.db+":users:1"]["name"] != "xa a" || got[e.db+":users:100"]["name"] != "by a" || got[e.db+":users:2"] != nil {
		t.Fatalf("after XA COMMIT a and XA ROLLBACK b: %v", got)
	}
	// Versioned where the server committed them: after the plain insert that came between prepare and commit
	// (a reconciler snapshot there must not fence them out).
	if v1, v3 := versions[e.db+":users:1"], versions[e.db+":users:3"]; len(v1) != len(v3) || v1 <= v3 {
		t.Errorf("version of the XA-committed row %q is not after the plain insert's %q", v1, v3)
	}
	if n := p.metric(t, `binlogsync_binlog_events_total{kind="xa_outcome"}`); n < 2 {
		t.Errorf("xa_outcome events = %v, want at least 2", n)
	}
	if n := p.metric(t, "binlogsync_xa_prepared_transactions"); n != 0 {
		t.Errorf("binlogsync_xa_prepared_transactions = %v after both outcomes, want 0", n)
	}
	p.stop(t, 15*time.Second)
}

// waitFor polls cond until it holds or fails the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationMariaDBCompressedBinlog: with log_bin_compress MariaDB writes compressed query and rows events
// (QUERY_COMPRESSED_EVENT, *_ROWS_COMPRESSED_EVENT_V1); they stream like the plain ones, DDL included.
func TestIntegrationMariaDBCompressedBinlog(t *testing.T) {
	my := testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{
		"--log-bin-compress=ON", "--log-bin-compress-min-len=10", "--binlog-row-metadata=MINIMAL"}})
	e := newEnv(t, my, testenv.NewRedis(t))
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	long := strings.Repeat("compressible text ", 20)
	e.exec(
		"INSERT INTO users VALUES (1,'ann',1.50,'"+long+"',NOW(6)),(2,'bob',2.00,NULL,NOW(6))",
		"BEGIN",
		"UPDATE users SET note = '"+long+long+"' WHERE id = 2",
		"DELETE FROM users WHERE id = 1",
		"INSERT INTO users VALUES (3,'cy',3.25,'"+long+"',NOW(6))",
		"COMMIT",
		"ALTER TABLE users ADD COLUMN extra VARCHAR(400) NOT NULL DEFAULT 'padding padding padding' AFTER name",
		"UPDATE users SET extra = '"+long+"'", // every row: rows keep their shape until they change
	)
	e.waitSame("users", 20*time.Second, nil, "id")
	got, _ := e.snapshotRedis("users")
	if got[e.db+":users:3"]["extra"] != long || got[e.db+":users:2"]["note"] != long+long {
		t.Fatalf("compressed events misread: %v", got)
	}
	var compressed int
	rows, err := e.sqldb.Query("SHOW BINLOG EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(vals[2]), "compressed") {
			compressed++
		}
	}
	if compressed < 3 {
		t.Fatalf("the server wrote %d compressed events; the test does not test what it says", compressed)
	}
	p.stop(t, 15*time.Second)
}

// TestIntegrationStatementDMLStops: a session that logs its row changes as statements (SET SESSION binlog_format)
// would have them lost; the stream stops at the statement, names the setting and the way to go on, and applies
// nothing of it.
func TestIntegrationStatementDMLStops(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	ctx := context.Background()
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (1,'row',1,NULL,NOW(6))")
	e.waitSame("users", 20*time.Second, nil, "id")
	cn := e.sessions(ctx, 1)[0]
	// MIXED: in one transaction, a row change logged as rows (UUID() is unsafe for statements), then one logged
	// as a statement.
	for _, q := range []string{"SET SESSION binlog_format = 'MIXED'", "BEGIN",
		"INSERT INTO users VALUES (10,UUID(),10,NULL,NOW(6))", "INSERT INTO users VALUES (2,'statement',2,NULL,NOW(6))",
		"COMMIT"} {
		if _, err := cn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1 (stopped at the statement)\n%s", code, tail(p.Log(), 3000))
	}
	for _, want := range []string{"logged as a statement", "binlog_format=ROW", "--start-file", "reconciler run"} {
		if !strings.Contains(p.Log(), want) {
			t.Errorf("the message should mention %q:\n%s", want, tail(p.Log(), 3000))
		}
	}
	if n, _ := e.rdb.Exists(ctx, e.db+":users:2").Result(); n != 0 {
		t.Errorf("nothing of the statement can be in Redis")
	}
	if n, _ := e.rdb.Exists(ctx, e.db+":users:10").Result(); n != 1 {
		t.Errorf("the transaction's change logged as rows was not applied before the stop (the restart skips it)")
	}
	if want := "--table " + e.db + ".users"; !strings.Contains(p.Log(), want) {
		t.Errorf("the message should name the table to repair (%q):\n%s", want, tail(p.Log(), 3000))
	}
	// The position the message gives is the end of the statement's transaction, which a start accepts.
	m := regexp.MustCompile(`--start-file (\S+) --start-pos (\d+)`).FindStringSubmatch(p.Log())
	if m == nil {
		t.Fatalf("no start position in the message:\n%s", tail(p.Log(), 3000))
	}
	p = e.start("--config", "../config.example.yaml", "--start-file", m[1], "--start-pos", m[2])
	e.exec("INSERT INTO users VALUES (3,'after',3,NULL,NOW(6))")
	waitFor(t, 20*time.Second, "row 3 after the restart", func() bool {
		n, _ := e.rdb.Exists(ctx, e.db+":users:3").Result()
		return n == 1
	})
	p.stop(t, 15*time.Second)
}

// waitReadyz waits until /readyz answers code with a body holding want; each answer must come within 3 s.
func waitReadyz(t *testing.T, p *proc, code int, want string) {
	t.Helper()
	client := &http.Client{Timeout: 3 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("http://" + p.httpAddr(t) + "/readyz")
		if err != nil {
			t.Fatalf("/readyz did not answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == code && strings.Contains(string(body), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz answers %d %q, want %d with %q", resp.StatusCode, body, code, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// TestIntegrationServerIDConflictNamed: two processes registering with the same server id take the binlog
// connection from each other; the warning names mysql.server_id and the fix.
func TestIntegrationServerIDConflictNamed(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	p1 := e.start("--config", "../config.example.yaml")
	e.extra["BINLOGSYNC_CHECKPOINT_PATH"] = filepath.Join(t.TempDir(), "second.checkpoint")
	p2 := e.spawn("--config", "../config.example.yaml")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p1.Log()+p2.Log(), "(mysql.server_id); give every binlogsync and every replica its own") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning naming mysql.server_id:\n%s\n---\n%s", tail(p1.Log(), 3000), tail(p2.Log(), 3000))
		}
		e.exec("INSERT INTO users VALUES (1,'a',1,NULL,NOW(6)) ON DUPLICATE KEY UPDATE score = score + 1")
		time.Sleep(200 * time.Millisecond)
	}
	p2.stop(t, 15*time.Second)
	p1.stop(t, 15*time.Second)
}

// After a rotation on an idle server (FLUSH BINARY LOGS, a file full), the checkpoint moves into the new file: it
// stayed in the old one until the next transaction, and a reconciler pass waited for a stream that had read
// everything.
func TestIntegrationCheckpointFollowsRotation(t *testing.T) {
	my := testenv.NewMariaDB(t, testenv.MariaDBOptions{})
	e := newEnv(t, my, testenv.NewRedis(t))
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO t VALUES (1)")
	e.waitSame("t", 20*time.Second, nil, "id")
	e.exec("FLUSH BINARY LOGS")
	var file string
	var pos uint32
	var ignored any
	if err := e.sqldb.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &ignored, &ignored); err != nil {
		t.Fatal(err)
	}
	var ck change.Position
	waitFor(t, 20*time.Second, "the checkpoint at "+file, func() bool {
		raw, _ := os.ReadFile(e.ckpt)
		ck = change.Position{}
		_ = json.Unmarshal(raw, &ck)
		return ck.File == file && ck.Pos == pos
	})
	// It resumes from there.
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	p = e.start("--config", "../config.example.yaml")
	// The checkpoint gauges show where it resumed before any transaction (they read 0 until the first).
	seq, _ := change.FileSeq(file)
	if got := p.metric(t, "binlogsync_checkpoint_binlog_file_number"); got != float64(seq) {
		t.Errorf("binlogsync_checkpoint_binlog_file_number = %v after resuming in %s", got, file)
	}
	if got := p.metric(t, "binlogsync_checkpoint_binlog_position_bytes"); got != float64(pos) {
		t.Errorf("binlogsync_checkpoint_binlog_position_bytes = %v after resuming at %d", got, pos)
	}
	e.exec("INSERT INTO t VALUES (2)")
	e.waitSame("t", 20*time.Second, nil, "id")
	p.stop(t, 15*time.Second)
}
