package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/app"
	"github.com/binlogsync/binlogsync/reconcile"
	"github.com/binlogsync/binlogsync/sink"
)

// reconcileRows is the size of the reconciled table.
const reconcileRows = 1_000_000

// reconcileCountingConn counts the bytes read from Redis.
type reconcileCountingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *reconcileCountingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// reconcileEnv is a 1,000,000-row table loaded into Redis by a first pass.
type reconcileEnv struct {
	*benv
	r          *reconcile.Reconciler
	redisBytes *atomic.Int64
}

// newReconcileEnv creates the table and loads it (the benchmark's parent sets it up once for its sub-benchmarks).
func newReconcileEnv(b *testing.B) *reconcileEnv {
	{
		e := newEnv(b)
		e.flushRedis()
		e.exec(`CREATE TABLE recon (id BIGINT PRIMARY KEY, a INT, b INT UNSIGNED, name VARCHAR(40), email VARCHAR(60),
			created DATETIME(3), price DECIMAL(10,2), score DOUBLE, flags TINYINT, note VARCHAR(100))`)
		e.exec(`INSERT INTO recon SELECT seq, seq % 1000, seq * 7, CONCAT('name ', seq), CONCAT('user', seq, '@example.com'),
			'2020-01-01' + INTERVAL seq SECOND, seq / 100, seq / 3e0, seq % 100, IF(seq % 10 = 0, NULL, REPEAT('n', seq % 60))
			FROM seq_1_to_` + fmt.Sprint(reconcileRows))
		var n atomic.Int64
		rdb := redis.NewClient(&redis.Options{Addr: e.rd.Addr(), DisableIdentity: true,
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &reconcileCountingConn{Conn: c, n: &n}, nil
			}})
		snk, err := sink.New(rdb, sink.Options{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := reconcile.New(reconcile.Config{
			MySQL: reconcile.MySQLConfig{Addr: e.my.Addr(), User: "root", Password: e.my.RootPassword},
			DB:    e.sqldb, Flavor: "mariadb", Redis: rdb, Sink: snk,
			Selected:   func(db, t string) bool { return db == e.db && t == "recon" },
			RedisBytes: n.Load,
		})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		rep, err := r.Run(context.Background(), reconcile.PassOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("initial load of %d rows: %s", rep.Total().Missing.Repaired, time.Since(t0).Round(time.Millisecond))
		t0 = time.Now()
		if _, err := r.Run(context.Background(), reconcile.PassOptions{}); err != nil { // fills the cached row hashes
			b.Fatal(err)
		}
		b.Logf("first verifying pass (caches row hashes): %s", time.Since(t0).Round(time.Millisecond))
		return &reconcileEnv{benv: e, r: r, redisBytes: &n}
	}
}

// pass runs one pass and returns its report with the CPU seconds MariaDB and Redis spent meanwhile.
func (e *reconcileEnv) pass(b *testing.B, opts reconcile.PassOptions) (reconcile.TableReport, cpuTimes) {
	c0 := e.serverCPU()
	rep, err := e.r.Run(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	return rep.Total(), e.serverCPU().sub(c0)
}

func reportReconcilePass(b *testing.B, t reconcile.TableReport, cpu cpuTimes) {
	b.ReportMetric(float64(t.Rows)/t.Duration.Seconds(), "rows/s")
	b.ReportMetric(float64(t.MySQLBytes), "mysql-bytes/pass")
	b.ReportMetric(float64(t.RedisBytes), "redis-bytes/pass")
	b.ReportMetric(float64(t.RangesDiffered), "ranges-differed/pass")
	b.ReportMetric(cpu.maria, "mariadb-cpu-s/pass")
	b.ReportMetric(cpu.redis, "redis-cpu-s/pass")
	b.ReportMetric(cpu.self, "reconciler-cpu-s/pass")
}

// BenchmarkReconcile compares zero-drift passes over 1,000,000 rows (every row hashed from its fields in Redis and
// the key pattern SCANned, as `reconciler run` does; the same without the SCAN; and with the row hashes cached by
// earlier passes) with pt-table-checksum over the same table (which reads MySQL
// only), and a pass that finds and repairs 1% drift.
func BenchmarkReconcile(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(app.DefaultGCPercent)) // as cmd/reconciler sets it
	e := newReconcileEnv(b)
	for _, mode := range []struct {
		name           string
		cached, noScan bool
	}{{"zero-drift", false, false}, {"zero-drift-cached", true, false}, {"zero-drift-no-scan", false, true}} {
		b.Run(mode.name, func(b *testing.B) {
			var t reconcile.TableReport
			var cpu cpuTimes
			for b.Loop() {
				t, cpu = e.pass(b, reconcile.PassOptions{Cached: mode.cached, NoScanOrphans: mode.noScan})
				if t.Drift() != 0 || t.Rows != reconcileRows {
					b.Fatalf("zero-drift pass: %+v", t)
				}
			}
			reportReconcilePass(b, t, cpu)
		})
	}
	b.Run("pt-table-checksum", func(b *testing.B) {
		host, port, _ := strings.Cut(e.my.Addr(), ":")
		if _, err := exec.LookPath("pt-table-checksum"); err != nil {
			b.Fatalf("pt-table-checksum is not installed (scripts/install-deps.sh percona-toolkit): %v", err)
		}
		var cpu cpuTimes
		for b.Loop() {
			c0 := e.serverCPU()
			cmd := exec.Command("pt-table-checksum", "--no-check-replication-filters", "--no-check-binlog-format",
				"--recursion-method=none", "--replicate=percona.checksums", "--no-version-check",
				"--databases="+e.db, "--tables=recon", "h="+host+",P="+port+",u=root")
			// Exit code 1 is pt-table-checksum's for a warning; it did the checksums.
			if out, err := cmd.CombinedOutput(); err != nil && (cmd.ProcessState == nil || cmd.ProcessState.ExitCode() > 1) {
				b.Fatalf("pt-table-checksum: %v\n%s", err, out)
			}
			cpu = e.serverCPU().sub(c0)
		}
		b.ReportMetric(cpu.maria, "mariadb-cpu-s/pass")
	})
	b.Run("one-percent-drift", func(b *testing.B) {
		ctx := context.Background()
		r := rand.New(rand.NewPCG(1, 2))
		var t reconcile.TableReport
		var cpu cpuTimes
		for b.Loop() {
			b.StopTimer()
			pipe := e.rdb.Pipeline()
			ids := map[int]bool{}
			for len(ids) < reconcileRows/100 {
				ids[1+r.IntN(reconcileRows)] = true
			}
			i := 0
			for id := range ids {
				k := fmt.Sprintf("%s:recon:%d", e.db, id)
				if i%2 == 0 {
					pipe.Del(ctx, k)
				} else {
					pipe.HSet(ctx, k, "name", "drift")
				}
				i++
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			t, cpu = e.pass(b, reconcile.PassOptions{})
			if t.Drift() != reconcileRows/100 || t.Missing.Repaired+t.Stale.Repaired != reconcileRows/100 {
				b.Fatalf("1%% drift pass: %+v", t)
			}
		}
		reportReconcilePass(b, t, cpu)
	})
}
