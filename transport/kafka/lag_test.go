package kafka

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/binlogsync/binlogsync/metrics"
)

// TestRecordLagsForgetsRevokedPartitions checks that the lag of a partition nothing was applied from for
// staleLagAfter (given to another sink by a rebalance) is forgotten, gauge included, so it no longer holds the
// sink's caught-up report back, while the partitions it still applies from keep theirs.
func TestRecordLagsForgetsRevokedPartitions(t *testing.T) {
	m := metrics.NewKafka(prometheus.NewRegistry(), nil)
	c := &Consumer{cfg: ConsumerConfig{Common: Common{Metrics: m}}, lags: map[topicPartition]partitionLag{}}
	t0 := time.Now()
	c.recordLags([]kafkago.Message{
		{Topic: "t", Partition: 0, Offset: 10, HighWaterMark: 100}, // lagging, then revoked
		{Topic: "t", Partition: 1, Offset: 5, HighWaterMark: 6},
	}, t0)
	if got := testutil.ToFloat64(m.ConsumerLag.WithLabelValues("t", "0")); got != 89 {
		t.Fatalf("lag of partition 0 = %v, want 89", got)
	}
	c.recordLags([]kafkago.Message{{Topic: "t", Partition: 1, Offset: 6, HighWaterMark: 9}}, t0.Add(10*time.Second))
	if _, ok := c.lags[topicPartition{"t", 0}]; !ok {
		t.Fatal("partition 0 forgotten too early")
	}
	c.recordLags([]kafkago.Message{{Topic: "t", Partition: 1, Offset: 8, HighWaterMark: 9}}, t0.Add(staleLagAfter+time.Second))
	if _, ok := c.lags[topicPartition{"t", 0}]; ok {
		t.Fatal("the revoked partition's lag is still recorded")
	}
	if n := testutil.CollectAndCount(m.ConsumerLag); n != 1 {
		t.Fatalf("%d lag series, want only partition 1's", n)
	}
	if got := testutil.ToFloat64(m.ConsumerLag.WithLabelValues("t", "1")); got != 0 {
		t.Fatalf("lag of partition 1 = %v, want 0", got)
	}
}

// TestIdleForgetsRevokedPartitions: a sink that lost a lagging partition in a rebalance and then receives nothing
// reports that it caught up once that partition's lag is stale, instead of a replication lag that grows forever.
func TestIdleForgetsRevokedPartitions(t *testing.T) {
	pm := metrics.New(prometheus.NewRegistry(), nil)
	c := &Consumer{cfg: ConsumerConfig{Common: Common{Log: slog.New(slog.DiscardHandler)}, Pipeline: pm}, lags: map[topicPartition]partitionLag{}}
	pm.Applied(time.Now().Add(-time.Hour))
	c.idle()
	if pm.Lag() < 3000 {
		t.Fatal("a sink that applied nothing yet reported that it caught up")
	}
	c.recordLags([]kafkago.Message{{Topic: "t", Partition: 1, Offset: 10, HighWaterMark: 100}}, time.Now())
	c.idle()
	if pm.Lag() < 3000 {
		t.Fatal("idle reported caught up while a partition it reads lags")
	}
	tp := topicPartition{"t", 1}
	c.lags[tp] = partitionLag{lag: c.lags[tp].lag, at: time.Now().Add(-2 * staleLagAfter)} // revoked since
	c.readerError("fetching: %v", "connection refused")                                    // brokers unreachable: idle says nothing
	c.idle()
	if pm.Lag() < 3000 {
		t.Fatal("idle reported caught up right after the reader failed to reach the brokers")
	}
	c.lastReaderErr.Store(time.Now().Add(-2 * readerErrorQuiet).UnixNano())
	c.idle()
	if pm.Lag() > 5 {
		t.Fatalf("idle with only a stale lagging partition left the lag at %.0fs", pm.Lag())
	}
}
