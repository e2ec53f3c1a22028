package reconcile

import (
	"context"
	"strconv"
	"testing"

	"github.com/binlogsync/binlogsync/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// redisCPU is the CPU seconds (user + sys) Redis has used.
func redisCPU(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	return testenv.RedisCPUSeconds(info)
}

// reconFixture is a database with the 10-column table recon of n rows, like bench/reconcile_bench_test.go's.
func reconFixture(b *testing.B, n int) *fixture {
	f := newFixture(b)
	f.exec(`CREATE TABLE recon (id BIGINT PRIMARY KEY, a INT, b INT UNSIGNED, name VARCHAR(40), email VARCHAR(60),
		created DATETIME(3), price DECIMAL(10,2), score DOUBLE, flags TINYINT, note VARCHAR(100))`)
	f.exec(`INSERT INTO recon SELECT seq, seq % 1000, seq * 7, CONCAT('name ', seq), CONCAT('user', seq, '@example.com'),
		'2020-01-01' + INTERVAL seq SECOND, seq / 100, seq / 3e0, seq % 100, IF(seq % 10 = 0, NULL, REPEAT('n', seq % 60))
		FROM seq_1_to_` + strconv.Itoa(n))
	return f
}

// BenchmarkDigestRedisCPU measures the Redis CPU a zero-drift pass costs per row (full and cached), the figure
// that bounds a pass: Redis is single-threaded. 100,000 rows of 10 columns, like bench/reconcile_bench_test.go.
// Run: go test -run '^$' -bench DigestRedisCPU ./reconcile/
func BenchmarkDigestRedisCPU(b *testing.B) {
	f := reconFixture(b, 100_000)
	r := f.reconciler(1000)
	f.run(r, PassOptions{})
	f.run(r, PassOptions{}) // caches the row hashes
	benchPasses(b, f, r, PassOptions{}, func() float64 { return redisCPU(b, f.rdb) })
}

// benchPasses runs zero-drift passes of r, full and cached, as sub-benchmarks, and reports the Redis CPU seconds
// (cpu) they took per row.
func benchPasses(b *testing.B, f *fixture, r *Reconciler, opts PassOptions, cpu func() float64) {
	for _, mode := range []struct {
		name   string
		cached bool
	}{{"full", false}, {"cached", true}} {
		b.Run(mode.name, func(b *testing.B) {
			var used, rows float64
			for b.Loop() {
				c0 := cpu()
				opts.Cached = mode.cached
				rep := f.run(r, opts)
				used += cpu() - c0
				tot := rep.Total()
				rows += float64(tot.Rows)
				if tot.Drift() != 0 {
					b.Fatalf("drift in a zero-drift pass: %+v", tot)
				}
			}
			b.ReportMetric(used/rows*1e6, "redis-µs/row")
		})
	}
}

// BenchmarkDigestScript runs only the Redis digest script over 20,000 loaded rows, many times, and reports the
// Redis CPU per row: a steadier figure than a whole pass on a busy machine.
// Run: go test -run '^$' -bench DigestScript -benchtime 20x ./reconcile/
func BenchmarkDigestScript(b *testing.B) {
	f := reconFixture(b, 20_000)
	r := f.reconciler(1000)
	f.run(r, PassOptions{})
	ctx := context.Background()
	tb, err := loadTable(ctx, f.sqldb, f.db, "recon", TableOptions{})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 20000)
	for i := range keys {
		if keys[i], err = tb.key(r.cfg.Sink, [][]byte{[]byte(strconv.Itoa(i + 1))}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := r.redis.rangeDigest(ctx, tb, false, keys, nil); err != nil { // caches the row hashes
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name   string
		cached bool
	}{{"full", false}, {"cached", true}} {
		b.Run(mode.name, func(b *testing.B) {
			var cpu, rows float64
			for b.Loop() {
				c0 := redisCPU(b, f.rdb)
				d, err := r.redis.rangeDigest(ctx, tb, mode.cached, keys, nil)
				if err != nil {
					b.Fatal(err)
				}
				cpu += redisCPU(b, f.rdb) - c0
				rows += float64(len(keys))
				if d.count != int64(len(keys)) {
					b.Fatalf("count %d", d.count)
				}
			}
			b.ReportMetric(cpu/rows*1e6, "redis-µs/row")
		})
	}
}

// BenchmarkDigestCluster is BenchmarkDigestRedisCPU on a Redis Cluster of three masters: the Redis CPU per row
// summed over the masters. A range's keys spread over the cluster's 16384 slots; calls hold one master's keys.
// Run: go test -run '^$' -bench DigestCluster ./reconcile/
func BenchmarkDigestCluster(b *testing.B) {
	f := reconFixture(b, 20_000)
	cl := testenv.NewRedisCluster(b, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), DisableIdentity: true})
	b.Cleanup(func() { rdb.Close() })
	nodes := make([]*redis.Client, len(cl.Nodes))
	for i, n := range cl.Nodes {
		nodes[i] = redis.NewClient(&redis.Options{Addr: n.Addr(), DisableIdentity: true})
		b.Cleanup(func() { nodes[i].Close() })
	}
	cpu := func() (s float64) {
		for _, n := range nodes {
			s += redisCPU(b, n)
		}
		return s
	}
	f.cl = rdb
	r := f.reconciler(1000)
	f.run(r, PassOptions{})
	f.run(r, PassOptions{}) // caches the row hashes
	benchPasses(b, f, r, PassOptions{NoScanOrphans: true}, cpu)
}
