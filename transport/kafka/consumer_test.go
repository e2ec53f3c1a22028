package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/sink"
)

// recorder is an Applier that records what it applies, per partition, and
// checks on every call that the group's committed offsets cover only
// messages of calls that already returned.
type recorder struct {
	client       *kafkago.Client
	group, topic string
	partitions   []int
	failAt       int           // the call (1-based) that fails; 0: none
	delay        time.Duration // per call, so that commits and applies interleave

	mu         sync.Mutex
	calls      int
	applied    map[int][]int // partition -> ids, in the order applied
	violations []string
}

func (r *recorder) partition(c *change.Change) int {
	return kafkago.Murmur2Balancer{}.Balance(kafkago.Message{Key: Key(nil, c)}, r.partitions...)
}

func (r *recorder) Apply(ctx context.Context, changes []change.Change) (sink.Stats, error) {
	r.mu.Lock()
	r.calls++
	call := r.calls
	r.mu.Unlock()
	off, err := r.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: r.group, Topics: map[string][]int{r.topic: r.partitions}})
	if err != nil {
		return sink.Stats{}, fmt.Errorf("fetching offsets: %w", err)
	}
	r.mu.Lock()
	for _, p := range off.Topics[r.topic] {
		if p.CommittedOffset > int64(len(r.applied[p.Partition])) {
			r.violations = append(r.violations, fmt.Sprintf("call %d: partition %d committed at %d, only %d messages applied",
				call, p.Partition, p.CommittedOffset, len(r.applied[p.Partition])))
		}
	}
	r.mu.Unlock()
	time.Sleep(r.delay)
	if call == r.failAt {
		return sink.Stats{}, errors.New("redis refused")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range changes {
		c := &changes[i]
		id, err := strconv.Atoi(string(c.After[0]))
		if err != nil {
			return sink.Stats{}, err
		}
		p := r.partition(c)
		if ids := r.applied[p]; len(ids) > 0 && ids[len(ids)-1] >= id {
			r.violations = append(r.violations, fmt.Sprintf("partition %d: id %d applied after %d", p, id, ids[len(ids)-1]))
		}
		r.applied[p] = append(r.applied[p], id)
	}
	return sink.Stats{}, nil
}

// startingRecorder is a recorder that is also a Starter: each batch is applied in a goroutine of its own once the
// batch before it has finished, the order a sink.Sink keeps.
type startingRecorder struct {
	*recorder
	last *sink.Pending
}

func (r *startingRecorder) Start(ctx context.Context, changes []change.Change) *sink.Pending {
	prev := r.last
	r.last = sink.Started(func() (sink.Stats, error) {
		if prev != nil {
			prev.Wait()
		}
		return r.Apply(ctx, changes)
	})
	return r.last
}

// appliers runs f with rec as a plain Applier and as a Starter (two batches in flight).
func appliers(t *testing.T, f func(t *testing.T, a func(*recorder) Applier, overlap bool)) {
	t.Run("apply", func(t *testing.T) { f(t, func(r *recorder) Applier { return r }, false) })
	t.Run("start", func(t *testing.T) { f(t, func(r *recorder) Applier { return &startingRecorder{recorder: r} }, true) })
}

// publish produces rows inserts to topic (one transaction each 10 rows).
func publish(t *testing.T, ctx context.Context, common Common, table *change.Table, rows int) {
	t.Helper()
	publishBatches(t, ctx, ProducerConfig{Common: common}, batches(table, rows, 10))
}

// publishBatches runs a producer of cfg over bs until Kafka acknowledged them all.
func publishBatches(t *testing.T, ctx context.Context, cfg ProducerConfig, bs []*change.Batch) {
	t.Helper()
	prod, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runProducer(t, ctx, prod, bs, 0, func(change.Position) {})
}

