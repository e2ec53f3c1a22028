package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

const (
	steadyRate     = 5000             // transactions per second asked of the generator
	steadyDuration = 20 * time.Second // length of the load
	steadyWorkers  = 8                // generator connections
)

// write is one transaction of the generator: the row it wrote and when.
type write struct {
	id     int64
	t0, t1 time.Time // before the statement was sent, after its OK arrived
}

// arrival is one keyspace notification: a row's key changed in Redis.
type arrival struct {
	id int64
	at time.Time
}

// rowWriteEvents enables the keyspace notifications of row writes: the sink writes a hash row with HSET or, when
// it fits a listpack, with RESTORE (a generic event; docs/architecture.md).
const rowWriteEvents = "Kgh"

// rowWrite reports whether a keyspace notification's event is a row write (not the DEL before an HSET, a PEXPIRE
// or the expiry of a tombstone).
func rowWrite(event string) bool { return event == "hset" || event == "restore" }

// BenchmarkSteady5000 runs a steady load of 5,000 single-row transactions per
// second (70% inserts, 30% updates, autocommit) from 8 connections for 20s
// while binlogsync runs, and measures commit-to-Redis latency: from just
// before the statement is sent to the moment a keyspace notification for the
// row's key reaches the observer. Each connection writes ids of its own, so the
// n-th notification of a key is the n-th write of that key.
func BenchmarkSteady5000(b *testing.B) {
	e := newEnv(b)
	e.exec(`CREATE TABLE steady (id BIGINT PRIMARY KEY, name VARCHAR(40), qty INT, price DECIMAL(10,2), ts BIGINT)`)
	ctx := context.Background()
	for range b.N {
		e.flushRedis()
		mustf(b, e.rdb.ConfigSet(ctx, "notify-keyspace-events", rowWriteEvents).Err(), "enabling keyspace notifications")
		b.Cleanup(func() { e.rdb.ConfigSet(ctx, "notify-keyspace-events", "") })
		e.exec("DELETE FROM steady")
		file, pos := e.position()

		sub := redis.NewClient(&redis.Options{Addr: e.rd.Addr(), DisableIdentity: true})
		ps := sub.PSubscribe(ctx, "__keyspace@0__:"+e.db+":steady:*")
		_, err := ps.Receive(ctx) // the subscription confirmation
		mustf(b, err, "subscribing to keyspace notifications")
		var arrivals []arrival
		var count atomic.Int64
		obsDone := make(chan struct{})
		go func() {
			defer close(obsDone)
			prefix := len("__keyspace@0__:" + e.db + ":steady:")
			for {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					return // closed
				}
				at := time.Now()
				if !rowWrite(msg.Payload) {
					continue
				}
				id, _ := strconv.ParseInt(msg.Channel[prefix:], 10, 64)
				arrivals = append(arrivals, arrival{id, at})
				count.Add(1)
			}
		}()

		p := e.startBinary(file, pos)
		for !p.streaming() {
			select {
			case <-p.done:
				b.Fatalf("binlogsync exited: %s", p.why())
			case <-time.After(10 * time.Millisecond):
			}
		}
		pid := strconv.Itoa(p.cmd.Process.Pid)
		cpu0, self0 := e.serverCPU(), selfCPU()
		user0, sys0 := procCPUSplit(pid)
		load := load1()
		stopPerf := e.perfRecord(pid, "steady")
		rate := steadyRate
		if v, err := strconv.Atoi(os.Getenv("BENCH_STEADY_RATE")); err == nil && v > 0 {
			rate = v // diagnostics: the latency floor at a lighter load
		}
		writes, elapsed := e.generate(rate, steadyDuration, steadyWorkers)
		stopPerf()

		// Wait for every write to arrive (or 10s).
		deadline := time.Now().Add(10 * time.Second)
		for count.Load() < int64(len(writes)) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		srv, self := e.serverCPU().sub(cpu0), selfCPU()-self0
		user1, sys1 := procCPUSplit(pid)
		cpu := user1 - user0 + sys1 - sys0
		var batchRows float64
		if m := p.metrics(); m["binlogsync_batch_rows_count"] > 0 {
			batchRows = m["binlogsync_batch_rows_sum"] / m["binlogsync_batch_rows_count"]
		}
		rss, _ := p.stop()
		ps.Close()
		<-obsDone
		sub.Close()

		lat, exec, missing := match(writes, arrivals)
		if len(lat) == 0 {
			b.Fatalf("no write reached Redis: %s", p.why())
		}
		txps := float64(len(writes)) / elapsed.Seconds()
		b.Logf("steady load: %d transactions in %.1fs = %.0f tx/s; %d notifications, %d writes unmatched",
			len(writes), elapsed.Seconds(), txps, len(arrivals), missing)
		b.Logf("commit-to-Redis latency (from before the statement): p50 %s p90 %s p99 %s p99.9 %s max %s",
			pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 99.9), pct(lat, 100))
		b.Logf("statement round trip (t1-t0): p50 %s p99 %s", pct(exec, 50), pct(exec, 99))
		b.Logf("CPU s over the load: binlogsync %.2f (user %.2f, system %.2f), MariaDB %.2f, Redis %.2f, generator+observer %.2f; "+
			"peak RSS %.1f MiB; %.1f rows per applied batch; load1 %.2f",
			cpu, user1-user0, sys1-sys0, srv.maria, srv.redis, self, float64(rss)/1024, batchRows, load)
		if missing > len(writes)/1000 {
			b.Fatalf("%d of %d writes never reached Redis", missing, len(writes))
		}
		b.ReportMetric(txps, "tx/s")
		b.ReportMetric(ms(pct(lat, 50)), "p50-ms")
		b.ReportMetric(ms(pct(lat, 99)), "p99-ms")
		b.ReportMetric(ms(pct(lat, 100)), "max-ms")
		b.ReportMetric(ms(pct(exec, 50)), "stmt-p50-ms")
		b.ReportMetric(float64(rss)/1024, "peak-RSS-MiB")
		b.ReportMetric(cpu/float64(len(writes))*1e6, "cpu-us/tx")
		b.ReportMetric(batchRows, "rows/batch")
		b.ReportMetric(max(load, load1()), "load1")
	}
}

