package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// Starter is an Applier that can begin a batch while the one before is still in flight, keeping the order of
// their changes (*sink.Sink is one). The consumer then keeps two batches in flight, so that Redis does not wait
// while the next batch is handed over and its first pipeline rendered.
type Starter interface {
	Start(ctx context.Context, changes []change.Change) *sink.Pending
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
	// CommitInterval is the least time between two offset commits (0: commit
	// after every applied batch).
	CommitInterval time.Duration
	// ShutdownTimeout bounds how long the batch in flight may take to apply
	// and commit once Run's ctx ended (default 10s).
	ShutdownTimeout time.Duration
	// Pipeline receives the apply metrics (rows applied, lag); may be nil.
	Pipeline *metrics.Metrics
	// TopicCheckInterval is how often the per-table topics are listed again, to read the topics of tables that
	// appeared since (default 30s).
	TopicCheckInterval time.Duration
	// Selected, when set, reports whether this sink replicates db.table (its tables.include and exclude). The
	// messages of other tables are committed without being applied, counted in
	// binlogsync_kafka_ignored_messages_total and logged once per table.
	Selected func(db, table string) bool
}

// Consumer reads the change topics as a member of a consumer group, applies
// the changes and commits the offsets once they are in Redis.
type Consumer struct {
	cfg    ConsumerConfig
	apply  Applier
	dec    *Decoder
	client *kafkago.Client
	dlq    *kafkago.Writer
	lags   map[topicPartition]partitionLag // partitions applied from recently
	// appliedAny is set once the sink applied a message: before that an idle fetch may only mean no assignment yet.
	appliedAny bool
	// lastReaderWarn is when readerError last warned, lastReaderErr when it was last called (UnixNano).
	lastReaderWarn, lastReaderErr atomic.Int64
	// pastEnd is set when the reader found its offset past a partition's end while reading (readerError).
	pastEnd atomic.Pointer[string]
	// ends is the highest end (high-water mark) or offset seen of each partition (checkEnds, in the fetcher).
	ends map[topicPartition]int64
	// Ready, when set, is called once the first reader is created.
	Ready func()
	// selected caches Selected per decoded table; ignored holds the tables whose messages were ignored, to log
	// each once. Used by decode only.
	selected map[*change.Table]bool
	ignored  map[string]bool
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
	if cfg.TopicCheckInterval <= 0 {
		cfg.TopicCheckInterval = 30 * time.Second
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
		lags:   map[topicPartition]partitionLag{},
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

// partitionCounts returns the number of partitions of each topic, 0 for a topic that does not exist.
func (c *Consumer) partitionCounts(ctx context.Context, topics []string) (map[string]int, error) {
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(topics))
	for _, t := range topics {
		out[t] = 0
	}
	for _, t := range md.Topics {
		if t.Error == nil {
			out[t.Name] = len(t.Partitions)
		}
	}
	return out, nil
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
	// Read before the reader joins the group, so that the group's assignment sees these partitions or more.
	shape, _ := c.partitionCounts(ctx, topics)
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
		// A committed offset past a partition's end is an error, not a wait for the partition to grow to it.
		OffsetOutOfRangeError: true,
		ErrorLogger:           kafkago.LoggerFunc(c.readerError),
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

	// Three stages overlap: the fetcher takes messages from the reader and
	// decodes them, this goroutine applies one batch at a time in fetch order,
	// and the committer commits the newest applied offset of each partition
	// while the next batch is applied. At most one decoded batch waits
	// between fetcher and applier, so memory stays bounded (about four
	// batches with the reader's queue).
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	batches := make(chan *fetched, 1)
	fetchErr := make(chan error, 1)
	go func() {
		defer close(batches)
		fetchErr <- c.fetchLoop(fetchCtx, r, topics, shape, batches)
	}()
	cm := newCommitter(r.CommitMessages, c.cfg.CommitInterval, c.cfg.Log, c.cfg.Metrics)
	go cm.run(applyCtx)

	err := c.applyLoop(ctx, applyCtx, batches, cm)
	stopFetch()
	for range batches { // the fetcher returns once it sees its ctx ended
	}
	ferr := <-fetchErr
	// The last commit gets ShutdownTimeout, however the loop ended (a commit
	// waits while the group rebalances).
	commitTimer := time.AfterFunc(c.cfg.ShutdownTimeout, cancelApply)
	defer commitTimer.Stop()
	if cerr := cm.close(); cerr != nil {
		c.cfg.Log.Warn("the last offset commit did not finish; the partitions' next owner applies the "+
			"uncommitted messages again", slog.String("error", cerr.Error()))
	}
	switch {
	case err != nil:
		return err
	case ctx.Err() != nil:
		return nil
	}
	return ferr
}

// applyLoop applies the batches in fetch order and hands the messages of each applied batch to cm, until batches
// closes, ctx ends (the batches in flight are finished under applyCtx) or a batch fails. With a Starter it keeps
// up to two batches in flight: the next batch is begun while the one before is applied, and a batch's offsets go
// to cm only once it and every batch before it have finished.
func (c *Consumer) applyLoop(ctx, applyCtx context.Context, batches <-chan *fetched, cm *committer) error {
	st, overlap := c.apply.(Starter)
	type inflight struct {
		b       *fetched
		pending *sink.Pending
		start   time.Time
	}
	var prev *inflight
	finish := func() error {
		if prev == nil {
			return nil
		}
		p := prev
		prev = nil
		stats, err := p.pending.Wait()
		if err := c.applied(applyCtx, p.b, stats, err, p.start); err != nil {
			return err
		}
		cm.add(p.b.msgs)
		return nil
	}
	for {
		var prevDone <-chan struct{}
		if prev != nil {
			prevDone = prev.pending.Done()
		}
		var b *fetched
		select {
		case got, ok := <-batches:
			if !ok {
				return finish()
			}
			b = got
		case <-prevDone:
			if err := finish(); err != nil {
				return err
			}
			continue
		}
		if ctx.Err() != nil {
			return finish() // stopping: only the batches in flight are finished
		}
		if b.idle {
			if prev == nil {
				c.idle()
			}
			continue
		}
		if !overlap || len(b.changes) == 0 {
			if err := finish(); err != nil {
				return err
			}
			if err := c.handle(applyCtx, b); err != nil {
				return err
			}
			cm.add(b.msgs)
			continue
		}
		next := &inflight{b: b, pending: st.Start(applyCtx, b.changes), start: time.Now()}
		if err := finish(); err != nil {
			next.pending.Wait() // its lanes must not outlive the consumer
			return err
		}
		prev = next
	}
}

// fetched is one batch on its way from the fetcher to the applier.
type fetched struct {
	idle      bool // no message for a second: every partition read is caught up
	msgs      []kafkago.Message
	changes   []change.Change
	dead      []kafkago.Message // dead letters for the undecodable ones
	eventTime time.Time         // the newest commit time of changes
}

// fetchLoop takes batches of up to MaxBatch messages from r, decodes them
// and sends them to out, until ctx ends (nil), the topics changed
// (errTopicsChanged) or the reader closed.
func (c *Consumer) fetchLoop(ctx context.Context, r *kafkago.Reader, topics []string, shape map[string]int, out chan<- *fetched) error {
	lastTopicCheck := time.Now()
	var lastErrLog time.Time
	last := 0 // messages in the batch before
	for {
		if ctx.Err() != nil {
			return nil
		}
		if p := c.pastEnd.Load(); p != nil {
			return c.offsetsPastEnd(errors.New(*p))
		}
		if time.Since(lastTopicCheck) > c.cfg.TopicCheckInterval {
			lastTopicCheck = time.Now()
			if c.cfg.TopicPerTable {
				if ts, err := c.tableTopics(ctx); err == nil && !slices.Equal(ts, topics) {
					return errTopicsChanged
				}
			}
			// kafka-go assigns nothing of a topic that was missing when the group formed, and its watch of the
			// partitions takes the count it first reads as the one assigned: a topic created (again) meanwhile
			// was never read. A new count of partitions, or a topic that appeared, rejoins the group.
			if now, err := c.partitionCounts(ctx, topics); err == nil {
				if shape != nil && !maps.Equal(now, shape) {
					return errTopicsChanged
				}
				shape = now
			}
		}
		m, err := c.fetch(ctx, r, time.Second)
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			select {
			case out <- &fetched{idle: true}:
			default: // the applier is busy, so not idle
			}
			continue
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, kafkago.OffsetOutOfRange):
			return c.offsetsPastEnd(err)
		case errors.Is(err, io.EOF):
			// Only this consumer closes the reader, after this loop; an EOF
			// here is a broker that accepted a connection and closed it
			// (kafka-go passes such group errors through FetchMessage).
			// Retry like any other fetch error, without spinning.
			if time.Since(lastErrLog) > 5*time.Second {
				c.cfg.Log.Warn("a kafka connection was closed by the broker; retrying", slog.String("error", err.Error()))
				lastErrLog = time.Now()
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
			continue
		default:
			if time.Since(lastErrLog) > 5*time.Second {
				c.cfg.Log.Warn("reading from kafka failed; retrying", slog.String("error", err.Error()))
				lastErrLog = time.Now()
			}
			continue
		}
		// Sized like the batch before: at a steady load of small batches, room for MaxBatch messages (600 KiB)
		// per batch would be most of the sink's allocations.
		b := &fetched{msgs: make([]kafkago.Message, 1, min(c.cfg.MaxBatch, max(last, 16)))}
		b.msgs[0] = m
		// Take what else is already fetched, up to MaxBatch, waiting at
		// most 1ms: big batches when backlogged, no delay when idle.
		gctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		for len(b.msgs) < c.cfg.MaxBatch {
			m, err := r.FetchMessage(gctx)
			if err != nil {
				break
			}
			b.msgs = append(b.msgs, m)
		}
		cancel()
		last = len(b.msgs)
		if err := c.checkEnds(b.msgs); err != nil {
			return err
		}
		c.decode(b)
		select {
		case out <- b:
		case <-ctx.Done():
			return nil
		}
	}
}

