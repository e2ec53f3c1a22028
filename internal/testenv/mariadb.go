package testenv

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver for test queries
)

// MariaDBOptions tune a test server. The zero value is a server as binlogsync
// expects it: binlog on, ROW format, FULL row image, FULL row metadata.
type MariaDBOptions struct {
	// ExtraArgs are appended to the mariadbd command line, after the defaults,
	// so they override them (e.g. "--binlog-format=STATEMENT").
	ExtraArgs []string
}

// MariaDB is a running test server. Root connects with RootPassword over TCP.
type MariaDB struct {
	Port         int
	Dir          string
	RootPassword string

	bin  string
	opts MariaDBOptions

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logBuf *bytes.Buffer
}

// Addr is host:port.
func (m *MariaDB) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.Port) }

// DSN is a go-sql-driver DSN for user/password on database db (may be empty).
func (m *MariaDB) DSN(user, password, db string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?multiStatements=true&interpolateParams=true", user, password, m.Addr(), db)
}

// StartMariaDB installs a fresh data directory under dir and starts mariadbd on
// a free loopback port.
func StartMariaDB(dir string, opts MariaDBOptions) (*MariaDB, error) {
	bin, err := lookBin("mariadbd", "mysqld")
	if err != nil {
		return nil, err
	}
	if err := installDB(dir); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &MariaDB{Port: port, Dir: dir, RootPassword: "", bin: bin, opts: opts}
	if err := m.Start(); err != nil {
		return nil, err
	}
	return m, nil
}

// installDB creates the system tables in dir/data, with dir/tmp as the
// temp dir.
func installDB(dir string) error {
	install, err := lookBin("mariadb-install-db", "mysql_install_db")
	if err != nil {
		return err
	}
	data := filepath.Join(dir, "data")
	// A temp dir of its own: in the shared /tmp, another server's start-up
	// cleanup can delete the install's temporary tables under it.
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{data, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	out, err := exec.Command(install, "--no-defaults", "--datadir="+data, "--tmpdir="+tmp, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve").CombinedOutput()
	if err != nil {
		return fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	return nil
}

// Start (re)starts mariadbd on the same port and data directory.
func (m *MariaDB) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	args := []string{
		"--no-defaults",
		"--datadir=" + filepath.Join(m.Dir, "data"),
		"--socket=" + filepath.Join(m.Dir, "mysqld.sock"),
		"--pid-file=" + filepath.Join(m.Dir, "mysqld.pid"),
		"--tmpdir=" + filepath.Join(m.Dir, "tmp"),
		"--port=" + strconv.Itoa(m.Port),
		"--bind-address=127.0.0.1",
		"--user=root",
		"--skip-name-resolve",
		"--server-id=1",
		"--log-bin=" + filepath.Join(m.Dir, "data", "mariadb-bin"),
		"--binlog-format=ROW",
		"--binlog-row-image=FULL",
		"--binlog-row-metadata=FULL",
		"--innodb-buffer-pool-size=256M",
		"--innodb-log-file-size=256M",
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
		"--max-allowed-packet=256M",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
		"--default-time-zone=+00:00",
		"--max-connections=500",
		"--log-error=" + filepath.Join(m.Dir, "error.log"),
	}
	args = append(args, m.opts.ExtraArgs...)
	errLog := filepath.Join(m.Dir, "error.log")
	from := fileSize(errLog) // a restart appends to the same log
	cmd := exec.Command(m.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mariadbd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	m.cmd, m.exited = cmd, exited
	// mariadbd logs this once it listens; a connect alone could reach another
	// process that holds the port while this server fails to bind.
	err := waitLog(errLog, from, "ready for connections", 120*time.Second, exited)
	if err == nil {
		err = waitTCP(m.Addr(), 10*time.Second, exited)
	}
	if err != nil {
		log, _ := os.ReadFile(errLog)
		return fmt.Errorf("%w\nmariadbd error log:\n%s", err, log)
	}
	return m.waitReady()
}

func (m *MariaDB) waitReady() error {
	db, err := sql.Open("mysql", m.DSN("root", m.RootPassword, ""))
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = db.Ping()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop shuts the server down cleanly.
func (m *MariaDB) Stop() {
	m.signal(syscall.SIGTERM, 60*time.Second)
}

// Kill kills the server with SIGKILL (a crash).
func (m *MariaDB) Kill() {
	m.signal(syscall.SIGKILL, 30*time.Second)
}

func (m *MariaDB) signal(sig syscall.Signal, wait time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(wait):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd = nil
}

// Restart stops and starts the server (a new binlog file follows).
func (m *MariaDB) Restart() error {
	m.Stop()
	return m.Start()
}

// Root opens a database/sql handle as root on database db (may be empty).
func (m *MariaDB) Root(t testing.TB, db string) *sql.DB {
	t.Helper()
	h, err := sql.Open("mysql", m.DSN("root", m.RootPassword, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Exec runs statements as root, failing the test on error.
func (m *MariaDB) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	db := m.Root(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("exec %q: %v", truncate(s, 200), err)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

var (
	sharedMu  sync.Mutex
	sharedDB  *MariaDB
	sharedErr error
)

// SharedMariaDB returns one server per test binary (started on first use and
// left running until the process exits; use StopShared in TestMain). Tests that
// share it must use databases of their own (see NewDatabase).
func SharedMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedDB == nil && sharedErr == nil {
		dir, err := os.MkdirTemp("", "binlogsync-mariadb-")
		if err == nil {
			sharedDB, err = StartMariaDB(dir, MariaDBOptions{})
		}
		sharedErr = err
	}
	if sharedErr != nil {
		Require(t, "starting MariaDB: %v", sharedErr)
	}
	return sharedDB
}

// StopShared stops the shared servers; call it at the end of TestMain.
func StopShared() {
	sharedMu.Lock()
	if sharedDB != nil {
		sharedDB.Stop()
		_ = os.RemoveAll(sharedDB.Dir)
		sharedDB = nil
	}
	sharedMu.Unlock()
	stopSharedRedis()
}

// NewMariaDB starts a server of the test's own (for tests that restart, kill or
// reconfigure it), stopped at the end of the test.
func NewMariaDB(t testing.TB, opts MariaDBOptions) *MariaDB {
	t.Helper()
	m, err := StartMariaDB(t.TempDir(), opts)
	if err != nil {
		Require(t, "starting MariaDB: %v", err)
	}
	t.Cleanup(m.Stop)
	return m
}

var dbSeq struct {
	sync.Mutex
	n int
}

// NewDatabase creates a database with a unique name for the test and returns
// its name; it is dropped when the test ends.
func (m *MariaDB) NewDatabase(t testing.TB) string {
	t.Helper()
	dbSeq.Lock()
	dbSeq.n++
	name := fmt.Sprintf("t%d_%d", os.Getpid()%100000, dbSeq.n)
	dbSeq.Unlock()
	m.Exec(t, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4")
	t.Cleanup(func() {
		db, err := sql.Open("mysql", m.DSN("root", m.RootPassword, ""))
		if err == nil {
			_, _ = db.Exec("DROP DATABASE IF EXISTS `" + name + "`")
			db.Close()
		}
	})
	return name
}
