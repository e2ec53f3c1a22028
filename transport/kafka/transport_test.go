package kafka

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
	"github.com/binlogsync/binlogsync/sink"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}

func newCluster(t testing.TB, topics ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// batches makes n inserts of table t in transactions of txSize rows, one
// batch per transaction, each with its boundary (Pos = the row count so far).
func batches(t *change.Table, n, txSize int) []*change.Batch {
	var out []*change.Batch
	for i := 0; i < n; i += txSize {
		b := &change.Batch{}
		for j := i; j < min(n, i+txSize); j++ {
			id := []byte(strconv.Itoa(j))
			b.Changes = append(b.Changes, change.Change{Op: change.Insert, Table: t,
				After:   change.Row{id, []byte(fmt.Sprintf("name %d", j)), nil, []byte{0, 1, 2}},
				Version: change.Version{File: 1, Pos: uint32(i + 4), Seq: uint32(j - i + 1)}, CommitTime: time.Unix(1700000000, 0)})
		}
		b.Boundary = &change.Position{File: "bin.000001", Pos: uint32(min(n, i+txSize))}
		out = append(out, b)
	}
	return out
}

func TestProducerConsumerEndToEnd(t *testing.T) {
	brokers := newCluster(t, "changes", "dlq")
	rd := testenv.SharedRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := fmt.Sprintf("e2e%d", time.Now().UnixNano())
	table := &change.Table{DB: db, Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}

	common := Common{Brokers: brokers, Topic: "changes", Log: quietLog()}
	prod, err := NewProducer(ProducerConfig{Common: common, MaxInFlight: 64, BatchSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.Check(ctx); err != nil {
		t.Fatal(err)
	}
	const rows = 1000
	var mu sync.Mutex
	var advanced []uint32
	runProducer(t, ctx, prod, batches(table, rows, 7), 0, func(p change.Position) {
		mu.Lock()
		advanced = append(advanced, p.Pos)
		mu.Unlock()
	})
	mu.Lock()
	if len(advanced) == 0 || advanced[len(advanced)-1] != rows {
		t.Fatalf("checkpoint advanced to %v, want %d last", advanced, rows)
	}
	for i := 1; i < len(advanced); i++ {
		if advanced[i] <= advanced[i-1] {
			t.Fatalf("checkpoint went backwards: %v", advanced)
		}
	}
	mu.Unlock()

	// An undecodable message, produced by someone else.
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: "changes", RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("junk"), Value: []byte(`{"format":1,"op":"explode"}`)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	tail := batches(table, rows+1, rows+1)[0]
	tail.Changes = tail.Changes[rows:] // the row after the junk: proves the sink went on
	prod2, err := NewProducer(ProducerConfig{Common: common})
	if err != nil {
		t.Fatal(err)
	}
	in3 := make(chan *change.Batch, 1)
	in3 <- tail
	close(in3)
	if err := prod2.Run(ctx, change.Position{File: "bin.000001", Pos: 4}, in3, func(change.Position) {}); err != nil {
		t.Fatal(err)
	}
	prod2.Close(ctx)

	snk, err := sink.New(rdb, sink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: "g1", DeadLetterTopic: "dlq", SessionTimeout: 6 * time.Second}, snk)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(cctx) }()
	deadline := time.Now().Add(40 * time.Second)
	// The rows sit in four partitions that the sink drains independently, so
	// wait for all of them rather than for a few probes.
	for {
		keys, err := rdb.Keys(ctx, db+":t:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == rows+1 {
			break
		}
		if len(keys) > rows+1 {
			t.Fatalf("%d keys, want %d", len(keys), rows+1)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rows in Redis after 40s", len(keys), rows+1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h, err := rdb.HGetAll(ctx, db+":t:"+strconv.Itoa(rows)).Result()
	if err != nil || h["name"] != fmt.Sprintf("name %d", rows) || h["bin"] != "\x00\x01\x02" || h["note"] != "" {
		t.Fatalf("row = %q, %v", h, err)
	}

	// The junk message is in the dead-letter topic, with the reason.
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: "dlq", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var dl kafkago.Message
	for p := 0; p < 4; p++ {
		r.Close()
		r = kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: "dlq", Partition: p, MaxWait: 100 * time.Millisecond})
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		m, err := r.ReadMessage(rctx)
		rcancel()
		if err == nil {
			dl = m
			break
		}
	}
	if string(dl.Key) != "junk" {
		t.Fatalf("dead letter not found (got %q)", dl.Key)
	}
	var reason string
	for _, hd := range dl.Headers {
		if hd.Key == HeaderError {
			reason = string(hd.Value)
		}
	}
	if reason == "" || string(dl.Value) != `{"format":1,"op":"explode"}` {
		t.Fatalf("dead letter %q headers %v", dl.Value, dl.Headers)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("consumer: %v", err)
	}

	// The offsets were committed: a new member of the group finds nothing to do.
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	off, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: "g1", Topics: map[string][]int{"changes": {0, 1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	for _, p := range off.Topics["changes"] {
		committed += p.CommittedOffset
	}
	if committed != rows+2 {
		t.Fatalf("committed offsets sum to %d, want %d (every message, the junk included)", committed, rows+2)
	}
}

func TestProducerWaitsForMissingTopic(t *testing.T) {
	brokers := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := NewProducer(ProducerConfig{Common: Common{Brokers: brokers, Topic: "absent", Log: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx); err == nil {
		t.Fatal("Check passed without the topic")
	}
	p2, err := NewProducer(ProducerConfig{Common: Common{Brokers: brokers, Topic: "absent", CreateTopic: true, Partitions: 3, Log: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Check(ctx); err != nil {
		t.Fatal(err)
	}
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	md, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{"absent"}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 3 {
		t.Fatalf("created topic: %+v %v", md, err)
	}
}

func TestTopicFor(t *testing.T) {
	c := Common{Topic: "bs", TopicPerTable: true}
	if got := c.TopicFor("shop", "order items$"); got != "bs.shop.order_items_" {
		t.Errorf("TopicFor = %q", got)
	}
	c.TopicPerTable = false
	if got := c.TopicFor("shop", "x"); got != "bs" {
		t.Errorf("TopicFor = %q", got)
	}
}

// TestProducerCompression publishes with each kafka.compression and reads the
// record batches back with another client (franz-go's kgo): the batches carry
// the configured codec and every message decodes to the row that was sent.
func TestProducerCompression(t *testing.T) {
	codecs := map[string]uint8{"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
	for name, want := range codecs {
		t.Run(name, func(t *testing.T) {
			brokers := newCluster(t, "changes")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			table := &change.Table{DB: "db", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
			const rows = 300
			publishBatches(t, ctx, ProducerConfig{Common: Common{Brokers: brokers, Topic: "changes", Log: quietLog()}, Compression: name},
				batches(table, rows, 50))

			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("changes"),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			dec := NewDecoder()
			seen := map[string]bool{}
			for len(seen) < rows {
				fs := cl.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					t.Fatalf("fetching after %d rows: %v", len(seen), err)
				}
				fs.EachRecord(func(r *kgo.Record) {
					if got := r.Attrs.CompressionType(); got != want {
						t.Fatalf("record batch compression %d, want %d (%s)", got, want, name)
					}
					c, _, err := dec.Decode(r.Value)
					if err != nil {
						t.Fatalf("decoding %q: %v", r.Value, err)
					}
					id := string(c.After[0])
					if want := "name " + id; string(c.After[1]) != want {
						t.Fatalf("row %s: name %q, want %q", id, c.After[1], want)
					}
					seen[id] = true
				})
			}
		})
	}
}

// A group offset past a partition's end (the topic was recreated, or Kafka lost messages) stops the sink with the
// procedure: reading on would skip the partition's new messages up to the old offset.
func TestConsumerOffsetPastPartitionEnd(t *testing.T) {
	brokers := newCluster(t, "changes", "dlq")
	rd := testenv.SharedRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The group's offsets as a topic that held 500 messages per partition left them; the topic is empty now.
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	commits := map[string][]kafkago.OffsetCommit{"changes": {}}
	for p := range 4 {
		commits["changes"] = append(commits["changes"], kafkago.OffsetCommit{Partition: p, Offset: 500})
	}
	res, err := client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: "gpast", GenerationID: -1, Topics: commits})
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				t.Fatalf("committing offsets: %v", p.Error)
			}
		}
	}
	snk, err := sink.New(rdb, sink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	common := Common{Brokers: brokers, Topic: "changes", Log: quietLog()}
	cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: "gpast", DeadLetterTopic: "dlq", SessionTimeout: 6 * time.Second}, snk)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cons.Run(ctx) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the sink reads on from offsets past the partitions' end")
	}
	if err == nil || !strings.Contains(err.Error(), "past the partition's end") ||
		!strings.Contains(err.Error(), "--group gpast --reset-offsets --to-earliest") ||
		!strings.Contains(err.Error(), "reconciler run") {
		t.Fatalf("the sink stopped with %v, want the offsets past the end named with the procedure", err)
	}
}

// A topic deleted while the source publishes is named as gone, with the messages lost with it, not as Kafka
// being unavailable; publishing goes on once the topic exists again.
func TestProducerTopicDeletedWhileStreaming(t *testing.T) {
	brokers := newCluster(t, "changes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs testenv.LogBuffer
	table := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	prod, err := NewProducer(ProducerConfig{Common: Common{Brokers: brokers, Topic: "changes",
		Log: slog.New(slog.NewTextHandler(&logs, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.Check(ctx); err != nil {
		t.Fatal(err)
	}
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	in := make(chan *change.Batch)
	done := make(chan error, 1)
	go func() {
		done <- prod.Run(ctx, change.Position{File: "bin.000001", Pos: 4}, in, func(change.Position) {})
	}()
	bs := batches(table, 40, 1)
	for _, b := range bs[:20] {
		in <- b
	}
	if _, err := client.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: []string{"changes"}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for _, b := range bs[20:] {
			select {
			case in <- b:
			case <-ctx.Done():
				return
			}
		}
		close(in)
	}()
	for !strings.Contains(logs.String(), "does not exist any more") {
		if ctx.Err() != nil {
			t.Fatalf("no message naming the deleted topic; logs:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{
		{Topic: "changes", NumPartitions: 4, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("publishing after the topic was created again: %v", err)
	}
	prod.Close(ctx)
}
