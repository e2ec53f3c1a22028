// Package pipeline connects the pieces: it applies batches from a transport to
// Redis and advances the checkpoint over what is applied.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/checkpoint"
	"github.com/binlogsync/binlogsync/metrics"
	"github.com/binlogsync/binlogsync/sink"
)

// Applier writes changes to Redis; *sink.Sink is one.
type Applier interface {
	Apply(ctx context.Context, changes []change.Change) (sink.Stats, error)
}

// Starter is an Applier that can begin a batch while the one before is still in flight, keeping the order of
// their changes (*sink.Sink is one). ApplyLoop then keeps two batches in flight, so that Redis does not wait
// while the next batch is gathered and rendered.
type Starter interface {
	Start(ctx context.Context, changes []change.Change) *sink.Pending
}

// Checkpointer stores the newest applied boundary, at most every Interval,
// and once more on Close. A boundary is only ever offered to it after every
// change before it has been applied (SPEC section 4).
type Checkpointer struct {
	Store    checkpoint.Store
	Interval time.Duration
	Metrics  *metrics.Metrics
	Log      *slog.Logger

	mu      sync.Mutex
	latest  change.Position
	saved   change.Position
	done    chan struct{}
	stopped chan struct{}
}

// Start begins periodic saving.
func (c *Checkpointer) Start() {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	c.done = make(chan struct{})
	c.stopped = make(chan struct{})
	go c.loop()
}

// Advance offers a boundary whose preceding changes are all applied.
func (c *Checkpointer) Advance(p change.Position) {
	c.mu.Lock()
	c.latest = p
	c.mu.Unlock()
}

func (c *Checkpointer) loop() {
	defer close(c.stopped)
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.done:
			return
		}
		if err := c.save(context.Background()); err != nil {
			c.Log.Error("storing the checkpoint failed; will retry", slog.String("error", err.Error()))
		}
	}
}

