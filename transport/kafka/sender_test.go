package kafka

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/binlogsync/binlogsync/change"
)

// produceLog records what each produce request that reached the broker carried.
type produceLog struct {
	mu       sync.Mutex
	requests [][]int32 // the partitions of each request
	acks     []int16   // the acks each request asked for
}

func (l *produceLog) observe(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		var parts []int32
		for _, t := range kr.(*kmsg.ProduceRequest).Topics {
			for _, p := range t.Partitions {
				parts = append(parts, p.Partition)
			}
		}
		l.mu.Lock()
		l.requests = append(l.requests, parts)
		l.acks = append(l.acks, kr.(*kmsg.ProduceRequest).Acks)
		l.mu.Unlock()
		return nil, nil, false
	})
}

// failProduce makes the broker answer the next n produce requests with code for every partition.
func failProduce(c *kfake.Cluster, n int32, code int16) *atomic.Int32 {
	var failed atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if failed.Load() >= n {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		failed.Add(1)
		req := kr.(*kmsg.ProduceRequest)
		res := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			res.Topics = append(res.Topics, rt)
		}
		return res, nil, true
	})
	return &failed
}

func newControlledCluster(t *testing.T, partitions int32, topics ...string) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

// readPartitions reads want records of topic back with franz-go and returns each partition's row ids in offset
// order, checking that every record is on the partition the Java client's partitioner (murmur2 of the key, as
// franz-go computes it) picks.
func readPartitions(t *testing.T, ctx context.Context, brokers []string, topic string, partitions, want int) map[int32][]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	javaPartitioner := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	dec := NewDecoder()
	out := map[int32][]int{}
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("fetching after %d records: %v", n, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if p := javaPartitioner.Partition(r, partitions); int32(p) != r.Partition {
				t.Fatalf("key %q on partition %d, the Java partitioner picks %d", r.Key, r.Partition, p)
			}
			c, _, err := dec.Decode(r.Value)
			if err != nil {
				t.Fatalf("decoding %q: %v", r.Value, err)
			}
			id, _ := strconv.Atoi(string(c.After[0]))
			out[r.Partition] = append(out[r.Partition], id)
			n++
		})
	}
	return out
}

// checkOnceInOrder checks that ids 0..rows-1 each appear once and in increasing order within each partition.
func checkOnceInOrder(t *testing.T, got map[int32][]int, rows int) {
	t.Helper()
	seen := map[int]bool{}
	for p, ids := range got {
		for i, id := range ids {
			if seen[id] {
				t.Fatalf("row %d published twice", id)
			}
			seen[id] = true
			if i > 0 && id < ids[i-1] {
				t.Fatalf("partition %d: row %d after row %d", p, id, ids[i-1])
			}
		}
	}
	if len(seen) != rows {
		t.Fatalf("%d rows published, want %d", len(seen), rows)
	}
}

