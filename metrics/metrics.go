// Package metrics holds binlogsync's Prometheus collectors. Everything is
// registered on a Registerer passed in, never on a global.
package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/binlogsync/binlogsync/change"
)

// Metrics are the pipeline's collectors. The zero value is not usable; use New.
type Metrics struct {
	RowsRead       *prometheus.CounterVec
	RowsApplied    *prometheus.CounterVec
	RowsSkipped    prometheus.Counter
	DeadLetters    *prometheus.CounterVec
	Events         *prometheus.CounterVec
	Batches        prometheus.Counter
	BatchRows      prometheus.Histogram
	ApplyDuration  prometheus.Histogram
	Errors         *prometheus.CounterVec
	RedisRetries   prometheus.Counter
	Reconnects     prometheus.Counter
	SourceFile     prometheus.Gauge
	SourcePos      prometheus.Gauge
	XAPrepared     prometheus.Gauge
	CheckpointFile prometheus.Gauge
	CheckpointPos  prometheus.Gauge
	CheckpointTime prometheus.Gauge
	QueueBatches   prometheus.GaugeFunc

	now func() time.Time
	// appliedEventTime is the binlog time (unix nanos) of the newest applied batch.
	appliedEventTime atomic.Int64

	mu       sync.Mutex
	readC    map[*change.Table]*[4]prometheus.Counter
	appliedC map[*change.Table]*[4]prometheus.Counter
}

// New creates the collectors and registers them on reg. queueLen, when not
// nil, reports how many batches wait between source and sink.
func New(reg prometheus.Registerer, queueLen func() float64) *Metrics {
	m := &Metrics{
		RowsRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_rows_read_total", Help: "Row changes read from the binlog, by table and operation.",
		}, []string{"table", "op"}),
		RowsApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_rows_applied_total", Help: "Row changes applied to Redis (written, or skipped as not newer), by table and operation.",
		}, []string{"table", "op"}),
		RowsSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_rows_fenced_total", Help: "Row changes skipped because Redis already held the same or a newer version.",
		}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_dead_letters_total", Help: "Row changes that could not be applied and went to the dead-letter stream, by table.",
		}, []string{"table"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_binlog_events_total", Help: "Binlog events handled, by kind (commit, ddl, rotate, heartbeat, xa_prepare, xa_outcome).",
		}, []string{"kind"}),
		Batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_batches_applied_total", Help: "Batches applied to Redis.",
		}),
		BatchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "binlogsync_batch_rows", Help: "Rows per applied batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		ApplyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "binlogsync_apply_duration_seconds", Help: "Time to apply one batch to Redis, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12),
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_errors_total", Help: "Errors by stage (source, sink, checkpoint).",
		}, []string{"stage"}),
		RedisRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_redis_retries_total", Help: "Redis pipelines retried after a transport error.",
		}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_binlog_reconnects_total", Help: "Times the binlog connection was re-established.",
		}),
		SourceFile: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "binlogsync_source_binlog_file_number", Help: "Sequence number of the binlog file of the newest transaction boundary read.",
		}),
		SourcePos: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "binlogsync_source_binlog_position_bytes", Help: "Byte offset of the newest transaction boundary read.",
		}),
		XAPrepared: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "binlogsync_xa_prepared_transactions",
			Help: "Prepared XA transactions whose rows wait for their XA COMMIT or XA ROLLBACK; the checkpoint stays before the oldest.",
		}),
		CheckpointFile: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "binlogsync_checkpoint_binlog_file_number", Help: "Sequence number of the binlog file of the stored checkpoint.",
		}),
		CheckpointPos: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "binlogsync_checkpoint_binlog_position_bytes", Help: "Byte offset of the stored checkpoint.",
		}),
		CheckpointTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "binlogsync_checkpoint_saved_timestamp_seconds", Help: "Unix time the checkpoint was last stored.",
		}),
		now:      time.Now,
		readC:    map[*change.Table]*[4]prometheus.Counter{},
		appliedC: map[*change.Table]*[4]prometheus.Counter{},
	}
	lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "binlogsync_replication_lag_seconds",
		Help: "Seconds between now and the binlog time of the newest change applied to Redis; near 0 when caught up on an idle server (heartbeats).",
	}, m.Lag)
	reg.MustRegister(m.RowsRead, m.RowsApplied, m.RowsSkipped, m.DeadLetters, m.Events, m.Batches, m.BatchRows,
		m.ApplyDuration, m.Errors, m.RedisRetries, m.Reconnects, m.SourceFile, m.SourcePos, m.XAPrepared, m.CheckpointFile,
		m.CheckpointPos, m.CheckpointTime, lag)
	if queueLen != nil {
		m.QueueBatches = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "binlogsync_queue_batches", Help: "Batches waiting between the source and the sink.",
		}, queueLen)
		reg.MustRegister(m.QueueBatches)
	}
	for _, s := range []string{"source", "sink", "checkpoint"} {
		m.Errors.WithLabelValues(s)
	}
	return m
}

// Lag is the replication lag in seconds (0 before anything was applied).
func (m *Metrics) Lag() float64 {
	t := m.appliedEventTime.Load()
	if t == 0 {
		return 0
	}
	return max(0, m.now().Sub(time.Unix(0, t)).Seconds())
}

// Applied records a batch applied to Redis whose newest binlog time is eventTime.
func (m *Metrics) Applied(eventTime time.Time) {
	if !eventTime.IsZero() {
		if n := eventTime.UnixNano(); n > m.appliedEventTime.Load() {
			m.appliedEventTime.Store(n)
		}
	}
}

