package source

import (
	"context"
	"crypto/x509"
	"database/sql"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

var preflightUserSeq atomic.Int32

// newUser creates a user with password "pw" on m, runs grants (with %s for
// the account), drops it at the end of the test and returns a connection as it.
func newUser(t *testing.T, m *testenv.MariaDB, grants ...string) (*sql.DB, string) {
	t.Helper()
	name := fmt.Sprintf("pf%d_%d", os.Getpid()%100000, preflightUserSeq.Add(1))
	account := "'" + name + "'@'%'"
	m.Exec(t, "CREATE USER "+account+" IDENTIFIED BY 'pw'")
	t.Cleanup(func() {
		db, err := sql.Open("mysql", m.DSN("root", m.RootPassword, ""))
		if err == nil {
			_, _ = db.Exec("DROP USER IF EXISTS " + account)
			db.Close()
		}
	})
	for _, g := range grants {
		m.Exec(t, fmt.Sprintf(g, account))
	}
	db, err := sql.Open("mysql", m.DSN(name, "pw", ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, name
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// problemFor returns the problem about setting, if any.
func problemFor(ps []Problem, setting string) (Problem, bool) {
	for _, p := range ps {
		if p.Setting == setting {
			return p, true
		}
	}
	return Problem{}, false
}

func fatalOnes(ps []Problem) []Problem {
	var out []Problem
	for _, p := range ps {
		if p.Fatal {
			out = append(out, p)
		}
	}
	return out
}

func TestDetectFlavorMariaDB(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	f, err := DetectFlavor(ctxT(t), m.Root(t, ""))
	if err != nil || f != "mariadb" {
		t.Fatalf("DetectFlavor = %q, %v; want mariadb", f, err)
	}
}

func TestPreflightGoodServer(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	ps, err := Preflight(ctxT(t), m.Root(t, ""), PreflightOptions{Flavor: "mariadb", ServerID: 4242, User: "root"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 0 {
		t.Fatalf("a well-configured server as root reports %v", ps)
	}
	// Flavor detected when not given.
	ps, err = Preflight(ctxT(t), m.Root(t, ""), PreflightOptions{ServerID: 4242})
	if err != nil || len(ps) != 0 {
		t.Fatalf("Preflight without flavor = %v, %v", ps, err)
	}
}

// TestLeastPrivilegeGrant checks the grant the Preflight doc recommends: it
// passes preflight and can read the binlog position and list.
func TestLeastPrivilegeGrant(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	db, name := newUser(t, m, "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO %s")
	ctx := ctxT(t)
	ps, err := Preflight(ctx, db, PreflightOptions{Flavor: "mariadb", ServerID: 4243, User: name,
		Tables: []string{"shop.users", "app_*.*"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := fatalOnes(ps); len(f) != 0 {
		t.Fatalf("least-privilege user has fatal problems: %v", f)
	}
	// The one expected warning: SHOW SLAVE HOSTS needs more on MariaDB.
	if len(ps) != 1 || ps[0].Setting != "mysql.server_id" || !strings.Contains(ps[0].Found, "not checked") {
		t.Fatalf("problems = %v, want only the unchecked server_id warning", ps)
	}

	var file, pos, doDB, ignoreDB string
	if err := db.QueryRowContext(ctx, "SHOW MASTER STATUS").Scan(&file, &pos, &doDB, &ignoreDB); err != nil {
		t.Fatalf("SHOW MASTER STATUS as the least-privilege user: %v", err)
	}
	p, err := CurrentPosition(ctx, db, "mariadb")
	if err != nil {
		t.Fatalf("CurrentPosition as the least-privilege user: %v", err)
	}
	if p.File == "" || p.Pos < 4 || p.GTIDSet == "" || p.Flavor != "mariadb" || p.ServerUUID != "1" {
		t.Fatalf("CurrentPosition = %+v", p)
	}
	ok, err := BinlogAvailable(ctx, db, p.File)
	if err != nil || !ok {
		t.Fatalf("BinlogAvailable(%s) = %v, %v; want true", p.File, ok, err)
	}
	ok, err = BinlogAvailable(ctx, db, "mariadb-bin.999999")
	if err != nil || ok {
		t.Fatalf("BinlogAvailable(purged) = %v, %v; want false", ok, err)
	}
}

// TestCurrentPositionIsConsistent checks that the GTID set names the same
// point as file/offset: after one more transaction both move together.
func TestCurrentPositionIsConsistent(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	db := m.Root(t, "")
	ctx := ctxT(t)
	name := m.NewDatabase(t)
	m.Exec(t, "CREATE TABLE `"+name+"`.x (id INT PRIMARY KEY)")
	before, err := CurrentPosition(ctx, db, "")
	if err != nil {
		t.Fatal(err)
	}
	m.Exec(t, "INSERT INTO `"+name+"`.x VALUES (1)")
	after, err := CurrentPosition(ctx, db, "mariadb")
	if err != nil {
		t.Fatal(err)
	}
	if after.File == before.File && after.Pos <= before.Pos {
		t.Fatalf("position did not move: %+v then %+v", before, after)
	}
	if after.GTIDSet == before.GTIDSet {
		t.Fatalf("GTID set did not move: %q", after.GTIDSet)
	}
	var atBefore string
	if err := db.QueryRowContext(ctx, "SELECT BINLOG_GTID_POS(?, ?)", before.File, before.Pos).Scan(&atBefore); err != nil {
		t.Fatal(err)
	}
	if atBefore != before.GTIDSet {
		t.Fatalf("GTID set %q does not match its file/offset (%q)", before.GTIDSet, atBefore)
	}
}

func TestPreflightPrivileges(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	ctx := ctxT(t)

	t.Run("select only", func(t *testing.T) {
		db, name := newUser(t, m, "GRANT SELECT ON *.* TO %s")
		ps, err := Preflight(ctx, db, PreflightOptions{Flavor: "mariadb", ServerID: 4244, User: name})
		if err != nil {
			t.Fatal(err)
		}
		p, ok := problemFor(ps, "mysql.user")
		if !ok || !p.Fatal {
			t.Fatalf("problems = %v, want a fatal one about mysql.user", ps)
		}
		want := "mysql.user is '" + name + "'@'%' without REPLICATION SLAVE, REPLICATION CLIENT; binlogsync needs " +
			"them on *.*: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '" + name + "'@'%'"
		if p.Error() != want {
			t.Fatalf("Error() = %q\nwant      %q", p.Error(), want)
		}
	})

	t.Run("select on one database", func(t *testing.T) {
		dbName, other := m.NewDatabase(t), m.NewDatabase(t)
		m.Exec(t, "CREATE TABLE `"+other+"`.t1 (a INT)", "CREATE TABLE `"+other+"`.t2 (a INT)")
		db, name := newUser(t, m, "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO %s",
			"GRANT SELECT ON `"+dbName+"`.* TO %s", "GRANT SELECT ON `"+other+"`.`t1` TO %s",
			"GRANT SELECT (`a`) ON `"+other+"`.`t2` TO %s")
		check := func(tables []string, wantMissing string) {
			t.Helper()
			ps, err := Preflight(ctx, db, PreflightOptions{Flavor: "mariadb", ServerID: 4245, User: name,
				Tables: tables})
			if err != nil {
				t.Fatal(err)
			}
			var sel []Problem
			for _, p := range ps {
				if p.Setting == "mysql.user" {
					sel = append(sel, p)
				}
			}
			if wantMissing == "" {
				if len(sel) != 0 {
					t.Fatalf("tables %v: problems %v, want none about mysql.user", tables, sel)
				}
				return
			}
			if len(sel) != 1 || !sel[0].Fatal || !strings.Contains(sel[0].Found, "without SELECT on "+wantMissing+" ") {
				t.Fatalf("tables %v: problems %v, want a fatal one naming %s", tables, sel, wantMissing)
			}
		}
		check([]string{dbName + ".*", dbName + ".x", other + ".t1"}, "")
		check([]string{other + ".t2"}, other+".t2") // column-level SELECT is not the whole table
		check([]string{dbName + ".*", other + ".*"}, other+".*")
		check(nil, "*.*")
	})
}

// TestMisconfiguredServer uses one server started with the settings
// binlogsync rejects. It also serves as a replica of the shared server, to
// check that a server_id registered by another replica is refused.
func TestMisconfiguredServer(t *testing.T) {
	shared := testenv.SharedMariaDB(t)
	m := testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{
		"--binlog-format=STATEMENT", "--binlog-row-image=MINIMAL", "--binlog-row-metadata=MINIMAL",
		"--skip-log-bin", "--server-id=77",
	}})
	ctx := ctxT(t)
	db := m.Root(t, "")

	ps, err := Preflight(ctx, db, PreflightOptions{Flavor: "mariadb", ServerID: 4246, User: "root"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		fatal bool
		msg   string
	}{
		"log_bin": {true, "log_bin is OFF; binlogsync needs ON: start the server with log_bin"},
		"binlog_format": {true, "binlog_format is STATEMENT; binlogsync needs ROW: " +
			"SET GLOBAL binlog_format=ROW and binlog_format=ROW in my.cnf"},
		"binlog_row_image": {true, "binlog_row_image is MINIMAL; binlogsync needs FULL: " +
			"SET GLOBAL binlog_row_image=FULL and binlog_row_image=FULL in my.cnf"},
		"binlog_row_metadata": {false, "binlog_row_metadata is MINIMAL; binlogsync needs FULL: " +
			"SET GLOBAL binlog_row_metadata=FULL"},
	}
	if len(ps) != len(want) {
		t.Errorf("problems = %v, want exactly %d", ps, len(want))
	}
	for setting, w := range want {
		p, ok := problemFor(ps, setting)
		if !ok {
			t.Errorf("no problem reported for %s", setting)
			continue
		}
		if p.Fatal != w.fatal || !strings.HasPrefix(p.Error(), w.msg) {
			t.Errorf("%s: fatal=%v %q\nwant fatal=%v %q...", setting, p.Fatal, p.Error(), w.fatal, w.msg)
		}
	}

	if _, err := CurrentPosition(ctx, db, "mariadb"); err == nil || !strings.Contains(err.Error(), "log_bin") {
		t.Errorf("CurrentPosition without binlog = %v, want an error naming log_bin", err)
	}
	if _, err := BinlogAvailable(ctx, db, "x.000001"); err == nil {
		t.Errorf("BinlogAvailable without binlog succeeded")
	}

	t.Run("server_id of a registered replica", func(t *testing.T) {
		rootShared := shared.Root(t, "")
		start, err := CurrentPosition(ctx, rootShared, "mariadb")
		if err != nil {
			t.Fatal(err)
		}
		_, repl := newUser(t, shared, "GRANT REPLICATION SLAVE ON *.* TO %s")
		m.Exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', "+
			"MASTER_PASSWORD='pw', MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d, MASTER_USE_GTID=no",
			shared.Port, repl, start.File, start.Pos), "START SLAVE IO_THREAD")
		t.Cleanup(func() { m.Exec(t, "STOP SLAVE") })
		deadline := time.Now().Add(60 * time.Second)
		for {
			rows, err := queryRows(ctx, rootShared, "SHOW SLAVE HOSTS")
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) > 0 && rows[0]["server_id"] == "77" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the replica never registered: %v", rows)
			}
			time.Sleep(100 * time.Millisecond)
		}
		ps, err := Preflight(ctx, rootShared, PreflightOptions{Flavor: "mariadb", ServerID: 77, User: "root"})
		if err != nil {
			t.Fatal(err)
		}
		p, ok := problemFor(ps, "mysql.server_id")
		if !ok || !p.Fatal || !strings.Contains(p.Error(), "already registered") ||
			!strings.Contains(p.Error(), "set mysql.server_id to an unused value") {
			t.Fatalf("problems = %v, want a fatal one: server_id already registered", ps)
		}
		if ps, err := Preflight(ctx, rootShared, PreflightOptions{Flavor: "mariadb", ServerID: 78}); err != nil ||
			len(ps) != 0 {
			t.Fatalf("an unused server_id reports %v, %v", ps, err)
		}
	})
}

func TestPreflightServerID(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	for _, id := range []uint32{1, 0} { // 1 is the shared server's own
		ps, err := Preflight(ctxT(t), m.Root(t, ""), PreflightOptions{Flavor: "mariadb", ServerID: id})
		if err != nil {
			t.Fatal(err)
		}
		p, ok := problemFor(ps, "mysql.server_id")
		if !ok || !p.Fatal || !strings.Contains(p.Error(), "set mysql.server_id to an unused value") {
			t.Fatalf("server_id %d: problems %v, want a fatal one about mysql.server_id", id, ps)
		}
	}
}

func TestExplainConnectError(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	ping := func(dsn string) error {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = db.PingContext(ctx)
		if err == nil {
			t.Fatalf("connecting with %s succeeded", dsn)
		}
		return err
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	closed := fmt.Sprintf("127.0.0.1:%d", port)

	cases := []struct {
		name, addr string
		err        error
		setting    string
	}{
		{"wrong password", m.Addr(), ping(m.DSN("root", "wrong", "")), "mysql.password"},
		{"closed port", closed, ping(fmt.Sprintf("root:x@tcp(%s)/", closed)), "mysql.addr"},
		{"server without TLS", m.Addr(), ping(m.DSN("root", "", "") + "&tls=true"), "mysql.tls"},
		// Errors a real server cannot be made to give here, as the driver returns them.
		{"unknown host", "db.invalid:3306", &net.OpError{Op: "dial", Net: "tcp",
			Err: &net.DNSError{Err: "no such host", Name: "db.invalid", IsNotFound: true}}, "mysql.addr"},
		{"timeout", "10.255.255.1:3306", &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded},
			"mysql.addr"},
		{"untrusted certificate", m.Addr(), fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), "mysql.tls"},
		{"host not allowed", m.Addr(), &mysql.MySQLError{Number: 1130, Message: "Host '10.1.1.1' is not allowed"},
			"mysql.user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := ExplainConnectError(c.addr, "root", c.err)
			msg := e.Error()
			if !strings.HasPrefix(msg, c.setting+": ") || !strings.Contains(msg, c.addr) && c.setting != "mysql.user" {
				t.Fatalf("ExplainConnectError = %q, want it to start with %s and name %s", msg, c.setting, c.addr)
			}
			if strings.Contains(msg, "\n") {
				t.Fatalf("message is not one line: %q", msg)
			}
			if !strings.Contains(msg, c.err.Error()) {
				t.Fatalf("message %q lost the cause %q", msg, c.err)
			}
		})
	}
	if ExplainConnectError("x", "y", nil) != nil {
		t.Fatal("ExplainConnectError(nil) != nil")
	}
}

func TestParseGrant(t *testing.T) {
	cases := []struct {
		line      string
		ok, role  bool
		privs     string
		db, table string
	}{
		{"GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION", true, false, "ALL PRIVILEGES", "*", "*"},
		{"GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `pf`@`%` IDENTIFIED BY PASSWORD '*B69'",
			true, false, "SELECT|REPLICATION SLAVE|BINLOG MONITOR", "*", "*"},
		{"GRANT SELECT (`id`, `a b`), INSERT ON `d`.`t2` TO `ps`@`%`", true, false, "INSERT", "d", "t2"},
		{"GRANT SELECT ON `we``ird db`.* TO 'u'@'%'", true, false, "SELECT", "we`ird db", "*"},
		{"GRANT SELECT ON shop.users TO 'u'@'%'", true, false, "SELECT", "shop", "users"},
		{"GRANT `r1` TO `ps`@`%`", false, true, "", "", ""},
		{"GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION", false, false, "", "", ""},
		{"GRANT EXECUTE ON PROCEDURE `d`.`p` TO 'u'@'%'", false, false, "", "", ""},
		{"SET DEFAULT ROLE `r1` FOR `ps`@`%`", false, false, "", "", ""},
	}
	for _, c := range cases {
		g, ok, role := parseGrant(c.line)
		if ok != c.ok || role != c.role {
			t.Errorf("%s: ok=%v role=%v, want %v %v", c.line, ok, role, c.ok, c.role)
			continue
		}
		if ok && (strings.Join(g.privs, "|") != c.privs || g.db != c.db || g.table != c.table) {
			t.Errorf("%s: %+v, want %s on %s.%s", c.line, g, c.privs, c.db, c.table)
		}
	}
}

func TestLikeMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"shop", "shop", true}, {"shop", "shops", false}, {"shop%", "shop_eu", true}, {"sh_p", "shop", true},
		{`sh\_p`, "shop", false}, {`sh\_p`, "sh_p", true}, {"%", "", true}, {"a%b", "ab", true}, {"a%b", "ac", false},
	} {
		if got := likeMatch(c.pattern, c.s); got != c.want {
			t.Errorf("likeMatch(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}
