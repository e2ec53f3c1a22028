package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
)

// sender publishes messages in produce requests that each carry a batch for every partition their broker leads,
// as the Java client does. kafka-go's Writer sends one request per partition batch: at a steady load spread over
// n partitions that is n requests, n wake-ups of the source and n appends in the broker for every batch timeout,
// where one request does. The sender keeps kafka-go's wire protocol, connection pool and metadata cache (its
// Transport), and the Writer's guarantees:
//
//   - a message goes to the partition kafka-go's Murmur2Balancer (the Java client's partitioner) picks for its key;
//   - a partition's messages are sent in the order written, one request in flight at a time, and a failed batch is
//     sent again before anything written after it;
//   - transient errors (network, leader changes, a broker away) are retried with backoff until Close gives up;
//     errors Kafka marks as not transient for a partition (a message too large, authorisation) fail the batch,
//     and nothing more is sent after it;
//   - done is called once per batch, with the batch's messages in order, when Kafka acknowledged it or it failed.
//
// A round starts when a partition's batch is full (batchSize messages or batchBytes), when the oldest waiting
// message has waited linger, or at close; it takes up to a full batch of every partition. While one round is in
// flight the next accumulates, so batches grow with the load and latency stays at one round trip plus linger.
type sender struct {
	tr         *kafkago.Transport
	addr       net.Addr
	acks       kafkago.RequiredAcks
	attrs      protocol.Attributes
	linger     time.Duration
	batchSize  int
	batchBytes int
	maxRound   int // bytes of one round (maxRoundBytes)
	timeout    time.Duration
	done       func(msgs []kafkago.Message, err error)
	retrying   func(err error) // a round failed and will be sent again

	wake chan struct{} // cap 1: something was queued or close began

	mu       sync.Mutex
	queues   map[topicPart]*partQueue
	order    []*partQueue // queues in creation order, for stable rounds
	queued   int          // messages in queues
	oldest   time.Time    // when the oldest queued message was written
	full     bool         // some queue holds a full batch
	closing  bool
	failed   error            // the first permanent error: nothing more is sent
	next     int              // the queue (in order) that leads the next round
	parts    map[string][]int // partition ids 0..n-1 of each known topic
	leaders  map[topicPart]int32
	metaTime time.Time // when parts and leaders were last refreshed

	balancer kafkago.Murmur2Balancer
	cancel   context.CancelFunc
	stopped  chan struct{}
}

type topicPart struct {
	topic     string
	partition int32
}

type partQueue struct {
	key   topicPart
	msgs  []kafkago.Message
	bytes int
}

// maxRoundBytes bounds one produce request (the brokers refuse requests over socket.request.max.bytes, 100 MiB
// by default); a round takes whole partition batches up to it.
const maxRoundBytes = 16 << 20

// batchHeader is the size of a record batch's header (format v2).
const batchHeader = 61

// recordOverhead approximates a record's framing in a batch (length, attributes, deltas, header count).
const recordOverhead = 16

func msgSize(m *kafkago.Message) int { return len(m.Key) + len(m.Value) + recordOverhead }