func (m *Metrics) counters(cache map[*change.Table]*[4]prometheus.Counter, vec *prometheus.CounterVec, t *change.Table) *[4]prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := cache[t]
	if c == nil {
		c = &[4]prometheus.Counter{}
		name := t.FullName()
		for _, op := range []change.Op{change.Insert, change.Update, change.Delete} {
			c[op] = vec.WithLabelValues(name, op.String())
		}
		if len(cache) > 10000 { // tables rebuilt by many DDLs: start over
			clear(cache)
		}
		cache[t] = c
	}
	return c
}

// ObserveRowsRead counts rows read from the binlog.
func (m *Metrics) ObserveRowsRead(t *change.Table, op change.Op, n int) {
	m.counters(m.readC, m.RowsRead, t)[op].Add(float64(n))
}

// ObserveApplied counts applied changes by table and operation.
func (m *Metrics) ObserveApplied(changes []change.Change) {
	var last *change.Table
	var c *[4]prometheus.Counter
	var pending [4]int
	flush := func() {
		for op, n := range pending {
			if n > 0 {
				c[op].Add(float64(n))
			}
		}
		pending = [4]int{}
	}
	for i := range changes {
		if changes[i].Table != last {
			if c != nil {
				flush()
			}
			last = changes[i].Table
			c = m.counters(m.appliedC, m.RowsApplied, last)
		}
		pending[changes[i].Op]++
	}
	if c != nil {
		flush()
	}
}

// SourceAdapter adapts Metrics to the source's metrics interface.
type SourceAdapter struct{ M *Metrics }

// RowsRead counts rows read.
func (a SourceAdapter) RowsRead(t *change.Table, op change.Op, n int) { a.M.ObserveRowsRead(t, op, n) }

// Event counts a binlog event.
func (a SourceAdapter) Event(kind string) { a.M.Events.WithLabelValues(kind).Inc() }

// Reconnect counts a reconnect.
func (a SourceAdapter) Reconnect() { a.M.Reconnects.Inc() }

// SourcePosition records the newest boundary read.
func (a SourceAdapter) SourcePosition(p change.Position, _ time.Time) {
	if seq, err := change.FileSeq(p.File); err == nil {
		a.M.SourceFile.Set(float64(seq))
	}
	a.M.SourcePos.Set(float64(p.Pos))
}

// XAPrepared records how many prepared XA transactions wait for their outcome.
func (a SourceAdapter) XAPrepared(n int) { a.M.XAPrepared.Set(float64(n)) }

// CheckpointStart shows the checkpoint a start resumes from (file and position; not the time, since nothing was
// stored), so the gauges do not read 0 until the first transaction.
func (m *Metrics) CheckpointStart(p change.Position) {
	if seq, err := change.FileSeq(p.File); err == nil {
		m.CheckpointFile.Set(float64(seq))
		m.CheckpointPos.Set(float64(p.Pos))
	}
}

// CheckpointSaved records a stored checkpoint.
func (m *Metrics) CheckpointSaved(p change.Position) {
	if seq, err := change.FileSeq(p.File); err == nil {
		m.CheckpointFile.Set(float64(seq))
	}
	m.CheckpointPos.Set(float64(p.Pos))
	m.CheckpointTime.Set(float64(m.now().Unix()))
}

// Kafka are the Kafka transport's collectors, registered only when the
// transport is kafka. The zero value is not usable; use NewKafka.
type Kafka struct {
	Produced       prometheus.Counter
	ProduceErrors  prometheus.Counter
	Consumed       prometheus.Counter
	DeadLetters    prometheus.Counter
	CommitErrors   prometheus.Counter
	ConsumerErrors prometheus.Counter
	Ignored        *prometheus.CounterVec
	ConsumerLag    *prometheus.GaugeVec
	ProducerUnacks prometheus.GaugeFunc
}

// NewKafka creates the Kafka collectors and registers them on reg. unacked,
// when not nil, reports the messages handed to Kafka and not yet acknowledged.
func NewKafka(reg prometheus.Registerer, unacked func() float64) *Kafka {
	k := &Kafka{
		Produced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_kafka_produced_messages_total", Help: "Messages the source published and Kafka acknowledged.",
		}),
		ProduceErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_kafka_produce_errors_total", Help: "Failed attempts to hand messages to Kafka (retried).",
		}),
		Consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_kafka_consumed_messages_total", Help: "Messages the sink consumed, applied and committed (dead letters included).",
		}),
		DeadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_kafka_dead_letters_total", Help: "Messages the sink could not decode and sent to the dead-letter topic.",
		}),
		CommitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_kafka_commit_errors_total", Help: "Offset commits that failed (usually a rebalance; the messages are applied again, harmlessly).",
		}),
		ConsumerErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "binlogsync_kafka_consumer_errors_total", Help: "Errors the sink's Kafka reader met and retried (fetches, group joins, brokers unreachable).",
		}),
		Ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_kafka_ignored_messages_total",
			Help: "Messages of tables outside the sink's tables.include/exclude, committed without being applied, by table.",
		}, []string{"table"}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "binlogsync_kafka_consumer_lag_messages", Help: "Messages in the partition after the newest one this sink applied, by topic and partition.",
		}, []string{"topic", "partition"}),
	}
	reg.MustRegister(k.Produced, k.ProduceErrors, k.Consumed, k.DeadLetters, k.CommitErrors, k.ConsumerErrors, k.Ignored, k.ConsumerLag)
	if unacked != nil {
		k.ProducerUnacks = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "binlogsync_kafka_unacknowledged_messages", Help: "Messages handed to Kafka and not yet acknowledged.",
		}, unacked)
		reg.MustRegister(k.ProducerUnacks)
	}
	return k
}