// generate runs rate transactions per second for d over workers connections
// and returns what it wrote and how long it took.
func (e *benv) generate(rate int, d time.Duration, workers int) ([]write, time.Duration) {
	e.b.Helper()
	ctx := context.Background()
	interval := time.Duration(int64(time.Second) * int64(workers) / int64(rate))
	per := make([][]write, workers)
	errs := make(chan error, workers)
	start := time.Now().Add(50 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range workers {
		conn, err := e.sqldb.Conn(ctx)
		mustf(e.b, err, "generator connection")
		wg.Go(func() {
			defer conn.Close()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var ids []int64 // ids this worker inserted
			next := start.Add(time.Duration(w) * interval / time.Duration(workers))
			for k := 0; ; k++ {
				if time.Now().Sub(start) >= d {
					return
				}
				if wait := time.Until(next); wait > 0 {
					time.Sleep(wait)
				}
				next = next.Add(interval)
				var id int64
				var q string
				t0 := time.Now()
				if len(ids) > 10 && rng.IntN(10) < 3 {
					id = ids[rng.IntN(len(ids))]
					q = fmt.Sprintf("UPDATE steady SET qty = qty + 1, ts = %d WHERE id = %d", t0.UnixMicro(), id)
				} else {
					id = int64(k*workers + w + 1)
					ids = append(ids, id)
					q = fmt.Sprintf("INSERT INTO steady VALUES (%d, 'user-%d', %d, %d.%02d, %d)",
						id, id, k%1000, k%10000, k%100, t0.UnixMicro())
				}
				if _, err := conn.ExecContext(ctx, q); err != nil {
					errs <- fmt.Errorf("generator: %s: %w", q, err)
					return
				}
				per[w] = append(per[w], write{id: id, t0: t0, t1: time.Now()})
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		e.b.Fatal(err)
	default:
	}
	var all []write
	for _, p := range per {
		all = append(all, p...)
	}
	return all, elapsed
}

// match pairs the n-th write of each id with the n-th notification of its key
// and returns the latencies, the statement round trips and the number of
// writes with no notification.
func match(writes []write, arrivals []arrival) (lat, exec []time.Duration, missing int) {
	byID := map[int64][]time.Time{}
	for _, a := range arrivals {
		byID[a.id] = append(byID[a.id], a.at)
	}
	seen := map[int64]int{}
	for _, w := range writes { // per id, writes are in order: one worker owns an id
		n := seen[w.id]
		seen[w.id] = n + 1
		exec = append(exec, w.t1.Sub(w.t0))
		if n >= len(byID[w.id]) {
			missing++
			continue
		}
		lat = append(lat, byID[w.id][n].Sub(w.t0))
	}
	slices.Sort(lat)
	slices.Sort(exec)
	return lat, exec, missing
}

// pct is the p-th percentile of sorted d.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p / 100)
	return d[i].Round(10 * time.Microsecond)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// perfRecord samples the process pid with Linux perf (call graphs) into
// outDir/<name>.perf.data until the returned function is called: a profile of
// the real binary under load, next to the in-process pprof profiles of the
// drains. Without perf (or permission) it does nothing.
func (e *benv) perfRecord(pid, name string) func() {
	path, err := exec.LookPath("perf")
	if err != nil {
		e.b.Log("perf not found: no profile of the steady load")
		return func() {}
	}
	out := filepath.Join(outDir, name+".perf.data")
	cmd := exec.Command(path, "record", "-F", "499", "-g", "-o", out, "-p", pid)
	var log testenv.LogBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		e.b.Logf("perf record: %v", err)
		return func() {}
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait() // perf exits by the signal it was asked to stop with
		if _, err := os.Stat(out); err != nil {
			e.b.Logf("perf record wrote no profile: %v\n%s", err, log.String())
			return
		}
		e.b.Logf("perf profile of binlogsync under the steady load: %s", out)
	}
}
