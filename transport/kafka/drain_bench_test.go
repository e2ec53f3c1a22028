package kafka

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
	"github.com/binlogsync/binlogsync/sink"
)

// BenchmarkConsumerDrain measures the sink side alone: 200,000 narrow inserts
// are published to an in-process kfake broker first, then one Consumer
// applies them to Redis through a real sink.Sink. It reports rows/s and the
// process's CPU per row (consumer, sink and the kfake broker serving the
// fetches); run with -cpuprofile to see decode against apply.
func BenchmarkConsumerDrain(b *testing.B) {
	const rows = 200_000
	rd := testenv.SharedRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	b.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	brokers := newCluster(b, "changes", "dlq")
	common := Common{Brokers: brokers, Topic: "changes", Log: quietLog()}
	db := fmt.Sprintf("drain%d", time.Now().UnixNano())
	table := &change.Table{DB: db, Name: "narrow", Columns: []string{"id", "name", "qty", "price", "updated"}, PK: []int{0}}
	prod, err := NewProducer(ProducerConfig{Common: common})
	if err != nil {
		b.Fatal(err)
	}
	in := make(chan *change.Batch, 4)
	go func() {
		for i := 0; i < rows; i += 10_000 {
			bt := &change.Batch{Boundary: &change.Position{File: "bin.000001", Pos: uint32(i + 10_000)}}
			for j := i; j < i+10_000; j++ {
				bt.Changes = append(bt.Changes, change.Change{Op: change.Insert, Table: table,
					After: change.Row{fmt.Appendf(nil, "%d", j), fmt.Appendf(nil, "name-%d", j), []byte("17"), []byte("12.50"),
						[]byte("2024-05-01 10:00:00")},
					Version: change.Version{File: 1, Pos: uint32(i + 4), Seq: uint32(j - i + 1)}, CommitTime: time.Unix(1700000000, 0)})
			}
			in <- bt
		}
		close(in)
	}()
	if err := prod.Run(ctx, change.Position{File: "bin.000001", Pos: 4}, in, func(change.Position) {}); err != nil {
		b.Fatal(err)
	}
	prod.Close(ctx)
	b.ResetTimer()
	for i := range b.N {
		if err := rdb.FlushDB(ctx).Err(); err != nil { // so that every run writes every row
			b.Fatal(err)
		}
		snk, err := sink.New(rdb, sink.Options{})
		if err != nil {
			b.Fatal(err)
		}
		st := &counting{Applier: snk}
		cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: fmt.Sprintf("g%d", i), DeadLetterTopic: "dlq"}, st)
		if err != nil {
			b.Fatal(err)
		}
		cctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		start, cpu0 := time.Now(), processCPU()
		go func() { done <- cons.Run(cctx) }()
		for st.n.Load() < rows {
			time.Sleep(5 * time.Millisecond)
		}
		elapsed, cpu := time.Since(start), processCPU()-cpu0
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rows/elapsed.Seconds(), "rows/s")
		b.ReportMetric(cpu.Seconds()*1e6/rows, "process-cpu-us/row")
	}
}

// processCPU is the CPU time (user and system) of this process so far:
// the consumer, the sink's Redis client and the kfake broker.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// counting is an Applier counting the changes applied.
type counting struct {
	Applier
	n atomic.Int64
}

func (c *counting) Apply(ctx context.Context, changes []change.Change) (sink.Stats, error) {
	st, err := c.Applier.Apply(ctx, changes)
	if err == nil {
		c.n.Add(int64(len(changes)))
	}
	return st, err
}