// runProducer feeds bs to prod (pausing between batches), runs it until Kafka acknowledged them all, calling
// advance as its checkpoint moves, and closes it.
func runProducer(t *testing.T, ctx context.Context, prod *Producer, bs []*change.Batch, pause time.Duration,
	advance func(change.Position)) {
	t.Helper()
	in := make(chan *change.Batch, 4)
	go func() {
		for _, b := range bs {
			in <- b
			time.Sleep(pause)
		}
		close(in)
	}()
	if err := prod.Run(ctx, change.Position{File: "bin.000001", Pos: 4}, in, advance); err != nil {
		t.Fatal(err)
	}
	if err := prod.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func committed(t *testing.T, ctx context.Context, client *kafkago.Client, group, topic string, parts []int) map[int]int64 {
	t.Helper()
	off, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range off.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// TestConsumerCommitsAfterApplyInOrder runs the pipelined consumer with small
// batches and a slow applier: every commit covers only applied messages,
// each partition's messages are applied once and in order, and after a stop
// every offset is committed.
func TestConsumerCommitsAfterApplyInOrder(t *testing.T) {
	appliers(t, testConsumerCommitsAfterApplyInOrder)
}

func testConsumerCommitsAfterApplyInOrder(t *testing.T, as func(*recorder) Applier, _ bool) {
	brokers := newCluster(t, "changes", "dlq")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	common := Common{Brokers: brokers, Topic: "changes", Log: quietLog()}
	table := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	const rows = 2000
	publish(t, ctx, common, table, rows)

	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	rec := &recorder{client: client, group: "g", topic: "changes", partitions: []int{0, 1, 2, 3},
		delay: 2 * time.Millisecond, applied: map[int][]int{}}
	cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: "g", DeadLetterTopic: "dlq", MaxBatch: 37,
		SessionTimeout: 6 * time.Second}, as(rec))
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(cctx) }()
	for {
		rec.mu.Lock()
		n := 0
		for _, ids := range rec.applied {
			n += len(ids)
		}
		rec.mu.Unlock()
		if n >= rows {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d rows applied", n, rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, v := range rec.violations {
		t.Error(v)
	}
	if rec.calls < rows/37 {
		t.Errorf("%d applies for %d rows in batches of at most 37", rec.calls, rows)
	}
	got := committed(t, ctx, client, "g", "changes", rec.partitions)
	total := 0
	for _, p := range rec.partitions {
		total += len(rec.applied[p])
		if got[p] != int64(len(rec.applied[p])) {
			t.Errorf("partition %d: committed %d, applied %d", p, got[p], len(rec.applied[p]))
		}
	}
	if total != rows {
		t.Errorf("%d rows applied, want %d (each once)", total, rows)
	}
}

// TestConsumerStopsOnApplyError checks that a failed apply stops the
// consumer with the error, applies nothing after it, and leaves the failed
// batch's offsets uncommitted.
func TestConsumerStopsOnApplyError(t *testing.T) {
	appliers(t, testConsumerStopsOnApplyError)
}

func testConsumerStopsOnApplyError(t *testing.T, as func(*recorder) Applier, overlap bool) {
	brokers := newCluster(t, "changes", "dlq")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	common := Common{Brokers: brokers, Topic: "changes", Log: quietLog()}
	table := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	const rows = 500
	publish(t, ctx, common, table, rows)

	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	rec := &recorder{client: client, group: "g", topic: "changes", partitions: []int{0, 1, 2, 3},
		failAt: 3, applied: map[int][]int{}}
	cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: "g", DeadLetterTopic: "dlq", MaxBatch: 20,
		SessionTimeout: 6 * time.Second}, as(rec))
	if err != nil {
		t.Fatal(err)
	}
	err = cons.Run(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Run = %v, want the apply error", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// With two batches in flight, the one after the failed one may have begun; its offsets are not committed.
	if wantMax := map[bool]int{false: 3, true: 4}[overlap]; rec.calls < 3 || rec.calls > wantMax {
		t.Errorf("%d applies, want 3 to %d (none begun after the failure was known)", rec.calls, wantMax)
	}
	for _, v := range rec.violations {
		t.Error(v)
	}
	got := committed(t, ctx, client, "g", "changes", rec.partitions)
	total := int64(0)
	for _, p := range rec.partitions {
		// -1: nothing committed.
		if got[p] > int64(len(rec.applied[p])) {
			t.Errorf("partition %d: committed %d, only %d applied", p, got[p], len(rec.applied[p]))
		}
		total += max(got[p], 0)
	}
	if total == 0 || total > 40 {
		t.Errorf("committed %d messages in all, want those of the two applied batches (1..40)", total)
	}
}

