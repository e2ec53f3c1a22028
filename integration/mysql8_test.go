package integration

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

const (
	mysql8Image    = "mysql:8.4"
	mysql8RootPass = "root-pw"
	mysql8User     = "binlogsync"
	mysql8Pass     = "sync-pw"
)

// requireDocker skips the test, also in CI, when testcontainers finds no
// healthy Docker engine: MySQL 8 cannot be installed next to MariaDB, so it
// only runs in a container.
func requireDocker(t *testing.T) {
	t.Helper()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("testcontainers panicked: %v", r)
			}
		}()
		provider, err := testcontainers.ProviderDefault.GetProvider()
		if err != nil {
			return err
		}
		defer provider.Close()
		return provider.Health(context.Background())
	}()
	if err != nil {
		t.Skipf("no Docker engine reachable, so %s cannot be started (MySQL 8 runs only in a container, "+
			"through testcontainers-go): %v", mysql8Image, err)
	}
}

// startMySQL8 runs MySQL 8.4 with GTIDs and compressed transaction payloads
// and returns its host:port.
func startMySQL8(t *testing.T) string {
	t.Helper()
	requireDocker(t)
	ctx := context.Background()
	c, err := testcontainers.Run(ctx, mysql8Image,
		testcontainers.WithEnv(map[string]string{"MYSQL_ROOT_PASSWORD": mysql8RootPass}),
		testcontainers.WithExposedPorts("3306/tcp"),
		testcontainers.WithCmdArgs(
			"--server-id=1",
			"--binlog-format=ROW",
			"--binlog-row-image=FULL",
			"--binlog-row-metadata=FULL",
			"--gtid-mode=ON",
			"--enforce-gtid-consistency=ON",
			"--binlog-transaction-compression=ON",
			"--character-set-server=utf8mb4",
		),
		// The entrypoint first runs a temporary server without networking;
		// the real one logs its port.
		testcontainers.WithWaitStrategyAndDeadline(4*time.Minute, wait.ForLog("port: 3306  MySQL Community Server")),
	)
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("starting %s: %v", mysql8Image, err)
	}
	addr, err := c.PortEndpoint(ctx, "3306/tcp", "")
	if err != nil {
		t.Fatalf("mapped port of %s: %v", mysql8Image, err)
	}
	return addr
}

