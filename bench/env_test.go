package bench

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// benv is one benchmark's servers: the shared MariaDB (a database of its own)
// and the shared Redis (flushed before each run).
type benv struct {
	b     *testing.B
	my    *testenv.MariaDB
	rd    *testenv.Redis
	db    string
	sqldb *sql.DB
	rdb   *redis.Client
}

func newEnv(b *testing.B) *benv {
	b.Helper()
	e := &benv{b: b, my: testenv.SharedMariaDB(b), rd: testenv.SharedRedis(b)}
	e.db = e.my.NewDatabase(b)
	e.sqldb = e.my.Root(b, e.db)
	e.sqldb.SetMaxOpenConns(32)
	e.sqldb.SetMaxIdleConns(32)
	e.rdb = redis.NewClient(&redis.Options{Addr: e.rd.Addr(), DisableIdentity: true})
	b.Cleanup(func() { e.rdb.Close() })
	return e
}

func (e *benv) exec(stmts ...string) {
	e.b.Helper()
	for _, s := range stmts {
		if _, err := e.sqldb.Exec(s); err != nil {
			e.b.Fatalf("exec %.200q: %v", s, err)
		}
	}
}

// position is SHOW MASTER STATUS: where the next transaction starts.
func (e *benv) position() (string, uint32) {
	e.b.Helper()
	var file string
	var pos uint32
	var doDB, ignDB sql.NullString
	if err := e.sqldb.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &doDB, &ignDB); err != nil {
		e.b.Fatalf("SHOW MASTER STATUS: %v", err)
	}
	return file, pos
}

func (e *benv) flushRedis() {
	e.b.Helper()
	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		e.b.Fatal(err)
	}
	if err := e.rdb.ConfigResetStat(context.Background()).Err(); err != nil {
		e.b.Fatal(err)
	}
}

func (e *benv) dbsize() int64 {
	n, err := e.rdb.DBSize(context.Background()).Result()
	if err != nil {
		e.b.Fatalf("DBSIZE: %v", err)
	}
	return n
}

// environ is binlogsync's configuration for this environment (defaults
// otherwise, info-level text logs).
//
// BENCH_CHILD_ENV adds space-separated VAR=value settings to the binlogsync
// processes only (not to the benchmark process, which runs kfake), for
// example BENCH_CHILD_ENV="GOMAXPROCS=1 GOGC=200".
func (e *benv) environ(ckpt string) []string {
	return append([]string{
		"BINLOGSYNC_MYSQL_ADDR=" + e.my.Addr(),
		"BINLOGSYNC_MYSQL_USER=root",
		"BINLOGSYNC_MYSQL_PASSWORD=" + e.my.RootPassword,
		"BINLOGSYNC_REDIS_ADDR=" + e.rd.Addr(),
		"BINLOGSYNC_TABLES_INCLUDE=" + e.db + ".*",
		"BINLOGSYNC_CHECKPOINT_PATH=" + ckpt,
		"BINLOGSYNC_HTTP_ADDR=127.0.0.1:0",
		"BINLOGSYNC_LOG_LEVEL=info",
		"BINLOGSYNC_LOG_FORMAT=text",
	}, strings.Fields(os.Getenv("BENCH_CHILD_ENV"))...)
}

// cpuTimes are the CPU seconds (user+system) used so far by MariaDB, Redis and this process.
type cpuTimes struct{ maria, redis, self float64 }

func (e *benv) serverCPU() cpuTimes {
	e.b.Helper()
	var c cpuTimes
	if pid, err := os.ReadFile(filepath.Join(e.my.Dir, "mysqld.pid")); err == nil {
		c.maria = procCPU(strings.TrimSpace(string(pid)))
	}
	info, err := e.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		e.b.Fatal(err)
	}
	c.redis = testenv.RedisCPUSeconds(info)
	c.self = procCPU(strconv.Itoa(os.Getpid()))
	return c
}

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{c.maria - o.maria, c.redis - o.redis, c.self - o.self}
}

// procCPU reads utime+stime of a process from /proc, in seconds.
func procCPU(pid string) float64 {
	u, s := procCPUSplit(pid)
	return u + s
}

// procCPUSplit reads utime and stime of a process from /proc, in seconds.
func procCPUSplit(pid string) (user, sys float64) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+2:]))
	// fields after the command: state(0) ... utime(11) stime(12)
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return ut / 100, st / 100 // USER_HZ
}

// commandStats reads Redis's time inside EVALSHA (the apply script) and HSET
// calls: calls and total microseconds.
func (e *benv) commandStats() map[string][2]float64 {
	e.b.Helper()
	info, err := e.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		e.b.Fatal(err)
	}
	out := map[string][2]float64{}
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var calls, usec float64
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				calls, _ = strconv.ParseFloat(v, 64)
			case "usec":
				usec, _ = strconv.ParseFloat(v, 64)
			}
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = [2]float64{calls, usec}
	}
	return out
}

// load1 is the one-minute load average.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func mustf(b *testing.B, err error, format string, args ...any) {
	b.Helper()
	if err != nil {
		b.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

// waitKeys polls DBSIZE every 5ms until it reaches want; it returns the time
// it did, failing after timeout or when stop is closed first.
func (e *benv) waitKeys(want int64, timeout time.Duration, stop <-chan struct{}, why func() string) time.Time {
	e.b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := e.dbsize()
		if n >= want {
			return time.Now()
		}
		select {
		case <-stop:
			e.b.Fatalf("stopped before Redis held %d keys (has %d): %s", want, n, why())
		default:
		}
		if time.Now().After(deadline) {
			e.b.Fatalf("Redis holds %d keys after %s, want %d: %s", n, timeout, want, why())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
