package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/compress/snappy"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/metrics"
)

func init() {
	// kafka-go's snappy writer defaults to s2's "better" encoder, which costs about twice the CPU of classic
	// snappy for batches a few percent smaller. The source compresses every message it publishes, so it uses the
	// classic speed (the output is plain snappy either way). kafka-go keeps one snappy codec per process; this
	// sets it before anything writes.
	compress.SnappyCodec.Compression = snappy.FasterCompression
}

// Common is what the producer and the consumer share.
type Common struct {
	// Brokers are host:port seeds.
	Brokers []string
	// Topic is the topic, or with TopicPerTable the prefix of the topics
	// <Topic>.<db>.<table>.
	Topic         string
	TopicPerTable bool
	ClientID      string
	// CreateTopic creates missing topics with Partitions and ReplicationFactor.
	CreateTopic       bool
	Partitions        int
	ReplicationFactor int
	TLS               *tls.Config
	SASL              sasl.Mechanism
	Metrics           *metrics.Kafka
	Log               *slog.Logger
}

func (c *Common) transport() *kafkago.Transport {
	return &kafkago.Transport{
		ClientID:    c.ClientID,
		TLS:         c.TLS,
		SASL:        c.SASL,
		DialTimeout: 5 * time.Second,
		IdleTimeout: 30 * time.Second,
		MetadataTTL: 2 * time.Second,
	}
}

func (c *Common) defaults() {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.ClientID == "" {
		c.ClientID = "binlogsync"
	}
	if c.Partitions <= 0 {
		c.Partitions = 1
	}
	if c.ReplicationFactor <= 0 {
		c.ReplicationFactor = 1
	}
}

// TopicFor is the topic of a table's changes: Topic, or with TopicPerTable
// "<Topic>.<db>.<table>" with every character Kafka does not allow in a topic
// name (other than [a-zA-Z0-9._-]) replaced by '_', cut to 249 characters.
func (c *Common) TopicFor(db, table string) string {
	if !c.TopicPerTable {
		return c.Topic
	}
	name := c.Topic + "." + sanitize(db) + "." + sanitize(table)
	if len(name) > 249 {
		name = name[:249]
	}
	return name
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// ErrTopicMissing is returned (wrapped) by EnsureTopics for a topic that does not exist while CreateTopic is off.
// The producer stops on it rather than retry: waiting would stall the stream behind a warning.
var ErrTopicMissing = errors.New("kafka topic does not exist")

// EnsureTopics checks that the topics exist, creating the missing ones when
// CreateTopic is set.
func (c *Common) EnsureTopics(ctx context.Context, client *kafkago.Client, topics ...string) error {
	md, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("reading the metadata of topics %s from kafka.brokers %s: %w",
			strings.Join(topics, ", "), strings.Join(c.Brokers, ","), err)
	}
	var missing []string
	for _, t := range md.Topics {
		switch {
		case t.Error == nil:
		case errors.Is(t.Error, kafkago.UnknownTopicOrPartition):
			missing = append(missing, t.Name)
		default:
			return fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !c.CreateTopic {
		return fmt.Errorf("%w: %s; create it (with the partitions and replication you want) or set "+
			"kafka.create_topic: true", ErrTopicMissing, strings.Join(missing, ", "))
	}
	req := &kafkago.CreateTopicsRequest{}
	for _, t := range missing {
		req.Topics = append(req.Topics, kafkago.TopicConfig{Topic: t, NumPartitions: c.Partitions, ReplicationFactor: c.ReplicationFactor})
	}
	res, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("creating kafka topics %s: %w", strings.Join(missing, ", "), err)
	}
	for t, err := range res.Errors {
		if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
			return fmt.Errorf("creating kafka topic %s (%d partitions, replication factor %d): %w",
				t, c.Partitions, c.ReplicationFactor, err)
		}
	}
	c.Log.Info("created kafka topics", slog.String("topics", strings.Join(missing, ",")),
		slog.Int("partitions", c.Partitions), slog.Int("replication_factor", c.ReplicationFactor))
	return nil
}

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	Common
	// Compression is none | gzip | snappy | lz4 | zstd.
	Compression string
	// BatchBytes and BatchSize bound one partition's batch in a produce request.
	BatchBytes int
	BatchSize  int
	// BatchTimeout is how long a partial batch waits for more messages
	// (kafka-go's default of 1s is never used; 0 means 2ms).
	BatchTimeout time.Duration
	// RequiredAcks is all (default) | one | none. Only all makes the
	// checkpoint mean "durable in Kafka".
	RequiredAcks string
	// MaxInFlight bounds the messages handed to Kafka and not yet
	// acknowledged (default 16384); the source waits beyond it. At the
	// publish rates of one source (tens of thousands of messages per second,
	// acknowledged within milliseconds) a few thousand are in flight, so a
	// larger window only holds more memory while the brokers are away.
	MaxInFlight int
}

