package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/metrics"
	"github.com/binlogsync/binlogsync/sink"
)

// Headers of a dead-letter message (its key and value are the original's).
const (
	HeaderError     = "binlogsync-error"
	HeaderTopic     = "binlogsync-topic"
	HeaderPartition = "binlogsync-partition"
	HeaderOffset    = "binlogsync-offset"
)

// Applier writes changes to Redis; *sink.Sink is one.
type Applier interface {
	Apply(ctx context.Context, changes []change.Change) (sink.Stats, error)
}

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	Common
	// GroupID is the consumer group all sinks share.
	GroupID string
	// DeadLetterTopic receives the messages that cannot be decoded.
	DeadLetterTopic string
	// MaxBatch is the most messages per Apply (default 4096).
	MaxBatch int
	// SessionTimeout is how long the group waits for a silent member before
	// giving its partitions to the others (default 10s); HeartbeatInterval
	// defaults to a tenth of it.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	// ShutdownTimeout bounds how long the batch in flight may take to apply
	// and commit once Run's ctx ended (default 10s).
	ShutdownTimeout time.Duration
	// Pipeline receives the apply metrics (rows applied, lag); may be nil.
	Pipeline *metrics.Metrics
}

// Consumer reads the change topics as a member of a consumer group, applies
// the changes and commits the offsets once they are in Redis.
type Consumer struct {
	cfg    ConsumerConfig
	apply  Applier
	dec    *Decoder
	client *kafkago.Client
	dlq    *kafkago.Writer
	lags   map[string]map[int]int64 // topic -> partition -> lag
	// Ready, when set, is called once the first reader is created.
	Ready func()
}

// NewConsumer builds a Consumer applying through a.
func NewConsumer(cfg ConsumerConfig, a Applier) (*Consumer, error) {
	cfg.defaults()
	if cfg.GroupID == "" {
		return nil, errors.New("kafka.group_id is empty")
	}
	if cfg.DeadLetterTopic == "" {
		return nil, errors.New("kafka.dead_letter_topic is empty")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 4096
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = max(cfg.SessionTimeout/10, 100*time.Millisecond)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	tp := cfg.transport()
	c := &Consumer{
		cfg:    cfg,
		apply:  a,
		dec:    NewDecoder(),
		client: &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: tp, Timeout: 10 * time.Second},
		lags:   map[string]map[int]int64{},
	}
	c.dlq = &kafkago.Writer{
		Addr:         kafkago.TCP(cfg.Brokers...),
		Topic:        cfg.DeadLetterTopic,
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond,
		MaxAttempts:  3,
		Transport:    tp,
	}
	return c, nil
}

// Check connects to the brokers and checks (or creates) the topics the sink
// needs: the change topic (unless per table) and the dead-letter topic.
func (c *Consumer) Check(ctx context.Context) error {
	topics := []string{c.cfg.DeadLetterTopic}
	if !c.cfg.TopicPerTable {
		topics = append(topics, c.cfg.Topic)
	}
	return c.cfg.EnsureTopics(ctx, c.client, topics...)
}

// errTopicsChanged makes Run start a new reader over the new topic set.
var errTopicsChanged = errors.New("the set of change topics changed")

// Run consumes until ctx ends (returns nil) or applying fails. The batch in
// flight when ctx ends is still applied and committed, within
// ShutdownTimeout.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.dlq.Close()
	for {
		topics, err := c.topics(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err = c.consume(ctx, topics)
		if errors.Is(err, errTopicsChanged) {
			c.cfg.Log.Info("change topics changed; rejoining the group")
			continue
		}
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
			return nil
		}
		return err
	}
}

