package integration

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// A failover behind one address (a virtual IP, a DNS name, a proxy): the
// primary A's replica B is promoted and mysql.addr now reaches B, while A is
// still up. A's binlog is further along (its file numbers are higher), so
// B's changes stamped with A's version epoch would all be fenced out.
//
// binlogsync must notice B on the reconnect, before reading any of its
// events, and stop with A's checkpoint. A start with mysql.gtid off must then
// refuse A's file and position on B (leaving the checkpoint alone), and a
// start with GTIDs must resume by the GTID set in a new epoch, so that B's
// changes land.
func TestIntegrationFailoverBehindOneAddress(t *testing.T) {
	a := testenv.NewMariaDB(t, testenv.MariaDBOptions{})
	b := testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--server-id=2", "--log-slave-updates=ON"}})
	bRoot := b.Root(t, "")
	for _, q := range []string{
		"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=" + strconv.Itoa(a.Port) +
			", MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos",
		"START SLAVE",
	} {
		if _, err := bRoot.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	proxy := testenv.NewProxy(t, a.Addr())
	e := newEnv(t, a, testenv.NewRedis(t))
	e.extra["BINLOGSYNC_MYSQL_ADDR"] = proxy.Addr()
	e.extra["BINLOGSYNC_MYSQL_GTID"] = "on" // a reconnect by GTID set works on B: nothing but the check stops it
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users (id, name) VALUES (1, 'a1'), (2, 'a2')", "FLUSH BINARY LOGS", "FLUSH BINARY LOGS",
		"FLUSH BINARY LOGS", "UPDATE users SET name = 'a2 again' WHERE id = 2")
	e.waitSame("users", 20*time.Second, nil, "id")

	// B has everything of A; promote it and move the address.
	var aPos string
	if err := e.sqldb.QueryRow("SELECT @@gtid_binlog_pos").Scan(&aPos); err != nil {
		t.Fatal(err)
	}
	var waited int
	if err := bRoot.QueryRow("SELECT MASTER_GTID_WAIT(?, 30)", aPos).Scan(&waited); err != nil || waited != 0 {
		t.Fatalf("the replica did not catch up with %s: %d %v", aPos, waited, err)
	}
	for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL"} {
		if _, err := bRoot.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	proxy.Retarget(b.Addr())
	proxy.Drop()
	if code := p.wait(t, 60*time.Second); code != 1 {
		t.Fatalf("exit code %d after the server behind mysql.addr changed, want 1", code)
	}
	if !strings.Contains(p.Log(), "the server behind mysql.addr changed while streaming (it was mariadb-server-id:1, "+
		"it is now mariadb-server-id:2)") {
		t.Fatalf("no message naming the server change:\n%s", tail(p.Log(), 3000))
	}
	e.my, e.sqldb = b, b.Root(t, e.db)
	e.exec("UPDATE users SET name = 'b1' WHERE id = 1", "INSERT INTO users (id, name) VALUES (3, 'b3')")

	// With mysql.gtid off, A's file and position mean nothing on B.
	before := readFile(t, e.ckpt)
	e.extra["BINLOGSYNC_MYSQL_GTID"] = "off"
	off := e.spawn("--config", "../config.example.yaml")
	if code := off.wait(t, 60*time.Second); code != 4 {
		t.Fatalf("exit code %d for A's file position on B with mysql.gtid off, want 4:\n%s", code, off.Log())
	}
	if !strings.Contains(off.Log(), "a binlog position of one server means nothing on another") {
		t.Fatalf("the refusal does not say why:\n%s", tail(off.Log(), 3000))
	}
	if after := readFile(t, e.ckpt); after != before {
		t.Fatalf("a refused start changed the checkpoint:\n%s\n->\n%s", before, after)
	}
	for gtid, want := range map[string]int{"off": 4, "auto": 0} {
		e.extra["BINLOGSYNC_MYSQL_GTID"] = gtid
		check := e.spawn("--config", "../config.example.yaml", "--check")
		if code := check.wait(t, 60*time.Second); code != want {
			t.Fatalf("--check with mysql.gtid %s: exit code %d, want %d:\n%s", gtid, code, want, check.Log())
		}
	}

	// With GTIDs (auto, the default) it resumes on B by the set, in a new epoch.
	delete(e.extra, "BINLOGSYNC_MYSQL_GTID")
	p = e.start("--config", "../config.example.yaml")
	e.waitSame("users", 20*time.Second, nil, "id")
	for _, want := range []string{"starting a new version epoch", "resuming by its GTID set"} {
		if !strings.Contains(p.Log(), want) {
			t.Errorf("the start on B did not log %q", want)
		}
	}
	e.exec("DELETE FROM users WHERE id = 2")
	e.waitSame("users", 20*time.Second, nil, "id")
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
