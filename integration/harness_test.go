// Package integration runs binlogsync end to end against real servers: a
// MariaDB and a Redis started on free loopback ports (internal/testenv), with
// the binlogsync binary run as a separate process so it can be killed.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "binlogsync-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "binlogsync")
	out, err := exec.Command("go", "build", "-o", binPath, "../cmd/binlogsync").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building binlogsync: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	testenv.StopShared()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's servers and configuration.
type env struct {
	t      *testing.T
	my     *testenv.MariaDB
	rd     *testenv.Redis
	db     string // database under test
	rdb    *redis.Client
	sqldb  *sql.DB
	ckpt   string
	extra  map[string]string
	prefix string
}

func newEnv(t *testing.T, my *testenv.MariaDB, rd *testenv.Redis) *env {
	t.Helper()
	e := &env{t: t, my: my, rd: rd, extra: map[string]string{}}
	e.db = my.NewDatabase(t)
	e.prefix = ""
	e.rdb = redis.NewClient(&redis.Options{Addr: rd.Addr(), DisableIdentity: true})
	t.Cleanup(func() { e.rdb.Close() })
	e.sqldb = my.Root(t, e.db)
	e.ckpt = filepath.Join(t.TempDir(), "checkpoint")
	return e
}

// sharedEnv uses the package's shared MariaDB and a Redis of the test's own.
func sharedEnv(t *testing.T) *env {
	return newEnv(t, testenv.SharedMariaDB(t), testenv.NewRedis(t))
}

func (e *env) exec(stmts ...string) {
	e.t.Helper()
	for _, s := range stmts {
		if _, err := e.sqldb.Exec(s); err != nil {
			e.t.Fatalf("exec %.200q: %v", s, err)
		}
	}
}

// proc is a running binlogsync.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	log    bytes.Buffer
	done   chan struct{}
	err    error
	http   string
	maxRSS int64 // KiB, after exit (includes the test process's pages from before exec)
	hwm    int64 // KiB, VmHWM read just before SIGTERM: binlogsync's own peak
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (e *env) environ() []string {
	envs := []string{
		"BINLOGSYNC_MYSQL_ADDR=" + e.my.Addr(),
		"BINLOGSYNC_MYSQL_USER=root",
		"BINLOGSYNC_MYSQL_PASSWORD=" + e.my.RootPassword,
		"BINLOGSYNC_MYSQL_HEARTBEAT=200ms",
		"BINLOGSYNC_MYSQL_READ_TIMEOUT=5s",
		"BINLOGSYNC_REDIS_ADDR=" + e.rd.Addr(),
		"BINLOGSYNC_TABLES_INCLUDE=" + e.db + ".*",
		"BINLOGSYNC_CHECKPOINT_PATH=" + e.ckpt,
		"BINLOGSYNC_CHECKPOINT_INTERVAL=100ms",
		"BINLOGSYNC_HTTP_ADDR=127.0.0.1:0",
		"BINLOGSYNC_LOG_LEVEL=debug",
		"BINLOGSYNC_LOG_FORMAT=text",
		"BINLOGSYNC_SHUTDOWN_TIMEOUT=10s",
	}
	for k, v := range e.extra {
		envs = append(envs, k+"="+v)
	}
	return envs
}