// topics returns the change topics: the one topic, or the existing
// per-table topics (waiting until there is one).
func (c *Consumer) topics(ctx context.Context) ([]string, error) {
	if !c.cfg.TopicPerTable {
		return []string{c.cfg.Topic}, nil
	}
	logged := false
	for {
		ts, err := c.tableTopics(ctx)
		if err == nil && len(ts) > 0 {
			return ts, nil
		}
		if !logged {
			msg := "no per-table topics yet; waiting for the source to create them"
			if err != nil {
				msg = "listing topics failed; retrying: " + err.Error()
			}
			c.cfg.Log.Info(msg, slog.String("prefix", c.cfg.Topic+"."))
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func (c *Consumer) tableTopics(ctx context.Context) ([]string, error) {
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("listing kafka topics: %w", err)
	}
	var out []string
	for _, t := range md.Topics {
		if strings.HasPrefix(t.Name, c.cfg.Topic+".") && t.Name != c.cfg.DeadLetterTopic {
			out = append(out, t.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (c *Consumer) consume(ctx context.Context, topics []string) error {
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:     c.cfg.Brokers,
		GroupID:     c.cfg.GroupID,
		GroupTopics: topics,
		Dialer: &kafkago.Dialer{
			ClientID:      c.cfg.ClientID,
			Timeout:       5 * time.Second,
			DualStack:     true,
			TLS:           c.cfg.TLS,
			SASLMechanism: c.cfg.SASL,
		},
		QueueCapacity: c.cfg.MaxBatch,
		MinBytes:      1,
		MaxBytes:      4 << 20,
		// The broker answers a fetch as soon as one byte is there, so MaxWait
		// costs no latency; but kafka-go also uses it as the deadline of the
		// whole response, which a large backlog needs time to fill.
		MaxWait:                5 * time.Second,
		ReadBatchTimeout:       10 * time.Second,
		HeartbeatInterval:      c.cfg.HeartbeatInterval,
		SessionTimeout:         c.cfg.SessionTimeout,
		RebalanceTimeout:       c.cfg.SessionTimeout,
		JoinGroupBackoff:       500 * time.Millisecond,
		CommitInterval:         0, // synchronous: CommitMessages returns once committed
		StartOffset:            kafkago.FirstOffset,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		ReadBackoffMin:         50 * time.Millisecond,
		ReadBackoffMax:         time.Second,
		MaxAttempts:            3,
		ErrorLogger: kafkago.LoggerFunc(func(msg string, args ...any) {
			c.cfg.Log.Debug("kafka reader: " + fmt.Sprintf(msg, args...))
		}),
	})
	closed := false
	closeReader := func() {
		if !closed {
			closed = true
			if err := r.Close(); err != nil {
				c.cfg.Log.Warn("closing the kafka reader", slog.String("error", err.Error()))
			}
		}
	}
	defer closeReader()
	if c.Ready != nil {
		c.Ready()
		c.Ready = nil
	}
	// The batch in flight outlives ctx by up to ShutdownTimeout.
	applyCtx, cancelApply := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelApply()
	stopTimer := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.ShutdownTimeout, cancelApply) })
	defer stopTimer()

	batch := make([]kafkago.Message, 0, c.cfg.MaxBatch)
	lastTopicCheck := time.Now()
	var lastErrLog time.Time
	for {
		if ctx.Err() != nil {
			return nil
		}
		if c.cfg.TopicPerTable && time.Since(lastTopicCheck) > 30*time.Second {
			lastTopicCheck = time.Now()
			if ts, err := c.tableTopics(ctx); err == nil && !slices.Equal(ts, topics) {
				return errTopicsChanged
			}
		}
		m, err := c.fetch(ctx, r, time.Second)
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			c.idle()
			continue
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, io.EOF):
			return fmt.Errorf("the kafka reader closed: %w", err)
		default:
			if time.Since(lastErrLog) > 5*time.Second {
				c.cfg.Log.Warn("reading from kafka failed; retrying", slog.String("error", err.Error()))
				lastErrLog = time.Now()
			}
			continue
		}
		batch = append(batch[:0], m)
		// Take what else is already fetched, up to MaxBatch, waiting at
		// most 1ms: big batches when backlogged, no delay when idle.
		gctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		for len(batch) < c.cfg.MaxBatch {
			m, err := r.FetchMessage(gctx)
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		cancel()
		if err := c.handle(applyCtx, r, batch); err != nil {
			return err
		}
		clear(batch)
	}
}

func (c *Consumer) fetch(ctx context.Context, r *kafkago.Reader, wait time.Duration) (kafkago.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return r.FetchMessage(ctx)
}

// idle reports a zero replication lag while every partition this sink reads
// is caught up (no messages for a second).
func (c *Consumer) idle() {
	if c.cfg.Pipeline == nil || len(c.lags) == 0 {
		return
	}
	for _, ps := range c.lags {
		for _, l := range ps {
			if l > 0 {
				return
			}
		}
	}
	c.cfg.Pipeline.Applied(time.Now())
}

