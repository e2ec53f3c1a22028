package source

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/replication"
)

// TestGoMySQLConfigLog: the syncer configuration go-mysql logs at every connection comes out as readable JSON,
// without the password, instead of an "!ERROR" string.
func TestGoMySQLConfigLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(goMySQLHandler{slog.NewJSONHandler(&buf, nil)}).With(slog.String("component", "go-mysql"))
	cfg := replication.BinlogSyncerConfig{ServerID: 7, Flavor: "mariadb", Host: "db", Port: 3306, User: "repl",
		Password: "secret", Option: func(*client.Conn) error { return nil }}
	log.Info("create BinlogSyncer", slog.Any("config", cfg), slog.Int("other", 1))
	out := buf.String()
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, out)
	}
	if strings.Contains(out, "ERROR") || strings.Contains(out, "secret") {
		t.Fatalf("log line: %s", out)
	}
	c, _ := rec["config"].(map[string]any)
	if c["server_id"] != float64(7) || c["host"] != "db" || c["user"] != "repl" || rec["other"] != float64(1) ||
		rec["component"] != "go-mysql" {
		t.Fatalf("log line: %s", out)
	}
}
