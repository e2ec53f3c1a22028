package kafka

import (
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
