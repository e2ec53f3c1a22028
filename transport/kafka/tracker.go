package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/binlogsync/binlogsync/change"
)

// tracker numbers the messages handed to Kafka (1, 2, ...) and calls advance
// with a transaction boundary once every message numbered up to it was
// acknowledged, in boundary order, whatever order the acknowledgements come
// in. It also bounds the messages in flight: reserve blocks while the window
// is full.
type tracker struct {
	advance func(change.Position)

	mu     sync.Mutex
	acked  []bool // ring of the window: acked[seq % len] for done < seq < next
	next   uint64 // the number the next reserved message gets
	done   uint64 // every message numbered <= done is acknowledged
	bounds []boundary
	space  chan struct{} // signalled when done moves
}

// errStopped is returned when the caller's stop channel closed.
var errStopped = errors.New("stopped")

type boundary struct {
	after uint64 // the last message before the boundary
	pos   change.Position
}

func newTracker(window int, advance func(change.Position)) *tracker {
	return &tracker{advance: advance, acked: make([]bool, max(window, 1)), next: 1, space: make(chan struct{}, 1)}
}

// window is the most messages in flight.
func (t *tracker) window() int { return len(t.acked) }

// inFlight is the number of reserved messages not yet acknowledged.
func (t *tracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int(t.next - 1 - t.done)
}

// reserve numbers n more messages, waiting while they would not fit in the
// window, until ctx ends or stop is closed (errStopped). It returns the first
// number; n must not exceed the window.
func (t *tracker) reserve(ctx context.Context, stop <-chan struct{}, n int) (uint64, error) {
	if n > len(t.acked) {
		return 0, fmt.Errorf("reserving %d messages: more than the window of %d", n, len(t.acked))
	}
	for {
		t.mu.Lock()
		if int(t.next-1-t.done)+n <= len(t.acked) {
			first := t.next
			t.next += uint64(n)
			t.mu.Unlock()
			return first, nil
		}
		t.mu.Unlock()
		select {
		case <-t.space:
		case <-stop:
			return 0, errStopped
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// mark records a boundary after every message reserved so far.
func (t *tracker) mark(p change.Position) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := boundary{after: t.next - 1, pos: p}
	if len(t.bounds) == 0 && b.after <= t.done {
		t.advance(p)
		return
	}
	t.bounds = append(t.bounds, b)
}

// ack records that message seq was acknowledged.
func (t *tracker) ack(seq uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq <= t.done || seq >= t.next {
		return fmt.Errorf("acknowledgement of message %d outside the window (%d, %d)", seq, t.done, t.next)
	}
	i := seq % uint64(len(t.acked))
	if t.acked[i] {
		return fmt.Errorf("message %d acknowledged twice", seq)
	}
	t.acked[i] = true
	moved := false
	for t.done+1 < t.next && t.acked[(t.done+1)%uint64(len(t.acked))] {
		t.done++
		t.acked[t.done%uint64(len(t.acked))] = false
		moved = true
	}
	if !moved {
		return nil
	}
	n := 0
	for n < len(t.bounds) && t.bounds[n].after <= t.done {
		n++
	}
	if n > 0 {
		// Only the newest boundary matters: checkpoints are cumulative.
		t.advance(t.bounds[n-1].pos)
		t.bounds = append(t.bounds[:0], t.bounds[n:]...)
	}
	select {
	case t.space <- struct{}{}:
	default:
	}
	return nil
}

// drained reports whether every reserved message is acknowledged.
func (t *tracker) drained() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.done+1 == t.next
}

// wait blocks until every reserved message is acknowledged, ctx ends or stop
// is closed (errStopped).
func (t *tracker) wait(ctx context.Context, stop <-chan struct{}) error {
	for !t.drained() {
		select {
		case <-t.space:
		case <-stop:
			return errStopped
		case <-ctx.Done():
			return errors.Join(ctx.Err(), fmt.Errorf("%d messages still unacknowledged", t.inFlight()))
		}
	}
	return nil
}
