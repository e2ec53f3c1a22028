package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
)

// kafkaPartitions is the partition count of the benchmark topic.
const kafkaPartitions = 6

// kafkaSteadyDuration is the length of the Kafka-mode steady load.
const kafkaSteadyDuration = 15 * time.Second

// startKfake starts an in-process single-broker Kafka (kfake): it runs in the
// benchmark process and its CPU is counted there, not in binlogsync's.
//
// The broker keeps its log segments in files of a temporary directory, as
// Kafka does (written to the page cache, not synced). Without a directory
// kfake keeps them in an in-memory file system whose files grow by copying
// themselves whole: 7.8 µs of broker CPU per message in the narrow drain,
// against 3.2 with files. BENCH_KFAKE_MEM=1 selects the in-memory one.
func startKfake(b *testing.B) string {
	b.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if os.Getenv("BENCH_KFAKE_MEM") == "" {
		opts = append(opts, kfake.DataDir(b.TempDir()))
	}
	c, err := kfake.NewCluster(opts...)
	mustf(b, err, "starting kfake")
	b.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// startKafkaRole runs the binlogsync binary in Kafka mode with the role
// (source or sink) against broker and topic, with extra arguments.
func (e *benv) startKafkaRole(role, broker, topic string, args ...string) *proc {
	e.b.Helper()
	p := &proc{b: e.b, done: make(chan struct{})}
	ckpt := filepath.Join(e.b.TempDir(), "checkpoint")
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Env = append(os.Environ(), e.environ(ckpt)...)
	p.cmd.Env = append(p.cmd.Env,
		"BINLOGSYNC_ROLE="+role,
		"BINLOGSYNC_TRANSPORT_KIND=kafka",
		"BINLOGSYNC_KAFKA_BROKERS="+broker,
		"BINLOGSYNC_KAFKA_TOPIC="+topic,
		"BINLOGSYNC_KAFKA_DEAD_LETTER_TOPIC="+topic+"-dlq",
		"BINLOGSYNC_KAFKA_GROUP_ID="+topic+"-sinks",
		"BINLOGSYNC_KAFKA_CREATE_TOPIC=true",
		"BINLOGSYNC_KAFKA_PARTITIONS="+strconv.Itoa(kafkaPartitions),
	)
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	p.start = time.Now()
	mustf(e.b, p.cmd.Start(), "starting binlogsync (%s)", role)
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	e.b.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (e *benv) waitStreaming(ps ...*proc) {
	e.b.Helper()
	for _, p := range ps {
		for !p.streaming() {
			select {
			case <-p.done:
				e.b.Fatalf("binlogsync exited: %s", p.why())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

func (p *proc) saveLog(name string) {
	if err := os.WriteFile(filepath.Join(outDir, name+".binlogsync.log"), []byte(p.log.String()), 0o644); err != nil {
		p.b.Log(err)
	}
}

// BenchmarkKafkaDrainNarrow drains 1,000,000 narrow rows (10,000-row
// transactions) through Kafka: a source process publishing to an in-process
// kfake broker and one sink process applying to Redis, both started at once.
// End-to-end rows/s is from their start until Redis holds every row; the
// publish rate is from their start until the source's produced-messages
// counter reaches the row count (polled every 100ms).
func BenchmarkKafkaDrainNarrow(b *testing.B) {
	e := newEnv(b)
	const n = 1_000_000
	file, pos := e.loadChunks("narrow", narrowDDL, narrowSelect, n, 10_000)
	b.ResetTimer()
	for i := range b.N {
		e.flushRedis()
		broker := startKfake(b)
		topic := "bench-drain-" + strconv.Itoa(i)
		load := load1()
		cpu0, self0 := e.serverCPU(), selfCPU()
		start := time.Now()
		src := e.startKafkaRole("source", broker, topic, "--start-file", file, "--start-pos", strconv.FormatUint(uint64(pos), 10))
		sink := e.startKafkaRole("sink", broker, topic)
		var published, end time.Time
		var lastPoll time.Time
		deadline := time.Now().Add(10 * time.Minute)
		for end.IsZero() {
			if published.IsZero() && time.Since(lastPoll) >= 100*time.Millisecond {
				lastPoll = time.Now()
				if src.metrics()["binlogsync_kafka_produced_messages_total"] >= n {
					published = lastPoll
				}
			}
			if e.dbsize() >= n {
				end = time.Now()
			}
			for _, p := range []*proc{src, sink} {
				select {
				case <-p.done:
					b.Fatalf("binlogsync exited before Redis held %d keys: %s", n, p.why())
				default:
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("Redis holds %d keys, want %d: %s\n%s", e.dbsize(), n, src.why(), sink.why())
			}
			time.Sleep(5 * time.Millisecond)
		}
		for published.IsZero() { // normally long done
			if src.metrics()["binlogsync_kafka_produced_messages_total"] >= n {
				published = time.Now()
			}
			time.Sleep(10 * time.Millisecond)
		}
		srv, self := e.serverCPU().sub(cpu0), selfCPU()-self0
		redisUs := e.writeUsec()
		var batchRows float64
		if m := sink.metrics(); m["binlogsync_batch_rows_count"] > 0 {
			batchRows = m["binlogsync_batch_rows_sum"] / m["binlogsync_batch_rows_count"]
		}
		sinkRSS, sinkCPU := sink.stop()
		srcRSS, srcCPU := src.stop()
		src.saveLog("kafka-drain-source")
		sink.saveLog("kafka-drain-sink")
		e.checkSample([]string{e.db + ":narrow:1", e.db + ":narrow:" + strconv.Itoa(n)}, 6)

		total, pub := end.Sub(start), published.Sub(start)
		b.StopTimer()
		b.Logf("Kafka drain: %d rows end to end in %.2fs = %.0f rows/s; source published all in %.2fs = %.0f msg/s; "+
			"sink finished %.2fs after the source (%.0f rows per applied batch)",
			n, total.Seconds(), float64(n)/total.Seconds(), pub.Seconds(), float64(n)/pub.Seconds(),
			end.Sub(published).Seconds(), batchRows)
		b.Logf("CPU s: source %.2f, sink %.2f, benchmark process (kfake + polling) %.2f, MariaDB %.2f, Redis %.2f "+
			"(in write commands %.2f); peak RSS: source %.1f MiB, sink %.1f MiB; load1 %.2f",
			srcCPU, sinkCPU, self, srv.maria, srv.redis, redisUs/1e6, float64(srcRSS)/1024, float64(sinkRSS)/1024, load)
		b.ReportMetric(float64(n)/total.Seconds(), "rows/s")
		b.ReportMetric(float64(n)/pub.Seconds(), "publish-msg/s")
		b.ReportMetric(float64(srcRSS)/1024, "source-peak-RSS-MiB")
		b.ReportMetric(float64(sinkRSS)/1024, "sink-peak-RSS-MiB")
		b.ReportMetric(srcCPU/n*1e6, "source-cpu-us/row")
		b.ReportMetric(sinkCPU/n*1e6, "sink-cpu-us/row")
		b.ReportMetric(self/n*1e6, "kfake-cpu-us/row")
		b.ReportMetric(batchRows, "rows/batch")
		b.ReportMetric(max(load, load1()), "load1")
		b.StartTimer()
	}
}

// BenchmarkKafkaSteady runs the steady load of BenchmarkSteady5000 (5,000
// single-row transactions per second from 8 connections, 70% inserts) for
// 15s through Kafka: source process, in-process kfake broker, one sink
// process. Latency is from just before the statement is sent to the keyspace
// notification of the row's key.
func BenchmarkKafkaSteady(b *testing.B) {
	e := newEnv(b)
	e.exec(`CREATE TABLE steady (id BIGINT PRIMARY KEY, name VARCHAR(40), qty INT, price DECIMAL(10,2), ts BIGINT)`)
	ctx := context.Background()
	for i := range b.N {
		e.flushRedis()
		mustf(b, e.rdb.ConfigSet(ctx, "notify-keyspace-events", rowWriteEvents).Err(), "enabling keyspace notifications")
		b.Cleanup(func() { e.rdb.ConfigSet(ctx, "notify-keyspace-events", "") })
		e.exec("DELETE FROM steady")
		file, pos := e.position()

		sub := redis.NewClient(&redis.Options{Addr: e.rd.Addr(), DisableIdentity: true})
		ps := sub.PSubscribe(ctx, "__keyspace@0__:"+e.db+":steady:*")
		_, err := ps.Receive(ctx)
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

		broker := startKfake(b)
		topic := "bench-steady-" + strconv.Itoa(i)
		src := e.startKafkaRole("source", broker, topic, "--start-file", file, "--start-pos", strconv.FormatUint(uint64(pos), 10))
		e.waitStreaming(src) // the source creates the topic first
		sink := e.startKafkaRole("sink", broker, topic)
		e.waitStreaming(sink)
		time.Sleep(time.Second) // the group's first assignment
		srcPid, sinkPid := strconv.Itoa(src.cmd.Process.Pid), strconv.Itoa(sink.cmd.Process.Pid)
		cpu0, self0 := e.serverCPU(), selfCPU()
		src0, sink0 := procCPU(srcPid), procCPU(sinkPid)
		load := load1()
		writes, elapsed := e.generate(steadyRate, kafkaSteadyDuration, steadyWorkers)

		deadline := time.Now().Add(10 * time.Second)
		for count.Load() < int64(len(writes)) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		srv, self := e.serverCPU().sub(cpu0), selfCPU()-self0
		srcCPU, sinkCPU := procCPU(srcPid)-src0, procCPU(sinkPid)-sink0
		var batchRows float64
		if m := sink.metrics(); m["binlogsync_batch_rows_count"] > 0 {
			batchRows = m["binlogsync_batch_rows_sum"] / m["binlogsync_batch_rows_count"]
		}
		sinkRSS, _ := sink.stop()
		srcRSS, _ := src.stop()
		src.saveLog("kafka-steady-source")
		sink.saveLog("kafka-steady-sink")
		ps.Close()
		<-obsDone
		sub.Close()

		lat, exec, missing := match(writes, arrivals)
		if len(lat) == 0 {
			b.Fatalf("no write reached Redis: %s\n%s", src.why(), sink.why())
		}
		txps := float64(len(writes)) / elapsed.Seconds()
		b.Logf("Kafka steady load: %d transactions in %.1fs = %.0f tx/s; %d notifications, %d writes unmatched",
			len(writes), elapsed.Seconds(), txps, len(arrivals), missing)
		b.Logf("commit-to-Redis latency (from before the statement): p50 %s p90 %s p99 %s p99.9 %s max %s",
			pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 99.9), pct(lat, 100))
		b.Logf("statement round trip (t1-t0): p50 %s p99 %s", pct(exec, 50), pct(exec, 99))
		b.Logf("CPU s over the load: source %.2f, sink %.2f, MariaDB %.2f, Redis %.2f, benchmark process "+
			"(kfake + generator + observer) %.2f; peak RSS: source %.1f MiB, sink %.1f MiB; %.1f rows per applied batch; load1 %.2f",
			srcCPU, sinkCPU, srv.maria, srv.redis, self, float64(srcRSS)/1024, float64(sinkRSS)/1024, batchRows, load)
		if missing > len(writes)/1000 {
			b.Fatalf("%d of %d writes never reached Redis", missing, len(writes))
		}
		b.ReportMetric(txps, "tx/s")
		b.ReportMetric(ms(pct(lat, 50)), "p50-ms")
		b.ReportMetric(ms(pct(lat, 99)), "p99-ms")
		b.ReportMetric(ms(pct(lat, 100)), "max-ms")
		b.ReportMetric(ms(pct(exec, 50)), "stmt-p50-ms")
		b.ReportMetric(float64(srcRSS)/1024, "source-peak-RSS-MiB")
		b.ReportMetric(float64(sinkRSS)/1024, "sink-peak-RSS-MiB")
		b.ReportMetric(srcCPU/float64(len(writes))*1e6, "source-cpu-us/tx")
		b.ReportMetric(sinkCPU/float64(len(writes))*1e6, "sink-cpu-us/tx")
		b.ReportMetric(batchRows, "rows/batch")
		b.ReportMetric(max(load, load1()), "load1")
	}
}