func (c *Checkpointer) save(ctx context.Context) error {
	c.mu.Lock()
	p := c.latest
	c.mu.Unlock()
	if p.IsZero() || p == c.saved {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Store.Save(ctx, p); err != nil {
		if c.Metrics != nil {
			c.Metrics.Errors.WithLabelValues("checkpoint").Inc()
		}
		return fmt.Errorf("storing checkpoint %s:%d: %w", p.File, p.Pos, err)
	}
	c.saved = p
	if c.Metrics != nil {
		c.Metrics.CheckpointSaved(p)
	}
	return nil
}

// Close stops periodic saving and stores the newest boundary once more.
func (c *Checkpointer) Close() error {
	close(c.done)
	<-c.stopped
	return c.save(context.Background())
}

// Saved is the newest stored boundary.
func (c *Checkpointer) Saved() change.Position { return c.saved }

// ApplyLoop takes batches from in, coalescing those already waiting up to
// MaxRows, applies them and advances the checkpointer over them.
type ApplyLoop struct {
	In      <-chan *change.Batch
	Sink    Applier
	Ckpt    *Checkpointer
	MaxRows int
	// MaxBytes bounds the size of the values gathered into one apply batch (change.Batch.Bytes); default 8 MiB.
	MaxBytes int
	Metrics  *metrics.Metrics
	Log      *slog.Logger
}

// Run applies until in is closed (returns nil) or ctx ends or applying fails.
// On ctx end, the batch in flight is abandoned (it was not checkpointed, so
// it is re-read on restart).
func (l *ApplyLoop) Run(ctx context.Context) error {
	if l.MaxRows <= 0 {
		l.MaxRows = 4096
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 8 << 20
	}
	if st, ok := l.Sink.(Starter); ok {
		return l.runOverlapped(ctx, st)
	}
	var changes []change.Change
	for {
		var first *change.Batch
		select {
		case b, ok := <-l.In:
			if !ok {
				return nil
			}
			first = b
		case <-ctx.Done():
			return ctx.Err()
		}
		changes = changes[:0]
		boundary, eventTime, closed := l.gather(first, &changes)
		start := time.Now()
		var st sink.Stats
		var err error
		if len(changes) > 0 {
			st, err = l.Sink.Apply(ctx, changes)
		}
		if err := l.applied(changes, st, err, start, boundary, eventTime); err != nil {
			return err
		}
		clear(changes) // let the batch's rows be collected
		if closed {
			return nil
		}
	}
}

// inflight is a batch begun by a Starter.
type inflight struct {
	changes   []change.Change
	pending   *sink.Pending
	start     time.Time
	boundary  *change.Position
	eventTime time.Time
}

// runOverlapped is Run with up to two batches in flight: the next batch is gathered and begun while the one before
// is applied, and the checkpoint advances over a batch only once it and every batch before it have finished.
func (l *ApplyLoop) runOverlapped(ctx context.Context, st Starter) error {
	var prev *inflight
	lastLen := 0 // changes in the batch gathered before
	finish := func() error {
		if prev == nil {
			return nil
		}
		stats, err := prev.pending.Wait()
		p := prev
		prev = nil
		return l.applied(p.changes, stats, err, p.start, p.boundary, p.eventTime)
	}
	defer func() {
		if prev != nil {
			prev.pending.Wait() // the lanes use ctx, which has ended; do not leave them running
		}
	}()
	for {
		var first *change.Batch
		var prevDone <-chan struct{}
		if prev != nil {
			prevDone = prev.pending.Done()
		}
		select {
		case b, ok := <-l.In:
			if !ok {
				return finish()
			}
			first = b
		case <-prevDone:
			if err := finish(); err != nil {
				return err
			}
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		// A new slice (the one before may still be in flight), sized like the one before: gathering many small
		// batches into a growing slice copies it over and over.
		changes := make([]change.Change, 0, min(max(len(first.Changes), lastLen), l.MaxRows+len(first.Changes)))
		boundary, eventTime, closed := l.gather(first, &changes)
		lastLen = len(changes)
		next := &inflight{changes: changes, start: time.Now(), boundary: boundary, eventTime: eventTime}
		if len(changes) > 0 {
			next.pending = st.Start(ctx, changes)
		}
		if err := finish(); err != nil {
			if next.pending != nil {
				next.pending.Wait()
			}
			return err
		}
		if next.pending == nil {
			if err := l.applied(nil, sink.Stats{}, nil, next.start, boundary, eventTime); err != nil {
				return err
			}
		} else {
			prev = next
		}
		if closed {
			return finish()
		}
	}
}

// gather appends first and the batches already waiting (up to MaxRows rows and MaxBytes bytes).
func (l *ApplyLoop) gather(first *change.Batch, changes *[]change.Change) (*change.Position, time.Time, bool) {
	boundary, eventTime := first.Boundary, first.EventTime
	*changes = append(*changes, first.Changes...)
	bytes := first.Bytes
	for len(*changes) < l.MaxRows && bytes < l.MaxBytes {
		select {
		case b, ok := <-l.In:
			if !ok {
				return boundary, eventTime, true
			}
			*changes = append(*changes, b.Changes...)
			bytes += b.Bytes
			if b.Boundary != nil {
				boundary = b.Boundary
			}
			eventTime = b.EventTime
		default:
			return boundary, eventTime, false
		}
	}
	return boundary, eventTime, false
}

// applied records a finished batch: its metrics, then the checkpoint advances over its boundary.
func (l *ApplyLoop) applied(changes []change.Change, st sink.Stats, err error, start time.Time,
	boundary *change.Position, eventTime time.Time) error {
	if err != nil {
		if l.Metrics != nil && !errors.Is(err, context.Canceled) {
			l.Metrics.Errors.WithLabelValues("sink").Inc()
		}
		return fmt.Errorf("applying %d changes to Redis: %w", len(changes), err)
	}
	if l.Metrics != nil {
		if len(changes) > 0 {
			l.Metrics.ApplyDuration.Observe(time.Since(start).Seconds())
			l.Metrics.Batches.Inc()
			l.Metrics.BatchRows.Observe(float64(len(changes)))
			l.Metrics.RowsSkipped.Add(float64(st.Skipped))
			l.Metrics.ObserveApplied(changes)
		}
		l.Metrics.Applied(eventTime)
	}
	if boundary != nil {
		l.Ckpt.Advance(*boundary)
	}
	return nil
}
