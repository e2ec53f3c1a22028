package kafka

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
	"github.com/binlogsync/binlogsync/metrics"
)

// TestConsumerIgnoresTablesNotSelected checks that a sink whose configuration does not select a table commits that
// table's messages without applying them, counts them per table and logs the table once.
func TestConsumerIgnoresTablesNotSelected(t *testing.T) {
	brokers := newCluster(t, "changes", "dlq")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs testenv.LogBuffer
	km := metrics.NewKafka(prometheus.NewRegistry(), nil)
	common := Common{Brokers: brokers, Topic: "changes", Log: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: km}
	kept := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	other := &change.Table{DB: "d", Name: "other", Columns: []string{"id", "name", "note", "bin"}, PK: []int{0}}
	const keptRows, otherRows = 300, 200
	publish(t, ctx, Common{Brokers: brokers, Topic: "changes", Log: quietLog()}, other, otherRows)
	publish(t, ctx, Common{Brokers: brokers, Topic: "changes", Log: quietLog()}, kept, keptRows)

	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	parts := []int{0, 1, 2, 3}
	rec := &recorder{client: client, group: "g", topic: "changes", partitions: parts, applied: map[int][]int{}}
	var mu sync.Mutex
	var foreign []string
	cons, err := NewConsumer(ConsumerConfig{Common: common, GroupID: "g", DeadLetterTopic: "dlq", MaxBatch: 64,
		SessionTimeout: 6 * time.Second,
		Selected: func(db, table string) bool {
			if db != "d" || (table != "t" && table != "other") {
				mu.Lock()
				foreign = append(foreign, db+"."+table)
				mu.Unlock()
			}
			return db == "d" && table == "t"
		}}, rec)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(cctx) }()
	for {
		total := int64(0)
		for _, off := range committed(t, ctx, client, "g", "changes", parts) {
			total += max(off, 0)
		}
		if total == keptRows+otherRows {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d messages committed", total, keptRows+otherRows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	n := 0
	for _, ids := range rec.applied {
		n += len(ids)
	}
	for _, v := range rec.violations {
		if !strings.Contains(v, "committed at") { // the ignored messages are committed without being applied
			t.Error(v)
		}
	}
	rec.mu.Unlock()
	if n != keptRows {
		t.Errorf("%d rows applied, want the %d of d.t only", n, keptRows)
	}
	if got := testutil.ToFloat64(km.Ignored.WithLabelValues("d.other")); got != otherRows {
		t.Errorf("binlogsync_kafka_ignored_messages_total{table=\"d.other\"} = %v, want %d", got, otherRows)
	}
	if got := testutil.CollectAndCount(km.Ignored); got != 1 {
		t.Errorf("ignored messages counted for %d tables, want 1 (d.other)", got)
	}
	if c := strings.Count(logs.String(), "ignoring the kafka messages of a table"); c != 1 {
		t.Errorf("the ignored table was logged %d times, want once:\n%s", c, logs.String())
	}
	if !strings.Contains(logs.String(), "table=d.other") {
		t.Errorf("the warning does not name d.other:\n%s", logs.String())
	}
	if len(foreign) > 0 {
		t.Errorf("Selected asked about tables never published: %v", foreign)
	}
}