// readerError counts an error kafka-go's reader met (it retries them) and logs it, at most one warning every
// 10 s, so that a broker outage shows on the sinks, not only on the source.
func (c *Consumer) readerError(msg string, args ...any) {
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.ConsumerErrors.Inc()
	}
	text := "kafka reader: " + fmt.Sprintf(msg, args...)
	switch {
	case strings.Contains(msg, "before the first offset"):
		// kafka-go skips to the partition's first message: the ones between were deleted (retention) before this
		// sink applied them.
		c.cfg.Log.Error("kafka deleted messages before the sinks applied them (the topic's retention is shorter "+
			"than the sinks' lag): Redis misses their changes. Run `reconciler run` to repair them, and keep "+
			"messages longer (retention.ms) or add sinks", slog.String("error", text))
		return
	case strings.Contains(msg, "passed the last offset"):
		c.pastEnd.CompareAndSwap(nil, &text)
	}
	now := time.Now().UnixNano()
	c.lastReaderErr.Store(now)
	if last := c.lastReaderWarn.Load(); now-last < int64(10*time.Second) || !c.lastReaderWarn.CompareAndSwap(last, now) {
		c.cfg.Log.Debug(text)
		return
	}
	c.cfg.Log.Warn("the sink's kafka reader met an error and retries (a rebalance, or brokers unreachable: check kafka.brokers and the brokers if it goes on)", slog.String("error", text))
}