// Producer publishes change batches to Kafka.
type Producer struct {
	cfg    ProducerConfig
	s      *sender
	client *kafkago.Client
	tr     *tracker

	mu      sync.Mutex
	failed  error
	fail    chan struct{}
	lastLog time.Time // of the last "retrying" warning

	topics map[string]bool // topics known to exist
}

// NewProducer builds a Producer; it connects on first use.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	cfg.defaults()
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 16384
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 2 * time.Millisecond
	}
	var comp kafkago.Compression
	switch cfg.Compression {
	case "", "none":
	case "gzip":
		comp = kafkago.Gzip
	case "snappy":
		comp = kafkago.Snappy
	case "lz4":
		comp = kafkago.Lz4
	case "zstd":
		comp = kafkago.Zstd
	default:
		return nil, fmt.Errorf("kafka.compression %q: use none, gzip, snappy, lz4 or zstd", cfg.Compression)
	}
	acks := kafkago.RequireAll
	switch cfg.RequiredAcks {
	case "", "all":
	case "one":
		acks = kafkago.RequireOne
	case "none":
		acks = kafkago.RequireNone
	default:
		return nil, fmt.Errorf("kafka.required_acks %q: use all, one or none", cfg.RequiredAcks)
	}
	if acks != kafkago.RequireAll {
		cfg.Log.Warn("kafka.required_acks is not all: the checkpoint may pass messages a broker failure loses",
			slog.String("required_acks", cfg.RequiredAcks))
	}
	tp := cfg.transport()
	p := &Producer{
		cfg:    cfg,
		client: &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: tp, Timeout: 10 * time.Second},
		tr:     newTracker(cfg.MaxInFlight, func(change.Position) {}),
		fail:   make(chan struct{}),
		topics: map[string]bool{},
	}
	p.s = newSender(tp, kafkago.TCP(cfg.Brokers...), acks, comp, cfg.BatchTimeout, cfg.BatchSize, cfg.BatchBytes,
		p.completion, func(err error) { p.retrying("publishing", err) })
	return p, nil
}

// InFlight is the number of messages handed to Kafka and not yet acknowledged.
func (p *Producer) InFlight() float64 { return float64(p.tr.inFlight()) }

func (p *Producer) completion(msgs []kafkago.Message, err error) {
	if err != nil {
		p.mu.Lock()
		if p.failed == nil {
			topic, part := "", 0
			if len(msgs) > 0 {
				topic, part = msgs[0].Topic, msgs[0].Partition
			}
			p.failed = fmt.Errorf("kafka did not accept %d messages for %s[%d]: %w", len(msgs), topic, part, err)
			close(p.fail)
		}
		p.mu.Unlock()
		return
	}
	for i := range msgs {
		if seq, ok := msgs[i].WriterData.(uint64); ok {
			if aerr := p.tr.ack(seq); aerr != nil {
				p.cfg.Log.Error("tracking kafka acknowledgements", slog.String("error", aerr.Error()))
			}
		}
	}
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.Produced.Add(float64(len(msgs)))
	}
}

