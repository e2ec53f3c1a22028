package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIntegrationTablesWithoutPrimaryKey covers tables without a primary key: one is skipped with a warning
// while the others stream; one is replicated through the NOT NULL unique key that tables.rules[].key_columns
// names (inserts, updates of the key, deletes), and the reconciler compares it on that key; key columns that
// are not a NOT NULL unique key stop the start with a message naming the setting.
func TestIntegrationTablesWithoutPrimaryKey(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL,
		"CREATE TABLE nopk (a INT, b VARCHAR(10))",
		"CREATE TABLE uk (id INT NOT NULL, code VARCHAR(10) NOT NULL, v INT NULL, UNIQUE KEY (code))")
	writeConfig := func(keyCols string) string {
		path := filepath.Join(t.TempDir(), "binlogsync.yaml")
		yaml := fmt.Sprintf("tables:\n  rules:\n    - match: \"%s.uk\"\n      key_columns: [%s]\n      key_index: true\n", e.db, keyCols)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	// Key columns that are not a NOT NULL unique key: exit 3 before streaming, naming the setting.
	for _, bad := range []string{"v", "id", "nope"} {
		p := e.spawn("--config", writeConfig(bad))
		if code := p.wait(t, 30*time.Second); code != 3 {
			t.Fatalf("key_columns [%s]: exit code %d, want 3\n%s", bad, code, tail(p.Log(), 2000))
		}
		if !strings.Contains(p.Log(), "tables.rules[].key_columns of "+e.db+".uk") {
			t.Fatalf("key_columns [%s]: the message does not name the setting:\n%s", bad, tail(p.Log(), 2000))
		}
	}

	cfg := writeConfig("code")
	p := e.start("--config", cfg)
	if !strings.Contains(p.Log(), "table "+e.db+".nopk is without a primary key") {
		t.Fatalf("no warning about the table without a primary key:\n%s", tail(p.Log(), 3000))
	}
	e.exec("INSERT INTO nopk VALUES (1, 'x'), (2, 'y')",
		"INSERT INTO uk VALUES (1, 'one', 10), (2, 'two', NULL), (3, 'three', 30)",
		"UPDATE uk SET v = 11 WHERE code = 'one'",
		"UPDATE uk SET code = 'deux' WHERE code = 'two'", // the key changes: the old key goes
		"DELETE FROM uk WHERE code = 'three'",
		"INSERT INTO users VALUES (1, 'after', 1, NULL, NOW(6))")
	e.waitSame("users", 20*time.Second, nil, "id")
	e.waitSame("uk", 20*time.Second, nil, "code")
	ctx := context.Background()
	if keys := e.rdb.Keys(ctx, e.db+":nopk*").Val(); len(keys) != 0 {
		t.Fatalf("rows of the skipped table reached Redis: %q", keys)
	}
	if n := e.rdb.Exists(ctx, e.db+":uk:two", e.db+":uk:three").Val(); n != 0 {
		t.Fatalf("%d keys of changed or deleted rows are left", n)
	}

	// The reconciler compares uk on its unique key and skips nopk, naming why.
	e.rdb.HSet(ctx, e.db+":uk:one", "v", "drift")
	rep := e.reconcileWith(cfg)
	if tr := e.tableReport(rep, "uk"); tr.Stale.Found != 1 || tr.Stale.Repaired != 1 || tr.Rows != 2 {
		t.Fatalf("uk report %+v, want 2 rows and the drifted one repaired", tr)
	}
	if tr := e.tableReport(rep, "nopk"); !strings.Contains(tr.Error, "no primary key") {
		t.Fatalf("nopk report %+v, want it skipped for having no primary key", tr)
	}
	e.waitSame("uk", 20*time.Second, nil, "code")

	// A row deleted behind the stream leaves an orphan key; its text key cannot be probed, but the sink's key
	// index (key_index: true) lets the next pass find it without --scan-orphans.
	conn, err := e.sqldb.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SET sql_log_bin = 0", "DELETE FROM uk WHERE code = 'deux'", "SET sql_log_bin = 1"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	rep = e.reconcileWith(cfg)
	if tr := e.tableReport(rep, "uk"); tr.Extra.Found != 1 || tr.Extra.Repaired != 1 {
		t.Fatalf("uk report %+v, want the orphan found through the key index and deleted", tr)
	}
	e.waitSame("uk", 20*time.Second, nil, "code")
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
