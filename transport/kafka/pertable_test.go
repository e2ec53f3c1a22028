package kafka

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
	"github.com/binlogsync/binlogsync/sink"
)

// TestTopicPerTable publishes two tables with kafka.topic_per_table: the source creates each table's topic with
// the configured partitions as the table appears, and a running sink picks up the second table's topic and
// applies its rows.
func TestTopicPerTable(t *testing.T) {
	brokers := newCluster(t, "dlq")
	rdb := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t).Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := fmt.Sprintf("pt%d", time.Now().UnixNano())
	ta := &change.Table{DB: db, Name: "a", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	tb := &change.Table{DB: db, Name: "b", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	common := Common{Brokers: brokers, Topic: "chg", TopicPerTable: true, CreateTopic: true, Partitions: 3,
		ReplicationFactor: 1, Log: quietLog()}
	publish := func(table *change.Table, rows int) {
		t.Helper()
		prod, err := NewProducer(ProducerConfig{Common: common})
		if err != nil {
			t.Fatal(err)
		}
		if err := prod.Check(ctx); err != nil {
			t.Fatal(err)
		}
		runProducer(t, ctx, prod, batches(table, rows, 50), 0, func(change.Position) {})
	}
	waitRows := func(table string, want int) {
		t.Helper()
		for deadline := time.Now().Add(40 * time.Second); ; {
			keys, err := rdb.Keys(ctx, db+":"+table+":*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d rows of table %s in Redis", len(keys), want, table)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	publish(ta, 500)
	snk, err := sink.New(rdb, sink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: "g-" + db, DeadLetterTopic: "dlq",
		SessionTimeout: 6 * time.Second, TopicCheckInterval: 200 * time.Millisecond}, snk)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(cctx) }()
	waitRows("a", 500)
	publish(tb, 300) // a new table: a new topic, which the running sink must find
	waitRows("b", 300)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	md, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{common.TopicFor(db, "a"), common.TopicFor(db, "b")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		if tp.Error != nil || len(tp.Partitions) != 3 {
			t.Errorf("topic %s: %d partitions (%v), want 3", tp.Name, len(tp.Partitions), tp.Error)
		}
	}
	if len(md.Topics) != 2 {
		t.Errorf("topics %v, want the two tables'", md.Topics)
	}
}

// TestProducerStopsOnMissingTopic: with per-table topics and kafka.create_topic off, a table whose topic does
// not exist (after a grace period for lagging metadata) stops the producer with the reason, instead of retrying
// behind a "kafka unavailable" warning forever.
func TestProducerStopsOnMissingTopic(t *testing.T) {
	old := topicMissingGrace
	topicMissingGrace = 300 * time.Millisecond
	t.Cleanup(func() { topicMissingGrace = old })
	brokers := newCluster(t, "dlq")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod, err := NewProducer(ProducerConfig{Common: Common{Brokers: brokers, Topic: "chg", TopicPerTable: true,
		Log: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.Check(ctx); err != nil {
		t.Fatal(err)
	}
	in := make(chan *change.Batch, 1)
	in <- batches(&change.Table{DB: "d", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}, 5, 5)[0]
	close(in)
	err = prod.Run(ctx, change.Position{File: "bin.000001", Pos: 4}, in, func(change.Position) {})
	if !errors.Is(err, ErrTopicMissing) || ctx.Err() != nil {
		t.Fatalf("Run returned %v, want ErrTopicMissing after the grace period", err)
	}
	prod.Close(ctx)
}
