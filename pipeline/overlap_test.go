package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
	"github.com/binlogsync/binlogsync/sink"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}

// countingStarter starts batches on a real sink and adds up their stats.
type countingStarter struct {
	*sink.Sink
	mu     sync.Mutex
	stats  sink.Stats
	starts int
	wg     sync.WaitGroup // the goroutines adding up stats
}

func (c *countingStarter) Start(ctx context.Context, cs []change.Change) *sink.Pending {
	c.mu.Lock()
	c.starts++
	c.mu.Unlock()
	p := c.Sink.Start(ctx, cs)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		st, _ := p.Wait()
		c.mu.Lock()
		c.stats.Written += st.Written
		c.stats.Skipped += st.Skipped
		c.mu.Unlock()
	}()
	return p
}

var items = &change.Table{DB: "shop", Name: "items", Columns: []string{"id", "n"}, PK: []int{0}}

func overlapSink(t *testing.T, opts sink.Options) (*redis.Client, *countingStarter) {
	t.Helper()
	srv := testenv.SharedRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rdb, &countingStarter{Sink: s}
}

// itemBatch updates ids 0..9 to value round, five times each, at increasing versions; for an odd round only
// ids 0..4, once (a batch small enough for one script call).
func itemBatch(round int, b *change.Position) *change.Batch {
	var cs []change.Change
	reps, ids := 5, 10
	if round%2 == 1 {
		reps, ids = 1, 5
	}
	for rep := range reps {
		for id := range ids {
			ver := change.Version{Epoch: 1, File: 1, Pos: uint32(round), Seq: uint32(rep*10 + id + 1)}
			row := change.Row{[]byte(fmt.Sprint(id)), []byte(fmt.Sprintf("%d-%d", round, rep))}
			cs = append(cs, change.Change{Op: change.Update, Table: items, Before: row, After: row, Version: ver})
		}
	}
	return &change.Batch{Changes: cs, Boundary: b}
}

// With a Starter the loop keeps two batches in flight; the changes of a row must still land in order (a row
// written out of order would show as a skipped change) and the checkpoint must end at the last boundary.
func TestOverlappedBatchesKeepOrder(t *testing.T) {
	rdb, st := overlapSink(t, sink.Options{Lanes: 3, RowsPerCall: 7})
	const written = 20*50 + 20*5
	in := make(chan *change.Batch, 64)
	for round := 1; round <= 40; round++ {
		in <- itemBatch(round, pos(uint32(round*100)))
	}
	close(in)
	ms := &memStore{}
	loop, ck := newLoop(in, st, ms)
	loop.MaxRows = 1 // one batch per Start: small ones (one call on one lane) between large ones (every lane)
	if err := loop.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ck.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ck.Saved(); got.Pos != 4000 {
		t.Fatalf("checkpoint at %d, want 4000", got.Pos)
	}
	st.wg.Wait()
	if st.starts != 40 {
		t.Fatalf("%d batches started, want 40", st.starts)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stats.Skipped != 0 || st.stats.Written != written {
		t.Fatalf("stats %+v, want %d written and none skipped (skips mean changes of a row ran out of order)", st.stats, written)
	}
	for id := range 10 {
		if got := rdb.HGet(context.Background(), fmt.Sprintf("shop:items:%d", id), "n").Val(); got != "40-4" {
			t.Fatalf("item %d = %q, want 40-4", id, got)
		}
	}
}

// A batch that fails stops the loop, and the checkpoint stays at the boundary before it, even though the batch
// after it may already have been started.
func TestOverlappedFailureKeepsCheckpointBefore(t *testing.T) {
	bad := &change.Table{DB: "shop", Name: "bad", Columns: []string{"id"}, PK: []int{0}}
	_, st := overlapSink(t, sink.Options{Table: func(t *change.Table) (sink.TableOptions, error) {
		if t == bad {
			return sink.TableOptions{}, errors.New("refused by the test")
		}
		return sink.TableOptions{}, nil
	}})
	in := make(chan *change.Batch, 8)
	in <- itemBatch(1, pos(100))
	in <- &change.Batch{Changes: []change.Change{{Op: change.Insert, Table: bad, After: change.Row{[]byte("1")},
		Version: change.Version{Epoch: 1, File: 1, Pos: 2}}}, Boundary: pos(200)}
	in <- itemBatch(3, pos(300))
	close(in)
	loop, ck := newLoop(in, st, &memStore{})
	loop.MaxRows = 1 // one batch per Start
	if err := loop.Run(context.Background()); err == nil {
		t.Fatal("want the failed batch's error")
	}
	if err := ck.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ck.Saved(); got.Pos != 100 {
		t.Fatalf("checkpoint at %d, want 100", got.Pos)
	}
}