// TestCommitterCoalesces checks that offsets added while a commit is in
// flight are committed together, newest per partition, never moving back.
func TestCommitterCoalesces(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var commits [][]kafkago.Message
	cm := newCommitter(func(ctx context.Context, msgs ...kafkago.Message) error {
		mu.Lock()
		commits = append(commits, msgs)
		first := len(commits) == 1
		mu.Unlock()
		if first {
			<-release // the first commit is slow
		}
		return nil
	}, 0, quietLog(), nil)
	go cm.run(context.Background())
	msg := func(p int, off int64) kafkago.Message { return kafkago.Message{Topic: "t", Partition: p, Offset: off} }
	cm.add([]kafkago.Message{msg(0, 1), msg(1, 5)})
	for { // wait until the first commit is in flight
		mu.Lock()
		n := len(commits)
		mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cm.add([]kafkago.Message{msg(0, 2), msg(0, 3)})
	cm.add([]kafkago.Message{msg(0, 4), msg(1, 6)})
	cm.add([]kafkago.Message{msg(1, 2)}) // older than 6: must not move partition 1 back
	cm.add([]kafkago.Message{msg(0, 1)}) // already committed: not again
	close(release)
	if err := cm.close(); err != nil {
		t.Fatal(err)
	}
	if len(commits) != 2 {
		t.Fatalf("%d commits, want 2: %v", len(commits), commits)
	}
	got := map[int]int64{}
	for _, m := range commits[1] {
		got[m.Partition] = m.Offset
	}
	if len(got) != 2 || got[0] != 4 || got[1] != 6 {
		t.Errorf("second commit %v, want partition 0 at 4 and 1 at 6", got)
	}
}

// TestCommitterInterval: with a commit interval, offsets applied in quick succession are committed together, at
// most once per interval, and close commits the newest at once.
func TestCommitterInterval(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	var lastCommit []kafkago.Message
	const interval = 100 * time.Millisecond
	cm := newCommitter(func(ctx context.Context, msgs ...kafkago.Message) error {
		mu.Lock()
		times = append(times, time.Now())
		lastCommit = msgs
		mu.Unlock()
		return nil
	}, interval, quietLog(), nil)
	go cm.run(context.Background())
	start := time.Now()
	var off int64
	for time.Since(start) < 350*time.Millisecond {
		off++
		cm.add([]kafkago.Message{{Topic: "t", Partition: 0, Offset: off}})
		time.Sleep(time.Millisecond)
	}
	closeStart := time.Now()
	if err := cm.close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(closeStart); d > interval/2 {
		t.Errorf("close took %s: it waited for the interval", d)
	}
	mu.Lock()
	defer mu.Unlock()
	// About 350 batches were added: commits at 0, 100, 200, 300 ms and the last one at close.
	if len(times) < 2 || len(times) > 6 {
		t.Fatalf("%d commits for %d batches in 350ms, want one per %s and one at close", len(times), off, interval)
	}
	for i := 1; i < len(times)-1; i++ { // the last is the one at close
		if gap := times[i].Sub(times[i-1]); gap < interval-5*time.Millisecond {
			t.Errorf("commits %d and %d %s apart, want at least %s", i-1, i, gap, interval)
		}
	}
	if len(lastCommit) != 1 || lastCommit[0].Offset != off {
		t.Errorf("last commit %v, want offset %d", lastCommit, off)
	}
}

// A partition whose end drops below what the sink saw before (a topic recreated while the sink ran) stops the
// sink; ends that only grow, across partitions and topics, do not.
func TestCheckEndsFindsARecreatedPartition(t *testing.T) {
	c := &Consumer{cfg: ConsumerConfig{GroupID: "g"}}
	msg := func(topic string, p int, off, hwm int64) kafkago.Message {
		return kafkago.Message{Topic: topic, Partition: p, Offset: off, HighWaterMark: hwm}
	}
	if err := c.checkEnds([]kafkago.Message{msg("a", 0, 10, 500), msg("a", 1, 3, 4), msg("b", 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := c.checkEnds([]kafkago.Message{msg("a", 0, 11, 600), msg("a", 1, 4, 5), msg("b", 0, 1, 2)}); err != nil {
		t.Fatal(err)
	}
	err := c.checkEnds([]kafkago.Message{msg("a", 1, 5, 6), msg("a", 0, 0, 40)})
	if err == nil || !strings.Contains(err.Error(), "partition 0 of a ends at offset 40, below offset 600") ||
		!strings.Contains(err.Error(), "--reset-offsets --to-earliest") {
		t.Fatalf("a partition whose end went from 600 to 40: %v", err)
	}
}