func (c *Consumer) fetch(ctx context.Context, r *kafkago.Reader, wait time.Duration) (kafkago.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return r.FetchMessage(ctx)
}

// checkEnds fails when a partition's end (the high-water mark a fetch reports) is below an end or an offset this
// sink saw before: the topic was recreated or the partition lost messages, and the group's offsets no longer
// match it (offsetsPastEnd).
func (c *Consumer) checkEnds(msgs []kafkago.Message) error {
	if c.ends == nil {
		c.ends = map[topicPartition]int64{}
	}
	for _, m := range msgs {
		tp := topicPartition{m.Topic, m.Partition}
		seen := max(c.ends[tp], m.Offset+1)
		if m.HighWaterMark > 0 && m.HighWaterMark < seen {
			return c.offsetsPastEnd(fmt.Errorf("partition %d of %s ends at offset %d, below offset %d seen before",
				m.Partition, m.Topic, m.HighWaterMark, seen))
		}
		c.ends[tp] = max(seen, m.HighWaterMark)
	}
	return nil
}

// offsetsPastEnd is the error that stops the sink when the group's offset of a partition is past the partition's
// end: the topic was deleted and created again, or Kafka lost acknowledged messages (an unclean leader election).
// Reading on would skip the new messages up to the old offset; the changes lost in Kafka are Redis's drift.
func (c *Consumer) offsetsPastEnd(err error) error {
	return fmt.Errorf("kafka: the sink group %s's offset of a partition is past the partition's end, so the topic was "+
		"recreated or Kafka lost messages, and Redis may miss changes (%w). Stop every sink, reset the group's "+
		"offsets (kafka-consumer-groups.sh --bootstrap-server BROKER --group %s --reset-offsets --to-earliest "+
		"--all-topics --execute), start the sinks, then run `reconciler run` to repair what was lost",
		c.cfg.GroupID, err, c.cfg.GroupID)
}