func newSender(tr *kafkago.Transport, addr net.Addr, acks kafkago.RequiredAcks, comp kafkago.Compression,
	linger time.Duration, batchSize, batchBytes int, done func([]kafkago.Message, error), retrying func(error)) *sender {
	if batchSize <= 0 {
		batchSize = 256
	}
	if batchBytes <= 0 {
		batchBytes = 1 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &sender{
		tr: tr, addr: addr, acks: acks, attrs: protocol.Attributes(comp) & 7, linger: linger,
		batchSize: batchSize, batchBytes: batchBytes, maxRound: max(maxRoundBytes, batchBytes),
		timeout: 10 * time.Second, done: done, retrying: retrying,
		wake:    make(chan struct{}, 1),
		queues:  map[topicPart]*partQueue{},
		parts:   map[string][]int{},
		leaders: map[topicPart]int32{},
		cancel:  cancel,
		stopped: make(chan struct{}),
	}
	go func() {
		defer close(s.stopped)
		s.run(ctx)
	}()
	return s
}

func (s *sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// write queues msgs, each for its Topic. It blocks only to learn a new topic's partitions; on error nothing was
// queued.
func (s *sender) write(ctx context.Context, msgs []kafkago.Message) error {
	last := ""
	for i := range msgs {
		if size := msgSize(&msgs[i]) + batchHeader; size > s.batchBytes {
			return kafkago.MessageTooLargeError{Message: msgs[i], Remaining: msgs[i+1:]}
		}
		topic := msgs[i].Topic
		if topic == last {
			continue
		}
		last = topic
		s.mu.Lock()
		_, known := s.parts[topic]
		s.mu.Unlock()
		if !known {
			if err := s.refresh(ctx, topic); err != nil {
				return err
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if s.closing {
		return io.ErrClosedPipe
	}
	now := time.Now()
	for i := range msgs {
		if len(s.parts[msgs[i].Topic]) == 0 {
			return fmt.Errorf("topic %s: no partitions known", msgs[i].Topic)
		}
	}
	if s.queued == 0 {
		s.oldest = now
	}
	wake := s.queued == 0
	for i := range msgs {
		m := msgs[i]
		key := topicPart{m.Topic, int32(s.balancer.Balance(m, s.parts[m.Topic]...))}
		m.Partition = int(key.partition)
		q := s.queues[key]
		if q == nil {
			q = &partQueue{key: key}
			s.queues[key] = q
			s.order = append(s.order, q)
		}
		q.msgs = append(q.msgs, m)
		q.bytes += msgSize(&m)
		s.queued++
		if !s.full && (len(q.msgs) >= s.batchSize || q.bytes >= s.batchBytes) {
			s.full, wake = true, true
		}
	}
	if wake {
		s.signal()
	}
	return nil
}

// refresh reads the partitions and leaders of topics (every known topic when none is named) from the transport's
// metadata cache, which kafka-go refreshes every MetadataTTL (2 s, set in Common.transport): after a leader change
// the batches for the moved partitions are retried until the cache shows the new leader.
func (s *sender) refresh(ctx context.Context, topics ...string) error {
	if len(topics) == 0 {
		s.mu.Lock()
		for t := range s.parts {
			topics = append(topics, t)
		}
		s.mu.Unlock()
		if len(topics) == 0 {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	r, err := s.tr.RoundTrip(ctx, s.addr, &metadataAPI.Request{TopicNames: topics})
	if err != nil {
		return err
	}
	md := r.(*metadataAPI.Response)
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, t := range md.Topics {
		if t.ErrorCode != 0 {
			errs = append(errs, fmt.Errorf("topic %s: %w", t.Name, kafkago.Error(t.ErrorCode)))
			continue
		}
		if len(t.Partitions) == 0 {
			errs = append(errs, fmt.Errorf("topic %s has no partitions", t.Name))
			continue
		}
		ids := make([]int, len(t.Partitions))
		for i := range ids {
			ids[i] = i
		}
		s.parts[t.Name] = ids
		for _, p := range t.Partitions {
			s.leaders[topicPart{t.Name, p.PartitionIndex}] = p.LeaderID
		}
	}
	s.metaTime = time.Now()
	return errors.Join(errs...)
}

// batch is one partition's part of a round.
type batch struct {
	q    *partQueue
	msgs []kafkago.Message
}

func (s *sender) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	backoff := time.Duration(0)
	for {
		s.mu.Lock()
		for !(s.queued > 0 && (s.full || s.closing || time.Since(s.oldest) >= s.linger)) {
			if s.queued == 0 && s.closing {
				s.mu.Unlock()
				return
			}
			var wait <-chan time.Time
			if s.queued > 0 {
				timer.Reset(s.linger - time.Since(s.oldest))
				wait = timer.C
			}
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-wait:
			case <-ctx.Done():
				return
			}
			timer.Stop()
			s.mu.Lock()
		}
		round := s.take()
		stale := time.Since(s.metaTime) > 2*time.Second
		s.mu.Unlock()

		if stale {
			_ = s.refresh(ctx) // a failure shows in the round's result
		}
		retry, err := s.send(ctx, round)
		if ctx.Err() != nil {
			return
		}
		if len(retry) == 0 {
			backoff = 0
			continue
		}
		s.requeue(retry)
		s.retrying(err)
		backoff = min(max(2*backoff, 100*time.Millisecond), time.Second)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		_ = s.refresh(ctx)
	}
}

// take removes up to a full batch from the front of every queue. The caller holds mu.
func (s *sender) take() []batch {
	var round []batch
	s.full = false
	roundBytes := 0
	start := s.next % len(s.order)
	s.next = start + 1 // partitions left out of a full round lead the next
	for i := range s.order {
		q := s.order[(start+i)%len(s.order)]
		if len(q.msgs) == 0 {
			continue
		}
		if roundBytes > 0 && roundBytes+min(q.bytes, s.batchBytes) > s.maxRound {
			break // the broker's request size limit; the rest go next
		}
		n, size := 0, 0
		for n < len(q.msgs) && n < s.batchSize {
			ms := msgSize(&q.msgs[n])
			if n > 0 && size+ms > s.batchBytes {
				break
			}
			size += ms
			n++
		}
		roundBytes += size
		round = append(round, batch{q: q, msgs: q.msgs[:n:n]})
		if n == len(q.msgs) {
			q.msgs = nil // the sent messages' array is released with the round
		} else {
			q.msgs = q.msgs[n:]
		}
		q.bytes -= size
		s.queued -= n
		if len(q.msgs) >= s.batchSize || q.bytes >= s.batchBytes {
			s.full = true
		}
	}
	if s.queued > 0 {
		// What is left has waited at least as long as what was taken: send it with the next round.
		s.full = true
	}
	return round
}

// requeue puts batches that failed back in front of their queues.
func (s *sender) requeue(batches []batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return // nothing more is sent
	}
	for _, b := range batches {
		q := b.q
		q.msgs = append(b.msgs, q.msgs...)
		for i := range b.msgs {
			q.bytes += msgSize(&b.msgs[i])
		}
		s.queued += len(b.msgs)
	}
	s.full = true
}

// send sends a round, one request per leader, and returns the batches to send again with the first error.
func (s *sender) send(ctx context.Context, round []batch) ([]batch, error) {
	byLeader := map[int32][]batch{}
	var leaders []int32
	s.mu.Lock()
	for _, b := range round {
		l, ok := s.leaders[b.q.key]
		if !ok {
			l = -1 // unknown: the transport finds it, or the request fails and is retried after a refresh
		}
		if _, seen := byLeader[l]; !seen {
			leaders = append(leaders, l)
		}
		byLeader[l] = append(byLeader[l], b)
	}
	s.mu.Unlock()
	if len(leaders) == 1 {
		return s.sendTo(ctx, byLeader[leaders[0]])
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var retry []batch
	var first error
	for _, l := range leaders {
		wg.Go(func() {
			r, err := s.sendTo(ctx, byLeader[l])
			mu.Lock()
			retry = append(retry, r...)
			if first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return retry, first
}

// sendTo sends batches whose partitions share a leader in one produce request.
func (s *sender) sendTo(ctx context.Context, batches []batch) ([]batch, error) {
	req := &produceAPI.Request{Acks: int16(s.acks), Timeout: int32(s.timeout / time.Millisecond)}
	now := time.Now() // the records' timestamp: when they are sent, as kafka-go's Writer stamps them
	topicIdx := map[string]int{}
	for _, b := range batches {
		i, ok := topicIdx[b.q.key.topic]
		if !ok {
			i = len(req.Topics)
			topicIdx[b.q.key.topic] = i
			req.Topics = append(req.Topics, produceAPI.RequestTopic{Topic: b.q.key.topic})
		}
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, produceAPI.RequestPartition{
			Partition: b.q.key.partition,
			RecordSet: protocol.RecordSet{Attributes: s.attrs, Records: &records{msgs: b.msgs, time: now}},
		})
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout+5*time.Second)
	res, err := s.tr.RoundTrip(rctx, s.addr, req)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Whatever failed the request as a whole (a connection refused or closed, a broker that left the
		// layout, a SASL handshake cut by a restart) is retried: nothing was appended, or a retry appends a
		// duplicate, which the version fence makes harmless. A lasting cause shows in the logged warnings.
		return batches, err
	}
	if s.acks == kafkago.RequireNone {
		for _, b := range batches {
			s.finish(b, nil)
		}
		return nil, nil
	}
	codes := map[topicPart]error{}
	answered := map[topicPart]bool{}
	for _, t := range res.(*produceAPI.Response).Topics {
		for _, p := range t.Partitions {
			key := topicPart{t.Topic, p.Partition}
			answered[key] = true
			if p.ErrorCode != 0 {
				codes[key] = kafkago.Error(p.ErrorCode)
			}
		}
	}
	var retry []batch
	var first error
	for _, b := range batches {
		key := b.q.key
		err, failed := codes[key]
		switch {
		case !answered[key]:
			err = fmt.Errorf("the broker did not answer for %s[%d]", key.topic, key.partition)
		case !failed:
			s.finish(b, nil)
			continue
		case !err.(kafkago.Error).Temporary():
			s.finish(b, err)
			continue
		}
		retry = append(retry, b)
		if first == nil {
			first = fmt.Errorf("%s[%d]: %w", key.topic, key.partition, err)
		}
	}
	return retry, first
}

// finish reports a batch to done, then drops its messages from the queue's array, which may live on (while the
// queue never empties) and would otherwise keep the messages' buffers.
//
// After a permanent error nothing more is sent: the messages queued behind the refused ones would leave a gap in
// their partitions, and after the restart that follows, the refused messages would come after them. write returns
// the error from then on.
func (s *sender) finish(b batch, err error) {
	if err != nil {
		s.mu.Lock()
		if s.failed == nil {
			s.failed = err
			for _, q := range s.order {
				clear(q.msgs)
				q.msgs, q.bytes = nil, 0
			}
			s.queued, s.full = 0, false
		}
		s.mu.Unlock()
	}
	s.done(b.msgs, err)
	clear(b.msgs)
}

// close sends what is queued and stops, or gives up when ctx ends. Messages given up on are not reported to done.
func (s *sender) close(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.signal()
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		s.cancel()
		<-s.stopped
		return ctx.Err()
	}
}

// records reads a batch's messages as a protocol.RecordReader.
type records struct {
	msgs       []kafkago.Message
	time       time.Time
	i          int
	rec        protocol.Record
	key, value bytesReader
}

type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }

func (r *records) ReadRecord() (*protocol.Record, error) {
	if r.i >= len(r.msgs) {
		return nil, io.EOF
	}
	m := &r.msgs[r.i]
	r.i++
	r.rec = protocol.Record{Time: r.time}
	if m.Key != nil {
		r.key.Reset(m.Key)
		r.rec.Key = &r.key
	}
	if m.Value != nil {
		r.value.Reset(m.Value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}