// start runs binlogsync and waits until it streams.
func (e *env) start(args ...string) *proc {
	e.t.Helper()
	p := e.spawn(args...)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.Log(), "msg=streaming") {
		select {
		case <-p.done:
			e.t.Fatalf("binlogsync exited before streaming: %v\n%s", p.err, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("binlogsync did not start streaming:\n%s", p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// spawn runs binlogsync without waiting.
func (e *env) spawn(args ...string) *proc {
	e.t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Env = append(os.Environ(), e.environ()...)
	p.cmd.Stderr = p
	p.cmd.Stdout = p
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			p.maxRSS = ru.Maxrss
		}
		close(p.done)
	}()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if e.t.Failed() {
			e.t.Logf("binlogsync log:\n%s", tail(p.Log(), 6000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// kill9 kills binlogsync with SIGKILL (a crash).
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t *testing.T, within time.Duration) int {
	t.Helper()
	p.hwm = vmHWM(p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("binlogsync did not stop within %s after SIGTERM", within)
	}
	return p.cmd.ProcessState.ExitCode()
}

// wait waits for the process to exit by itself and returns its exit code.
func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("binlogsync did not exit within %s", within)
	}
	return p.cmd.ProcessState.ExitCode()
}

// snapshotMySQL reads every row of db.table over the text protocol, in UTC:
// key -> field -> value (NULL columns absent), as SPEC section 2 defines.
func (e *env) snapshotMySQL(table string, pk ...string) map[string]map[string]string {
	e.t.Helper()
	out, err := snapshotText(e.my.Addr(), "root", e.my.RootPassword, e.db, table, e.prefix, pk)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// snapshotText reads every row of db.table with testenv.SelectText (the
// server's exact text-protocol bytes, in UTC): prefix+db:table:pk -> column ->
// value, NULL columns absent. BIT columns are read as col+0, the unsigned
// decimal SPEC section 2 prescribes.
func snapshotText(addr, user, password, db, table, prefix string, pk []string) (map[string]map[string]string, error) {
	_, cols, err := testenv.SelectText(addr, user, password, db,
		"SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '"+db+
			"' AND TABLE_NAME = '"+table+"' ORDER BY ORDINAL_POSITION")
	if err != nil {
		return nil, fmt.Errorf("reading the columns of %s.%s: %w", db, table, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s.%s has no columns (does it exist?)", db, table)
	}
	names := make([]string, len(cols))
	exprs := make([]string, len(cols))
	for i, c := range cols {
		names[i] = string(c[0])
		exprs[i] = "`" + names[i] + "`"
		if strings.EqualFold(string(c[1]), "bit") {
			exprs[i] += "+0"
		}
	}
	_, rows, err := testenv.SelectText(addr, user, password, db,
		"SELECT "+strings.Join(exprs, ", ")+" FROM `"+db+"`.`"+table+"`")
	if err != nil {
		return nil, fmt.Errorf("reading %s.%s: %w", db, table, err)
	}
	out := make(map[string]map[string]string, len(rows))
	for _, r := range rows {
		m := map[string]string{}
		for i, v := range r {
			if v != nil {
				m[names[i]] = string(v)
			}
		}
		kp := make([]string, len(pk))
		for i, k := range pk {
			kp[i] = m[k]
		}
		out[prefix+db+":"+table+":"+strings.Join(kp, ":")] = m
	}
	return out, nil
}

// snapshotRedis reads every row key of db.table: key -> field -> value,
// metadata fields (leading '_') left out; versions returned separately.
func (e *env) snapshotRedis(table string) (map[string]map[string]string, map[string]string) {
	e.t.Helper()
	ctx := context.Background()
	out := map[string]map[string]string{}
	versions := map[string]string{}
	iter := e.rdb.Scan(ctx, 0, e.prefix+e.db+":"+table+":*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		h, err := e.rdb.HGetAll(ctx, k).Result()
		if err != nil {
			e.t.Fatalf("HGETALL %s: %v", k, err)
		}
		if len(h) == 0 {
			continue // deleted since the SCAN saw it
		}
		m := map[string]string{}
		for f, v := range h {
			if strings.HasPrefix(f, "_") {
				if f == "_v" {
					versions[k] = v
				}
				continue
			}
			m[f] = v
		}
		out[k] = m
	}
	if err := iter.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out, versions
}

// diff describes the differences between want (MySQL) and got (Redis),
// comparing FLOAT/DOUBLE-looking values numerically.
func diff(want, got map[string]map[string]string, floatCols map[string]bool) []string {
	var out []string
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			out = append(out, "missing key "+k)
			continue
		}
		for f, wv := range w {
			gv, ok := g[f]
			if !ok {
				out = append(out, fmt.Sprintf("%s: field %s missing (want %.60q)", k, f, wv))
			} else if gv != wv && !(floatCols[f] && floatEq(wv, gv)) {
				out = append(out, fmt.Sprintf("%s: field %s = %.60q, want %.60q", k, f, gv, wv))
			}
		}
		for f, gv := range g {
			if _, ok := w[f]; !ok {
				out = append(out, fmt.Sprintf("%s: extra field %s = %.60q", k, f, gv))
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			out = append(out, "extra key "+k)
		}
	}
	sort.Strings(out)
	return out
}

func floatEq(a, b string) bool {
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	if x == y {
		return true
	}
	// The server prints FLOAT with 6 significant digits; Redis holds the
	// float32's shortest round-trip form (SPEC: compared numerically).
	return math.Abs(x-y) <= 1e-5*math.Max(math.Abs(x), math.Abs(y))
}

// waitSame waits until Redis equals MySQL for the table, failing with the
// differences after timeout.
func (e *env) waitSame(table string, timeout time.Duration, floatCols map[string]bool, pk ...string) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		want := e.snapshotMySQL(table, pk...)
		got, _ := e.snapshotRedis(table)
		d := diff(want, got, floatCols)
		if len(d) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if len(d) > 20 {
				d = append(d[:20], fmt.Sprintf("... and %d more", len(d)-20))
			}
			e.t.Fatalf("Redis differs from MySQL for %s.%s after %s (%d MySQL rows, %d Redis keys):\n%s",
				e.db, table, timeout, len(want), len(got), strings.Join(d, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMetric waits up to timeout for the sum of a metric's series to reach
// least and returns it (the last value read when it never does). A change
// reaches Redis a moment before the pipeline counts it, so a test that saw
// the row in Redis waits for the counter too.
func (p *proc) waitMetric(t *testing.T, name string, least float64, timeout time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, found := p.readMetric(t, name)
		if found && v >= least || time.Now().After(deadline) {
			if !found {
				t.Fatalf("metric %s not exposed", name)
			}
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric reads one metric's value from the process's /metrics.
func (p *proc) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, found := p.readMetric(t, name)
	if !found {
		t.Fatalf("metric %s not exposed", name)
	}
	return v
}

// readMetric sums a metric's series; found is false when it has none.
func (p *proc) readMetric(t *testing.T, name string) (sum float64, found bool) {
	t.Helper()
	addr := p.httpAddr(t)
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dialing /metrics: %v", err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
			found = true
		}
	}
	return sum, found
}

func (p *proc) httpAddr(t *testing.T) string {
	t.Helper()
	if p.http != "" {
		return p.http
	}
	for _, line := range strings.Split(p.Log(), "\n") {
		if strings.Contains(line, "msg=\"http listening\"") {
			if i := strings.Index(line, "addr="); i >= 0 {
				p.http = strings.Fields(line[i+5:])[0]
				return p.http
			}
		}
	}
	t.Fatalf("no http address in the log")
	return ""
}

// vmHWM reads a process's peak resident set (KiB) from /proc. Unlike the
// child's rusage, it does not count what the forking test process held.
func vmHWM(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// sessions opens n connections of their own to the test database (XA statements are per session), closed when
// the test ends.
func (e *env) sessions(ctx context.Context, n int) []*sql.Conn {
	e.t.Helper()
	conns := make([]*sql.Conn, n)
	for i := range conns {
		c, err := e.sqldb.Conn(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	return conns
}
