package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The least-privilege user streams, and its password never shows in the
// logs (debug level), in /metrics or in --print-config.
func TestIntegrationSecretsNeverLeak(t *testing.T) {
	e := sharedEnv(t)
	const secret = "S3cret-pw-7f9e2b"
	user := "bls_" + e.db
	e.exec("CREATE USER '"+user+"'@'%' IDENTIFIED BY '"+secret+"'",
		"GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '"+user+"'@'%'",
		usersDDL)
	t.Cleanup(func() { _, _ = e.sqldb.Exec("DROP USER '" + user + "'@'%'") })
	pwFile := filepath.Join(t.TempDir(), "mysql-password")
	if err := os.WriteFile(pwFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extra["BINLOGSYNC_MYSQL_USER"] = user
	e.extra["BINLOGSYNC_MYSQL_PASSWORD"] = ""
	e.extra["BINLOGSYNC_MYSQL_PASSWORD_FILE"] = pwFile
	p := e.start("--config", "../config.example.yaml")
	// A password in a statement of the binlog (logged as DDL) stays out of the log too.
	e.exec("ALTER USER '"+user+"'@'%' IDENTIFIED BY '"+secret+"'", "INSERT INTO users VALUES (1,'a',1,NULL,NOW(6))")
	e.waitSame("users", 20*time.Second, nil, "id")

	// The row reaches Redis a moment before the pipeline counts it, so the
	// counter's first series may take a moment to appear.
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + p.httpAddr(t) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "binlogsync_rows_applied_total") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics not served: no binlogsync_rows_applied_total in\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(string(body), secret) {
		t.Fatalf("the password appears in /metrics")
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		r, err := http.Get("http://" + p.httpAddr(t) + path)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, r, err)
		}
		r.Body.Close()
	}
	p.stop(t, 15*time.Second)
	// The start-up checks see the table's primary key as this user (MariaDB shows it no TABLE_CONSTRAINTS).
	if strings.Contains(p.Log(), "without a primary key") {
		t.Fatalf("a table with a primary key was reported without one:\n%s", p.Log())
	}
	if strings.Contains(p.Log(), secret) {
		t.Fatalf("the password appears in the log")
	}
	if !strings.Contains(p.Log(), "level=DEBUG") {
		t.Fatalf("the test should run at debug level to be meaningful")
	}

	cfgOut := e.spawn("--config", "../config.example.yaml", "--print-config")
	if code := cfgOut.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("--print-config exited %d", code)
	}
	if strings.Contains(cfgOut.Log(), secret) || !strings.Contains(cfgOut.Log(), "password_file: "+pwFile) {
		t.Fatalf("--print-config should show the file, not the secret:\n%s", cfgOut.Log())
	}
}
