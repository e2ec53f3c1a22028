package kafka

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/sink"
)

// stamper is an Applier recording, per change, the time from its commit
// time (set to the moment it was handed to the producer) to the Apply call.
type stamper struct {
	mu    sync.Mutex
	lat   []time.Duration
	calls int
}

func (s *stamper) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lat)
}

func (s *stamper) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lat, s.calls = s.lat[:0], 0
}

func (s *stamper) Apply(_ context.Context, changes []change.Change) (sink.Stats, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range changes {
		s.lat = append(s.lat, now.Sub(changes[i].CommitTime))
	}
	s.calls++
	return sink.Stats{}, nil
}

// BenchmarkHandoffLatency measures the transport alone (producer → kfake →
// consumer → Applier, in process, no MySQL or Redis) under a steady
// 5,000 single-row transactions per second, and reports the p50/p99 of the
// time from handing a change to the producer to its Apply call.
func BenchmarkHandoffLatency(b *testing.B) {
	const rate, seconds = 5000, 3
	for b.Loop() {
		brokers := newCluster(b, "changes", "dlq")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		common := Common{Brokers: brokers, Topic: "changes", Log: quietLog()}
		prod, err := NewProducer(ProducerConfig{Common: common})
		if err != nil {
			b.Fatal(err)
		}
		st := &stamper{}
		cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: "g", DeadLetterTopic: "dlq"}, st)
		if err != nil {
			b.Fatal(err)
		}
		cctx, stop := context.WithCancel(ctx)
		consDone := make(chan error, 1)
		go func() { consDone <- cons.Run(cctx) }()
		table := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "name", "qty"}, PK: []int{0}}
		in := make(chan *change.Batch, 64)
		prodDone := make(chan error, 1)
		// The time from handing a transaction to the producer to its checkpoint
		// advancing (acknowledged by Kafka).
		sent := make([]time.Time, rate*seconds)
		var ackMu sync.Mutex
		var acks []time.Duration
		advance := func(p change.Position) {
			if i := int(p.Pos) - 100; i >= 0 && i < len(sent) {
				ackMu.Lock()
				acks = append(acks, time.Since(sent[i]))
				ackMu.Unlock()
			}
		}
		go func() { prodDone <- prod.Run(ctx, change.Position{File: "bin.000001", Pos: 4}, in, advance) }()
		// Let the group form before the load starts.
		warm := &change.Batch{Changes: []change.Change{{Op: change.Insert, Table: table,
			After: change.Row{[]byte("-1"), []byte("w"), []byte("0")}, Version: change.Version{File: 1, Pos: 4, Seq: 1}, CommitTime: time.Now()}}}
		in <- warm
		for st.count() == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		st.reset()
		n := rate * seconds
		start := time.Now()
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / rate)))
			id := []byte(strconv.Itoa(i))
			ackMu.Lock()
			sent[i] = time.Now()
			ackMu.Unlock()
			in <- &change.Batch{Changes: []change.Change{{Op: change.Insert, Table: table,
				After:   change.Row{id, []byte("name"), []byte("1")},
				Version: change.Version{File: 1, Pos: uint32(100 + i), Seq: 1}, CommitTime: time.Now()}},
				Boundary: &change.Position{File: "bin.000001", Pos: uint32(100 + i)}}
		}
		close(in)
		if err := <-prodDone; err != nil {
			b.Fatal(err)
		}
		for st.count() < n && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		<-consDone
		prod.Close(ctx)
		cancel()
		st.mu.Lock()
		slices.Sort(st.lat)
		p := func(q float64) float64 { return float64(st.lat[int(q*float64(len(st.lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(p(0.5), "p50-ms")
		b.ReportMetric(p(0.99), "p99-ms")
		b.ReportMetric(float64(len(st.lat))/float64(st.calls), "rows/apply")
		st.mu.Unlock()
		// Acknowledgements skip boundaries (only the newest advances), so
		// these are the delays of the transactions that completed a set.
		slices.Sort(acks)
		b.ReportMetric(float64(acks[len(acks)/2].Microseconds())/1000, "ack-p50-ms")
		b.ReportMetric(float64(acks[len(acks)*99/100].Microseconds())/1000, "ack-p99-ms")
	}
}