// handle decodes, applies, dead-letters and commits one batch.
func (c *Consumer) handle(ctx context.Context, r *kafkago.Reader, batch []kafkago.Message) error {
	changes := make([]change.Change, 0, len(batch))
	var dead []kafkago.Message
	var eventTime time.Time
	for i := range batch {
		m := &batch[i]
		ch, _, err := c.dec.Decode(m.Value)
		if err != nil {
			dead = append(dead, kafkago.Message{Key: m.Key, Value: m.Value, Headers: []kafkago.Header{
				{Key: HeaderError, Value: []byte(err.Error())},
				{Key: HeaderTopic, Value: []byte(m.Topic)},
				{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
				{Key: HeaderOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
			}})
			c.cfg.Log.Warn("undecodable kafka message; sending it to the dead-letter topic",
				slog.String("topic", m.Topic), slog.Int("partition", m.Partition), slog.Int64("offset", m.Offset),
				slog.String("reason", err.Error()), slog.String("dead_letter_topic", c.cfg.DeadLetterTopic))
			continue
		}
		if ch.CommitTime.After(eventTime) {
			eventTime = ch.CommitTime
		}
		changes = append(changes, ch)
	}
	if len(changes) > 0 {
		start := time.Now()
		st, err := c.apply.Apply(ctx, changes)
		if err != nil {
			if c.cfg.Pipeline != nil && !errors.Is(err, context.Canceled) {
				c.cfg.Pipeline.Errors.WithLabelValues("sink").Inc()
			}
			return fmt.Errorf("applying %d changes to Redis: %w", len(changes), err)
		}
		if pm := c.cfg.Pipeline; pm != nil {
			pm.ApplyDuration.Observe(time.Since(start).Seconds())
			pm.Batches.Inc()
			pm.BatchRows.Observe(float64(len(changes)))
			pm.RowsSkipped.Add(float64(st.Skipped))
			pm.RedisRetries.Add(float64(st.Retries))
			pm.ObserveApplied(changes)
			pm.Applied(eventTime)
		}
	}
	if len(dead) > 0 {
		if err := c.deadLetter(ctx, dead); err != nil {
			return err
		}
	}
	// Commit the newest offset of each partition.
	last := map[string]map[int]kafkago.Message{}
	for _, m := range batch {
		ps := last[m.Topic]
		if ps == nil {
			ps = map[int]kafkago.Message{}
			last[m.Topic] = ps
		}
		if prev, ok := ps[m.Partition]; !ok || m.Offset > prev.Offset {
			ps[m.Partition] = m
		}
	}
	commits := make([]kafkago.Message, 0, len(last))
	for _, ps := range last {
		for _, m := range ps {
			commits = append(commits, m)
		}
	}
	if err := r.CommitMessages(ctx, commits...); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.CommitErrors.Inc()
		}
		c.cfg.Log.Warn("committing kafka offsets failed (a rebalance?); the partitions' next owner applies "+
			"these messages again, which the version fence makes harmless", slog.String("error", err.Error()))
	}
	for _, m := range commits {
		lag := max(0, m.HighWaterMark-m.Offset-1)
		ps := c.lags[m.Topic]
		if ps == nil {
			ps = map[int]int64{}
			c.lags[m.Topic] = ps
		}
		ps[m.Partition] = lag
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.ConsumerLag.WithLabelValues(m.Topic, strconv.Itoa(m.Partition)).Set(float64(lag))
		}
	}
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.Consumed.Add(float64(len(batch)))
		c.cfg.Metrics.DeadLetters.Add(float64(len(dead)))
	}
	return nil
}

// deadLetter writes msgs to the dead-letter topic, retrying until Kafka
// acknowledges them or ctx ends: their offsets are committed only after.
func (c *Consumer) deadLetter(ctx context.Context, msgs []kafkago.Message) error {
	backoff := 100 * time.Millisecond
	for {
		err := c.dlq.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("writing %d messages to the dead-letter topic %s: %w", len(msgs), c.cfg.DeadLetterTopic, ctx.Err())
		}
		c.cfg.Log.Warn("writing to the dead-letter topic failed; retrying", slog.String("topic", c.cfg.DeadLetterTopic),
			slog.String("error", err.Error()))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("writing %d messages to the dead-letter topic %s: %w", len(msgs), c.cfg.DeadLetterTopic, ctx.Err())
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