// idle reports a zero replication lag while every partition this sink reads
// is caught up (no messages for a second). The lags of partitions nothing came from for staleLagAfter (given to
// another sink by a rebalance while they lagged) are forgotten first, or an idle sink would never report.
func (c *Consumer) idle() {
	if c.cfg.Pipeline == nil || !c.appliedAny {
		return
	}
	if time.Since(time.Unix(0, c.lastReaderErr.Load())) < readerErrorQuiet {
		return // nothing came because the brokers cannot be read (not because the sink caught up): the lag grows
	}
	c.recordLags(nil, time.Now())
	for _, l := range c.lags {
		if l.lag > 0 {
			return
		}
	}
	c.cfg.Pipeline.Applied(time.Now())
}

// decode fills b.changes and b.dead from b.msgs.
func (c *Consumer) decode(b *fetched) {
	b.changes = make([]change.Change, 0, len(b.msgs))
	for i := range b.msgs {
		m := &b.msgs[i]
		ch, _, err := c.dec.Decode(m.Value)
		if err != nil {
			b.dead = append(b.dead, kafkago.Message{Key: m.Key, Value: m.Value, Headers: []kafkago.Header{
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
		if !c.replicates(ch.Table) {
			continue
		}
		if ch.CommitTime.After(b.eventTime) {
			b.eventTime = ch.CommitTime
		}
		b.changes = append(b.changes, ch)
	}
}

// replicates reports whether this sink applies the messages of t (ConsumerConfig.Selected). It counts a message
// it does not, and logs the table's first.
func (c *Consumer) replicates(t *change.Table) bool {
	if c.cfg.Selected == nil {
		return true
	}
	sel, ok := c.selected[t]
	if !ok {
		if c.selected == nil {
			c.selected = map[*change.Table]bool{}
		}
		sel = c.cfg.Selected(t.DB, t.Name)
		c.selected[t] = sel
	}
	if sel {
		return true
	}
	name := t.DB + "." + t.Name
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.Ignored.WithLabelValues(name).Inc()
	}
	if c.ignored[name] {
		return false
	}
	if c.ignored == nil {
		c.ignored = map[string]bool{}
	}
	c.ignored[name] = true
	c.cfg.Log.Warn("ignoring the kafka messages of a table this sink's tables.include/exclude do not select; to "+
		"apply them, include the table, restart the sink and run `reconciler run --table` for the rows it ignored",
		slog.String("table", name))
	return false
}

// handle applies and dead-letters one decoded batch; its offsets may be
// committed once it returns nil.
func (c *Consumer) handle(ctx context.Context, b *fetched) error {
	var st sink.Stats
	var err error
	start := time.Now()
	if len(b.changes) > 0 {
		st, err = c.apply.Apply(ctx, b.changes)
	}
	return c.applied(ctx, b, st, err, start)
}

// applied records the outcome of applying b (begun at start): its metrics, its dead letters and its partitions'
// lags. Its offsets may be committed once it returns nil.
func (c *Consumer) applied(ctx context.Context, b *fetched, st sink.Stats, err error, start time.Time) error {
	if len(b.changes) > 0 {
		if err != nil {
			if c.cfg.Pipeline != nil && !errors.Is(err, context.Canceled) {
				c.cfg.Pipeline.Errors.WithLabelValues("sink").Inc()
			}
			return fmt.Errorf("applying %d changes to Redis: %w", len(b.changes), err)
		}
		if pm := c.cfg.Pipeline; pm != nil {
			pm.ApplyDuration.Observe(time.Since(start).Seconds())
			pm.Batches.Inc()
			pm.BatchRows.Observe(float64(len(b.changes)))
			pm.RowsSkipped.Add(float64(st.Skipped))
			pm.ObserveApplied(b.changes)
			pm.Applied(b.eventTime)
		}
	}
	if len(b.dead) > 0 {
		if err := c.deadLetter(ctx, b.dead); err != nil {
			return err
		}
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.DeadLetters.Add(float64(len(b.dead)))
		}
	}
	c.recordLags(b.msgs, time.Now())
	return nil
}

// recordLags records the lag after the newest message of each partition in msgs (a partition's messages come in
// offset order), and forgets the partitions nothing was applied from for staleLagAfter.
func (c *Consumer) recordLags(msgs []kafkago.Message, now time.Time) {
	lags := map[topicPartition]int64{}
	if len(msgs) > 0 {
		c.appliedAny = true
	}
	for i := range msgs {
		m := &msgs[i]
		lags[topicPartition{m.Topic, m.Partition}] = max(0, m.HighWaterMark-m.Offset-1)
	}
	for tp, lag := range lags {
		c.lags[tp] = partitionLag{lag: lag, at: now}
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.ConsumerLag.WithLabelValues(tp.topic, strconv.Itoa(tp.partition)).Set(float64(lag))
		}
	}
	// A partition this sink has applied nothing from for a while, while it
	// does apply from others, was given to another sink by a rebalance (or
	// has been idle): its last lag no longer describes anything this sink
	// does, and must not keep the sink from reporting that it caught up.
	for tp, l := range c.lags {
		if now.Sub(l.at) > staleLagAfter {
			delete(c.lags, tp)
			if c.cfg.Metrics != nil {
				c.cfg.Metrics.ConsumerLag.DeleteLabelValues(tp.topic, strconv.Itoa(tp.partition))
			}
		}
	}
}

// readerErrorQuiet is how long after an error of the reader an idle fetch is not taken for caught up.
const readerErrorQuiet = 10 * time.Second

// staleLagAfter is how long a partition's lag is kept without a message from it (see apply).
const staleLagAfter = 30 * time.Second

// partitionLag is a partition's lag after the newest message applied from it, and when that was.
type partitionLag struct {
	lag int64
	at  time.Time
}

// topicPartition names a partition.
type topicPartition struct {
	topic     string
	partition int
}

// committer commits offsets in the background: the applier adds the
// messages of each applied batch, and the committer commits the newest
// offset of every partition, coalescing whatever was added while the
// previous commit was in flight. Offsets are only added after their
// messages were applied, and a partition's offset never moves back (a
// replayed older message after a rebalance is not committed again), so a
// commit never covers a message that is not in Redis.
type committer struct {
	commit  func(context.Context, ...kafkago.Message) error
	log     *slog.Logger
	metrics *metrics.Kafka

	mu      sync.Mutex
	pending map[topicPartition]kafkago.Message
	high    map[topicPartition]int64 // the newest offset ever added
	count   int                      // messages added since the last commit

	kick     chan struct{} // capacity 1: there is something to commit
	stop     chan struct{} // closed by close: commit what is pending and return
	interval time.Duration // the least time between the starts of two commits
	done     chan struct{}
	err      error // the context error that stopped a final commit
}

func newCommitter(commit func(context.Context, ...kafkago.Message) error, interval time.Duration, log *slog.Logger,
	m *metrics.Kafka) *committer {
	return &committer{commit: commit, interval: interval, log: log, metrics: m, pending: map[topicPartition]kafkago.Message{},
		high: map[topicPartition]int64{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// add records applied messages (a partition's in offset order).
func (cm *committer) add(msgs []kafkago.Message) {
	if len(msgs) == 0 {
		return
	}
	cm.mu.Lock()
	for i := range msgs {
		m := &msgs[i]
		tp := topicPartition{m.Topic, m.Partition}
		if high, ok := cm.high[tp]; !ok || m.Offset > high {
			cm.high[tp] = m.Offset
			cm.pending[tp] = kafkago.Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
		}
	}
	cm.count += len(msgs)
	cm.mu.Unlock()
	select {
	case cm.kick <- struct{}{}:
	default:
	}
}

// run commits until close is called, then commits what is pending (within
// ctx) and returns.
func (cm *committer) run(ctx context.Context) {
	defer close(cm.done)
	wait := time.NewTimer(0)
	<-wait.C
	var last time.Time
	for {
		select {
		case <-cm.kick:
		case <-cm.stop:
			cm.flush(ctx)
			return
		}
		if d := cm.interval - time.Since(last); d > 0 {
			wait.Reset(d)
			select {
			case <-wait.C:
			case <-cm.stop:
				cm.flush(ctx)
				return
			}
		}
		last = time.Now()
		cm.flush(ctx)
	}
}

// close stops run after a last commit and returns the context error that
// cut a commit short, if any.
func (cm *committer) close() error {
	close(cm.stop)
	<-cm.done
	return cm.err
}

func (cm *committer) flush(ctx context.Context) {
	cm.mu.Lock()
	if len(cm.pending) == 0 {
		cm.mu.Unlock()
		return
	}
	msgs := make([]kafkago.Message, 0, len(cm.pending))
	for _, m := range cm.pending {
		msgs = append(msgs, m)
	}
	n := cm.count
	clear(cm.pending)
	cm.count = 0
	cm.mu.Unlock()
	if err := cm.commit(ctx, msgs...); err != nil {
		if ctx.Err() != nil {
			cm.err = ctx.Err()
			return
		}
		if cm.metrics != nil {
			cm.metrics.CommitErrors.Inc()
		}
		cm.log.Warn("committing kafka offsets failed (a rebalance?); the partitions' next owner applies "+
			"these messages again, which the version fence makes harmless", slog.String("error", err.Error()))
	}
	if cm.metrics != nil {
		cm.metrics.Consumed.Add(float64(n))
	}
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