func TestIntegrationMySQL8(t *testing.T) {
	addr := startMySQL8(t)
	root, err := sql.Open("mysql", fmt.Sprintf("root:%s@tcp(%s)/?multiStatements=true", mysql8RootPass, addr))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	deadline := time.Now().Add(time.Minute)
	for err = root.Ping(); err != nil; err = root.Ping() {
		if time.Now().After(deadline) {
			t.Fatalf("MySQL 8 at %s does not answer: %v", addr, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	const db = "app"
	for _, s := range []string{
		"CREATE DATABASE " + db + " CHARACTER SET utf8mb4",
		"CREATE USER '" + mysql8User + "'@'%' IDENTIFIED WITH caching_sha2_password BY '" + mysql8Pass + "'",
		"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '" + mysql8User + "'@'%'",
	} {
		if _, err := root.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	var plugin string
	if err := root.QueryRow("SELECT plugin FROM mysql.user WHERE user = ?", mysql8User).Scan(&plugin); err != nil || plugin != "caching_sha2_password" {
		t.Fatalf("the user's auth plugin is %q (%v), want caching_sha2_password", plugin, err)
	}

	rd := testenv.NewRedis(t)
	e := &env{
		t:    t,
		my:   &testenv.MariaDB{}, // unused: the MySQL settings below override it
		rd:   rd,
		db:   db,
		rdb:  redis.NewClient(&redis.Options{Addr: rd.Addr(), DisableIdentity: true}),
		ckpt: filepath.Join(t.TempDir(), "checkpoint"),
		extra: map[string]string{
			"BINLOGSYNC_MYSQL_ADDR":     addr,
			"BINLOGSYNC_MYSQL_USER":     mysql8User,
			"BINLOGSYNC_MYSQL_PASSWORD": mysql8Pass,
			"BINLOGSYNC_MYSQL_FLAVOR":   "mysql",
			"BINLOGSYNC_MYSQL_GTID":     "on",
		},
	}
	defer e.rdb.Close()
	e.sqldb, err = sql.Open("mysql", fmt.Sprintf("root:%s@tcp(%s)/%s?multiStatements=true", mysql8RootPass, addr, db))
	if err != nil {
		t.Fatal(err)
	}
	defer e.sqldb.Close()
	e.exec("CREATE TABLE docs (id INT PRIMARY KEY, name VARCHAR(40) CHARACTER SET utf8mb4, j JSON, " +
		"amount DECIMAL(10,2), ts TIMESTAMP(6) NULL, b VARBINARY(8), bits BIT(8), f DOUBLE, y YEAR)")

	jsonCols := map[string]bool{"j": true}
	floatCols := map[string]bool{"f": true}
	same := func(timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			want, err := snapshotText(addr, "root", mysql8RootPass, db, "docs", "", []string{"id"})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := e.snapshotRedis("docs")
			normalizeJSON(t, want, jsonCols)
			normalizeJSON(t, got, jsonCols)
			d := diff(want, got, floatCols)
			if len(d) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Redis differs from MySQL 8 after %s:\n%s", timeout, strings.Join(d, "\n"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	p := e.start("--config", "../config.example.yaml")
	e.exec(
		`INSERT INTO docs VALUES (1, 'ann 😀', '{"a": 1, "b": [true, null, "é"], "c": {"d": 2.5}}', 12.50, '2024-02-29 12:00:00.000001', X'00FF', b'101', 0.1, 2024)`,
		`INSERT INTO docs VALUES (2, 'bob', '[1, 2, 3]', -0.01, NULL, '', b'0', 1e15, 0), (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
		// one multi-statement Exec: one session, one transaction
		`BEGIN; UPDATE docs SET j = JSON_SET(j, '$.a', 42, '$.new', 'x'), name = NULL WHERE id = 1; `+
			`UPDATE docs SET j = '"str"' WHERE id = 2; DELETE FROM docs WHERE id = 3; COMMIT`,
	)
	same(30 * time.Second)
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	// The checkpoint holds the server's GTID set.
	var uuid string
	if err := root.QueryRow("SELECT @@server_uuid").Scan(&uuid); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(e.ckpt)
	if err != nil || !bytes.Contains(raw, []byte(uuid+":")) {
		t.Fatalf("the checkpoint has no GTID set of server %s: %s (%v)", uuid, raw, err)
	}

	// Written while binlogsync is down, in a new binlog file; the file the
	// checkpoint names is then purged, so only a GTID resume can go on.
	e.exec(
		"FLUSH BINARY LOGS",
		`INSERT INTO docs VALUES (4, 'dee', '{"k": [{"x": 1}]}', 4.00, '2001-01-01 00:00:00', X'01', b'11111111', -2.5, 1999)`,
		"UPDATE docs SET amount = amount + 1 WHERE id = 1",
		"FLUSH BINARY LOGS",
	)
	logs := e.binaryLogs()
	purgeTo := logs[len(logs)-2] // holds the rows above
	deadline = time.Now().Add(20 * time.Second)
	for {
		e.exec("PURGE BINARY LOGS TO '" + purgeTo + "'")
		if e.binaryLogs()[0] == purgeTo {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("binlogs before %s not purged: %v", purgeTo, e.binaryLogs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	p = e.start("--config", "../config.example.yaml")
	if !strings.Contains(p.Log(), "resuming from the checkpoint") || !strings.Contains(p.Log(), uuid) {
		t.Errorf("no resume from the checkpoint's GTID set in the log:\n%s", p.Log())
	}
	e.exec(`INSERT INTO docs VALUES (5, 'after', '{}', 5.00, NULL, NULL, NULL, NULL, NULL)`)
	same(30 * time.Second)
	got, _ := e.snapshotRedis("docs")
	if got[db+":docs:4"]["name"] != "dee" || got[db+":docs:1"]["amount"] != "13.50" {
		t.Fatalf("rows written while binlogsync was down are missing after the GTID resume: %v", got)
	}

	// XA: MySQL logs XA START, the rows, XA END and an XA_PREPARE event, and the outcome later in its own group.
	ctx := context.Background()
	conns := e.sessions(ctx, 2)
	for _, step := range []struct {
		conn int
		q    string
	}{
		{0, "XA START 'm8'"}, {0, "INSERT INTO docs (id, name) VALUES (6, 'xa committed')"}, {0, "XA END 'm8'"},
		{0, "XA PREPARE 'm8'"},
		{1, "XA START 'r8'"}, {1, "INSERT INTO docs (id, name) VALUES (7, 'xa rolled back')"}, {1, "XA END 'r8'"},
		{1, "XA PREPARE 'r8'"}, {1, "XA ROLLBACK 'r8'"},
		{0, "XA COMMIT 'm8'"},
		{1, "XA START 'o8'"}, {1, "UPDATE docs SET name = 'one phase' WHERE id = 2"}, {1, "XA END 'o8'"},
		{1, "XA COMMIT 'o8' ONE PHASE"},
	} {
		if _, err := conns[step.conn].ExecContext(ctx, step.q); err != nil {
			t.Fatalf("%s: %v", step.q, err)
		}
	}
	same(30 * time.Second)
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// normalizeJSON rewrites the cols fields of rows as compact JSON with sorted
// object keys and numbers as float64: compared as JSON values, as SPEC section
// 2 says (MySQL 8 prints JSON in its own spacing and member order).
func normalizeJSON(t *testing.T, rows map[string]map[string]string, cols map[string]bool) {
	t.Helper()
	for _, row := range rows {
		for f, v := range row {
			if !cols[f] {
				continue
			}
			var x any
			if err := json.Unmarshal([]byte(v), &x); err != nil {
				row[f] = "invalid JSON: " + v
				continue
			}
			b, err := json.Marshal(x)
			if err != nil {
				t.Fatal(err)
			}
			row[f] = string(b)
		}
	}
}