// retrying counts a failed attempt that is retried (a produce request the sender sends again, or a step of Run)
// and logs it, at most every 5 s.
func (p *Producer) retrying(what string, err error) {
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.ProduceErrors.Inc()
	}
	p.mu.Lock()
	log := time.Since(p.lastLog) > 5*time.Second
	if log {
		p.lastLog = time.Now()
	}
	p.mu.Unlock()
	if !log {
		return
	}
	if msg := err.Error(); strings.Contains(msg, "topic not found") || strings.Contains(msg, "Unknown Topic Or Partition") {
		// The topic existed when publishing began: it was deleted while streaming.
		p.cfg.Log.Error("a kafka topic this source publishes to does not exist any more (deleted while streaming?); "+
			"publishing waits until it exists again. Messages the sinks had not applied are lost with it: create "+
			"the topic, then follow the runbook's \"Kafka lost messages\"", slog.String("doing", what),
			slog.String("error", msg), slog.Int("unacknowledged", p.tr.inFlight()))
		return
	}
	p.cfg.Log.Warn("kafka unavailable; retrying", slog.String("doing", what), slog.String("error", err.Error()),
		slog.Int("unacknowledged", p.tr.inFlight()))
}

func (p *Producer) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// Check connects to the brokers and checks (or creates) the topic; with
// TopicPerTable topics are checked as tables appear.
func (p *Producer) Check(ctx context.Context) error {
	if p.cfg.TopicPerTable {
		_, err := p.client.Metadata(ctx, &kafkago.MetadataRequest{})
		if err != nil {
			return fmt.Errorf("connecting to kafka.brokers %s: %w", strings.Join(p.cfg.Brokers, ","), err)
		}
		return nil
	}
	if err := p.cfg.EnsureTopics(ctx, p.client, p.cfg.Topic); err != nil {
		return err
	}
	p.topics[p.cfg.Topic] = true
	return nil
}

// Run publishes the batches from in until in is closed and every message is
// acknowledged (nil), ctx ends, or Kafka refuses messages for good. It calls
// advance with a batch's boundary once that batch's messages and every
// earlier one were acknowledged, in order; start is where the source started
// (it names the binlog files in the messages).
//
// While the brokers are unreachable, Run keeps retrying; once MaxInFlight
// messages wait for acknowledgement it stops reading in, so the source waits
// with bounded memory.
func (p *Producer) Run(ctx context.Context, start change.Position, in <-chan *change.Batch, advance func(change.Position)) error {
	p.tr.mu.Lock()
	p.tr.advance = advance
	p.tr.mu.Unlock()
	names := fileNamer{}
	names.set(start.File)
	gtid, server := start.GTIDSet, start.ServerUUID
	chunkMax := max(1, p.tr.window()/2)
	var buf []byte
	msgs := make([]kafkago.Message, 0, 256)
	for {
		var b *change.Batch
		var ok bool
		select {
		case b, ok = <-in:
		case <-p.fail:
			return p.failure()
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return p.drain(ctx)
		}
		for done := 0; done < len(b.Changes); {
			chunk := b.Changes[done:min(len(b.Changes), done+chunkMax)]
			done += len(chunk)
			first, err := p.reserve(ctx, len(chunk))
			if err != nil {
				return err
			}
			buf = make([]byte, 0, 512*len(chunk))
			msgs = msgs[:0]
			for i := range chunk {
				c := &chunk[i]
				ks := len(buf)
				buf = Key(buf, c)
				ke := len(buf)
				src := Source{File: names.name(c.Version.File), Pos: c.Version.Pos, GTIDSet: gtid, Server: server}
				if buf, err = Encode(buf, c, src); err != nil {
					return err
				}
				topic := p.cfg.TopicFor(c.Table.DB, c.Table.Name)
				if !p.topics[topic] {
					if err := p.retry(ctx, "checking topic "+topic, func() error {
						return p.cfg.EnsureTopics(ctx, p.client, topic)
					}); err != nil {
						return err
					}
					p.topics[topic] = true
				}
				msgs = append(msgs, kafkago.Message{Topic: topic, Key: buf[ks:ke:ke], Value: buf[ke:len(buf):len(buf)],
					WriterData: first + uint64(i)})
			}
			if err := p.retry(ctx, "publishing", func() error { return p.s.write(ctx, msgs) }); err != nil {
				return err
			}
		}
		if b.Boundary != nil {
			p.tr.mark(*b.Boundary)
			names.set(b.Boundary.File)
			if b.Boundary.GTIDSet != "" {
				gtid = b.Boundary.GTIDSet
			}
		}
	}
}

