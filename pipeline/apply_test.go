package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/sink"
)

// These tests cover the loop's bookkeeping only (which boundary may be
// checkpointed when); the real sink and stores are tested against Redis in
// their packages and end to end in integration/.

type memStore struct {
	mu    sync.Mutex
	saved []change.Position
}

func (s *memStore) Load(context.Context) (change.Position, bool, error) {
	return change.Position{}, false, nil
}
func (s *memStore) Save(_ context.Context, p change.Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saved = append(s.saved, p)
	return nil
}
func (s *memStore) Close() error { return nil }

// recorder applies by remembering; it fails the calls listed in failAt.
type recorder struct {
	mu      sync.Mutex
	applied []change.Change
	calls   int
	failAt  map[int]error
	onApply func()
}

func (r *recorder) Apply(_ context.Context, cs []change.Change) (sink.Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := r.failAt[r.calls]; err != nil {
		return sink.Stats{}, err
	}
	r.applied = append(r.applied, cs...)
	if r.onApply != nil {
		r.onApply()
	}
	return sink.Stats{Written: len(cs)}, nil
}

func pos(n uint32) *change.Position { return &change.Position{File: "bin.000001", Pos: n} }

func batch(n int, b *change.Position) *change.Batch {
	cs := make([]change.Change, n)
	for i := range cs {
		cs[i] = change.Change{Op: change.Insert, Version: change.Version{Seq: uint32(i + 1)}}
	}
	return &change.Batch{Changes: cs, Boundary: b}
}

func newLoop(in chan *change.Batch, a Applier, st *memStore) (*ApplyLoop, *Checkpointer) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ck := &Checkpointer{Store: st, Interval: time.Hour, Log: log}
	ck.Start()
	return &ApplyLoop{In: in, Sink: a, Ckpt: ck, MaxRows: 10, Log: log}, ck
}

func TestCheckpointAdvancesOnlyOverAppliedBoundaries(t *testing.T) {
	in := make(chan *change.Batch, 8)
	in <- batch(3, pos(100))
	in <- batch(2, nil) // the start of a transaction that is still open
	in <- batch(4, pos(300))
	close(in)
	st := &memStore{}
	rec := &recorder{}
	loop, ck := newLoop(in, rec, st)
	if err := loop.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ck.Close(); err != nil {
		t.Fatal(err)
	}
	if len(rec.applied) != 9 {
		t.Fatalf("applied %d changes, want 9", len(rec.applied))
	}
	if got := ck.Saved(); got.Pos != 300 {
		t.Fatalf("checkpoint at %d, want 300", got.Pos)
	}
	if len(st.saved) != 1 {
		t.Fatalf("saved %d times, want once (at close)", len(st.saved))
	}
}

func TestFailedApplyNeverCheckpoints(t *testing.T) {
	in := make(chan *change.Batch, 8)
	in <- batch(3, pos(100))
	st := &memStore{}
	rec := &recorder{failAt: map[int]error{2: errors.New("WRONGTYPE")}}
	loop, ck := newLoop(in, rec, st)
	rec.onApply = func() { in <- batch(3, pos(200)) } // arrives after the first apply
	err := loop.Run(context.Background())
	if err == nil {
		t.Fatal("want the sink's error")
	}
	if err := ck.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ck.Saved(); got.Pos != 100 {
		t.Fatalf("checkpoint at %d, want 100: the failed batch's boundary must not be stored", got.Pos)
	}
}

func TestGatherCoalescesUpToMaxRows(t *testing.T) {
	in := make(chan *change.Batch, 8)
	for i := 0; i < 5; i++ {
		in <- batch(4, pos(uint32(100*(i+1))))
	}
	close(in)
	st := &memStore{}
	rec := &recorder{}
	loop, ck := newLoop(in, rec, st)
	if err := loop.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = ck.Close()
	// MaxRows 10: batches of 4 coalesce as 4+4+4, then 4+4.
	if rec.calls != 2 {
		t.Fatalf("Apply called %d times, want 2", rec.calls)
	}
	if ck.Saved().Pos != 500 {
		t.Fatalf("checkpoint at %d, want 500", ck.Saved().Pos)
	}
}

func TestCheckpointerSavesPeriodically(t *testing.T) {
	st := &memStore{}
	ck := &Checkpointer{Store: st, Interval: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ck.Start()
	ck.Advance(*pos(42))
	deadline := time.Now().Add(5 * time.Second)
	for {
		st.mu.Lock()
		n := len(st.saved)
		st.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the checkpointer never saved")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = ck.Close()
	if len(st.saved) != 1 {
		t.Fatalf("saved %d times for one boundary, want 1 (no rewrite of an unchanged position)", len(st.saved))
	}
}
