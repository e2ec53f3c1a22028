package kafka

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/change"
)

func pos(n uint32) change.Position { return change.Position{File: "b.000001", Pos: n} }

func TestTrackerAdvancesOnlyOverAcknowledgedPrefix(t *testing.T) {
	var got []uint32
	tr := newTracker(16, func(p change.Position) { got = append(got, p.Pos) })
	ctx := context.Background()
	first, err := tr.reserve(ctx, nil, 3) // messages 1..3, boundary 100
	if err != nil || first != 1 {
		t.Fatalf("reserve = %d, %v", first, err)
	}
	tr.mark(pos(100))
	if _, err := tr.reserve(ctx, nil, 2); err != nil { // 4..5, boundary 200
		t.Fatal(err)
	}
	tr.mark(pos(200))
	if _, err := tr.reserve(ctx, nil, 1); err != nil { // 6, no boundary yet
		t.Fatal(err)
	}
	for _, seq := range []uint64{5, 4, 2, 6} {
		if err := tr.ack(seq); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 0 {
		t.Fatalf("advanced to %v before message 1 was acknowledged", got)
	}
	if err := tr.ack(1); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("advanced to %v with message 3 unacknowledged", got)
	}
	if err := tr.ack(3); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 200 {
		t.Fatalf("advanced to %v, want [200] (the newest complete boundary)", got)
	}
	tr.mark(pos(300)) // everything before it is acknowledged: advance at once
	if len(got) != 2 || got[1] != 300 {
		t.Fatalf("advanced to %v, want 300 next", got)
	}
	if err := tr.ack(6); err == nil {
		t.Error("a second acknowledgement of message 6 was accepted")
	}
	if !tr.drained() {
		t.Error("not drained")
	}
}

func TestTrackerWindowBlocks(t *testing.T) {
	tr := newTracker(4, func(change.Position) {})
	ctx := context.Background()
	if _, err := tr.reserve(ctx, nil, 4); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := tr.reserve(short, nil, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reserve beyond the window = %v, want to block until the deadline", err)
	}
	stop := make(chan struct{})
	close(stop)
	if _, err := tr.reserve(ctx, stop, 1); !errors.Is(err, errStopped) {
		t.Fatalf("reserve with stop closed = %v", err)
	}
	if _, err := tr.reserve(ctx, nil, 5); err == nil {
		t.Fatal("reserving more than the window succeeded")
	}
	done := make(chan uint64)
	go func() {
		first, _ := tr.reserve(ctx, nil, 2)
		done <- first
	}()
	if err := tr.ack(2); err != nil { // 1 still missing: no room yet
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("reserve returned while the window was full")
	case <-time.After(20 * time.Millisecond):
	}
	if err := tr.ack(1); err != nil {
		t.Fatal(err)
	}
	if first := <-done; first != 5 {
		t.Fatalf("first = %d, want 5", first)
	}
}

// TestTrackerConcurrentAcks acknowledges from many goroutines in random
// order and checks the boundaries come out in order, each only once all
// messages before it were acknowledged.
func TestTrackerConcurrentAcks(t *testing.T) {
	const msgs, perBoundary = 20000, 7
	var mu sync.Mutex
	acked := make([]bool, msgs+1)
	var advanced []uint32
	var violations int
	tr := newTracker(1024, func(p change.Position) {
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i <= int(p.Pos); i++ {
			if !acked[i] {
				violations++
				break
			}
		}
		advanced = append(advanced, p.Pos)
	})
	work := make(chan uint64, 1024)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			var held []uint64
			r := rand.New(rand.NewPCG(uint64(w), 1))
			flush := func() {
				r.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
				for _, s := range held {
					mu.Lock()
					acked[s] = true
					mu.Unlock()
					if err := tr.ack(s); err != nil {
						t.Error(err)
					}
				}
				held = held[:0]
			}
			for {
				var s uint64
				var ok bool
				select {
				case s, ok = <-work:
				default: // nothing waiting: acknowledge what is held, then block
					flush()
					s, ok = <-work
				}
				if !ok {
					flush()
					return
				}
				held = append(held, s)
				if len(held) >= 16 {
					flush()
				}
			}
		})
	}
	ctx := context.Background()
	for n := 1; n <= msgs; n += perBoundary {
		k := min(perBoundary, msgs-n+1)
		first, err := tr.reserve(ctx, nil, k)
		if err != nil {
			t.Fatal(err)
		}
		tr.mark(pos(uint32(first) + uint32(k) - 1)) // the boundary "is" its last message number
		for i := range k {
			work <- first + uint64(i)
		}
	}
	close(work)
	wg.Wait()
	if err := tr.wait(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if violations > 0 {
		t.Fatalf("%d boundaries advanced before every earlier message was acknowledged", violations)
	}
	for i := 1; i < len(advanced); i++ {
		if advanced[i] <= advanced[i-1] {
			t.Fatalf("boundaries out of order: %d after %d", advanced[i], advanced[i-1])
		}
	}
	if len(advanced) == 0 || advanced[len(advanced)-1] != msgs {
		t.Fatalf("last boundary = %v, want %d", advanced[len(advanced)-1:], msgs)
	}
}