func (p *Producer) reserve(ctx context.Context, n int) (uint64, error) {
	first, err := p.tr.reserve(ctx, p.fail, n)
	if errors.Is(err, errStopped) {
		return 0, p.failure()
	}
	return first, err
}

// topicMissingGrace is how long a topic may be reported missing before the producer stops: metadata can lag a
// topic an operator has just created.
var topicMissingGrace = 10 * time.Second

// retry runs f until it succeeds, ctx ends or a message was refused for good.
func (p *Producer) retry(ctx context.Context, what string, f func() error) error {
	backoff := 100 * time.Millisecond
	var missingSince time.Time
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.ErrClosedPipe) {
			return fmt.Errorf("%s: the producer is closed", what)
		}
		if errors.Is(err, ErrTopicMissing) {
			if missingSince.IsZero() {
				missingSince = time.Now()
			}
			if time.Since(missingSince) >= topicMissingGrace {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		var tooLarge kafkago.MessageTooLargeError
		if errors.As(err, &tooLarge) {
			return fmt.Errorf("%s: a message is larger than kafka.batch_bytes; raise it (and the topic's max.message.bytes): %w", what, err)
		}
		if ferr := p.failure(); ferr != nil {
			return ferr
		}
		p.retrying(what, err)
		select {
		case <-time.After(backoff):
		case <-p.fail:
			return p.failure()
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// drain waits until every message handed to Kafka is acknowledged.
func (p *Producer) drain(ctx context.Context) error {
	err := p.tr.wait(ctx, p.fail)
	if errors.Is(err, errStopped) {
		return p.failure()
	}
	return err
}

// Close sends what is queued and stops, waiting at most until ctx ends for
// messages still in flight (their boundaries were not checkpointed, so they
// are sent again after a restart).
func (p *Producer) Close(ctx context.Context) error {
	if err := p.s.close(ctx); err != nil {
		return fmt.Errorf("closing the kafka producer: %d messages still unacknowledged: %w", p.tr.inFlight(), err)
	}
	return nil
}

// fileNamer rebuilds binlog file names from file sequence numbers, using the
// base name and digit count of a known file ("mysql-bin.000042").
type fileNamer struct {
	base  string
	width int
	seq   uint32
	cache string
}

func (f *fileNamer) set(name string) {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) {
		return
	}
	seq, err := change.FileSeq(name)
	if err != nil {
		return
	}
	f.base, f.width, f.seq, f.cache = name[:i], len(name)-i, seq, name
}

func (f *fileNamer) name(seq uint32) string {
	if seq == f.seq && f.cache != "" {
		return f.cache
	}
	if f.width == 0 {
		return ""
	}
	f.seq, f.cache = seq, fmt.Sprintf("%s%0*d", f.base, f.width, seq)
	return f.cache
}

// SetMetrics sets the collectors the producer reports to; call it before Run.
func (p *Producer) SetMetrics(m *metrics.Kafka) { p.cfg.Metrics = m }