// TestSenderOneRequestPerBroker publishes rows spread over six partitions: the partitions' batches travel in one
// produce request, every row lands on the Java client's partition for its key, once and in order.
func TestSenderOneRequestPerBroker(t *testing.T) {
	c, brokers := newControlledCluster(t, 6, "changes")
	var log produceLog
	log.observe(c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	table := &change.Table{DB: "db", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	const rows = 600
	publishBatches(t, ctx, ProducerConfig{Common: Common{Brokers: brokers, Topic: "changes", Log: quietLog()},
		BatchTimeout: 20 * time.Millisecond}, batches(table, rows, rows))

	log.mu.Lock()
	reqs, acks := log.requests, log.acks
	log.mu.Unlock()
	if len(reqs) != 1 || len(reqs[0]) != 6 {
		t.Fatalf("produce requests carried partitions %v, want one request with all six", reqs)
	}
	if acks[0] != -1 {
		t.Fatalf("the produce request asked for acks %d, want -1 (all in-sync replicas, the default)", acks[0])
	}
	checkOnceInOrder(t, readPartitions(t, ctx, brokers, "changes", 6, rows), rows)
}

// TestSenderRetriesInOrder drops the connection on the first produce request and refuses the next two with a
// transient error (not the partitions' leader) while more rows are written: every row arrives once, each
// partition's in order, and the checkpoint reaches the end.
func TestSenderRetriesInOrder(t *testing.T) {
	c, brokers := newControlledCluster(t, 3, "changes")
	var dropped atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		dropped.Store(true)
		return nil, errors.New("dropped"), true // closes the connection
	})
	failed := failProduce(c, 2, 6) // NOT_LEADER_OR_FOLLOWER
	var log produceLog
	log.observe(c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const rows = 2000
	last := publishPaced(t, ctx, ProducerConfig{Common: Common{Brokers: brokers, Topic: "changes", Log: quietLog()},
		BatchSize: 100, MaxInFlight: 500}, rows, 50, 0)
	if !dropped.Load() || failed.Load() != 2 {
		t.Fatalf("dropped %v, refused %d requests: the faults were not injected", dropped.Load(), failed.Load())
	}
	if last.Pos != rows {
		t.Fatalf("checkpoint at %d, want %d", last.Pos, rows)
	}
	log.mu.Lock()
	n := len(log.requests)
	log.mu.Unlock()
	if n == 0 {
		t.Fatal("no produce request got through")
	}
	checkOnceInOrder(t, readPartitions(t, ctx, brokers, "changes", 3, rows), rows)
}

// TestSenderFatalError: a produce error Kafka marks as permanent (the batch is too large for the topic) stops the
// producer with the error, and the checkpoint does not pass the refused rows.
func TestSenderFatalError(t *testing.T) {
	c, brokers := newControlledCluster(t, 2, "changes")
	failProduce(c, 1000, 10) // MESSAGE_TOO_LARGE
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	table := &change.Table{DB: "db", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	prod, err := NewProducer(ProducerConfig{Common: Common{Brokers: brokers, Topic: "changes", Log: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *change.Batch, 10)
	for _, b := range batches(table, 100, 10) {
		in <- b
	}
	var advanced bool
	err = prod.Run(ctx, change.Position{File: "bin.000001", Pos: 4}, in, func(change.Position) { advanced = true })
	if err == nil || !strings.Contains(err.Error(), "did not accept") || !strings.Contains(err.Error(), "Too Large") {
		t.Fatalf("Run returned %v, want the broker's refusal", err)
	}
	if advanced {
		t.Fatal("the checkpoint advanced over refused messages")
	}
	if err := prod.s.write(ctx, []kafkago.Message{{Topic: "changes", Key: []byte("k"), Value: []byte("v")}}); err == nil {
		t.Fatal("the sender took a message after a permanent error")
	}
	closeCtx, cancelClose := context.WithTimeout(ctx, time.Second)
	defer cancelClose()
	_ = prod.Close(closeCtx)
}

// TestSenderLeaderChanges publishes to twelve partitions on three brokers while the partitions' leaders move:
// requests go to the leaders the metadata names, batches a former leader refuses are sent again, and every row
// arrives once, each partition's in order, with the checkpoint at the end.
func TestSenderLeaderChanges(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(12, "changes"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var shuffles atomic.Int32
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				c.ShufflePartitionLeaders()
				shuffles.Add(1)
			}
		}
	}()
	const rows = 10000
	last := publishPaced(t, ctx, ProducerConfig{Common: Common{Brokers: brokers, Topic: "changes", Log: quietLog()},
		BatchSize: 50, MaxInFlight: 2000}, rows, 20, 5*time.Millisecond) // about 2.5 s of writes
	close(stop)
	if shuffles.Load() == 0 {
		t.Fatal("the leaders never moved")
	}
	if last.Pos != rows {
		t.Fatalf("checkpoint at %d, want %d", last.Pos, rows)
	}
	checkOnceInOrder(t, readPartitions(t, ctx, brokers, "changes", 12, rows), rows)
}

// TestSenderTakeBoundsRounds: a round takes at most a full batch of each partition and stops at the round's byte
// limit; the partitions left out lead the next round, and every message is taken once, in order.
func TestSenderTakeBoundsRounds(t *testing.T) {
	s := &sender{batchSize: 4, batchBytes: 1000, maxRound: 250, queues: map[topicPart]*partQueue{}}
	for p := range 4 {
		q := &partQueue{key: topicPart{"t", int32(p)}}
		for i := range 6 {
			m := kafkago.Message{Topic: "t", Partition: p, Value: make([]byte, 34), WriterData: i} // 50 bytes each
			q.msgs = append(q.msgs, m)
			q.bytes += msgSize(&m)
			s.queued++
		}
		s.queues[q.key] = q
		s.order = append(s.order, q)
	}
	next := map[int]int{} // the next message index expected of each partition
	for rounds := 0; s.queued > 0; rounds++ {
		if rounds > 10 {
			t.Fatalf("%d messages left after 10 rounds", s.queued)
		}
		bytes := 0
		for _, b := range s.take() {
			if len(b.msgs) > s.batchSize {
				t.Fatalf("a batch of %d messages, limit %d", len(b.msgs), s.batchSize)
			}
			for _, m := range b.msgs {
				if m.WriterData.(int) != next[m.Partition] {
					t.Fatalf("partition %d: message %d, want %d", m.Partition, m.WriterData, next[m.Partition])
				}
				next[m.Partition]++
				bytes += msgSize(&m)
			}
		}
		if bytes > s.maxRound+s.batchSize*50 {
			t.Fatalf("a round of %d bytes, limit %d plus one batch", bytes, s.maxRound)
		}
	}
	for p := range 4 {
		if next[p] != 6 {
			t.Fatalf("partition %d: %d messages taken, want 6", p, next[p])
		}
	}
}

// publishPaced publishes rows inserts in transactions of txSize, pausing between transactions, through a producer
// with cfg, closes it and returns the last position the checkpoint advanced to.
func publishPaced(t *testing.T, ctx context.Context, cfg ProducerConfig, rows, txSize int, pause time.Duration) change.Position {
	t.Helper()
	table := &change.Table{DB: "db", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	prod, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last change.Position
	runProducer(t, ctx, prod, batches(table, rows, txSize), pause, func(p change.Position) {
		mu.Lock()
		last = p
		mu.Unlock()
	})
	mu.Lock()
	defer mu.Unlock()
	return last
}
