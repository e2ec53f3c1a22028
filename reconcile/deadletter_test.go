package reconcile

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestDeadLetters checks that dead-lettered rows are resolved from MySQL: a key holding another type is
// replaced by the row, a key whose row is gone is deleted, and their entries leave the stream; entries that
// cannot be resolved stay.
func TestDeadLetters(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a'), (2, 'b'), (3, 'c')",
		"CREATE TABLE k (a VARCHAR(10), b INT, v INT, PRIMARY KEY (a, b))", "INSERT INTO k VALUES ('x\\ny', 7, 1)")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	ctx := context.Background()
	const stream = "test:dead"
	r.cfg.DeadLetterStream = stream
	add := func(table, pk string) {
		t.Helper()
		if err := f.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"table": table, "op": "update",
			"pk": pk, "reason": "WRONGTYPE"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	f.rdb.Del(ctx, f.db+":q:2")
	f.rdb.Set(ctx, f.db+":q:2", "not a hash", 0) // Redis refused the row: WRONGTYPE
	add(f.db+".q", `{"id":"2"}`)
	add(f.db+".q", `{"id":"2"}`) // twice: both entries go
	f.execNoBinlog("DELETE FROM q WHERE id = 3")
	add(f.db+".q", `{"id":"3"}`)
	kKeys := f.rdb.Keys(ctx, f.db+":k:*").Val()
	if len(kKeys) != 1 {
		t.Fatalf("keys of k: %q", kKeys)
	}
	f.rdb.HSet(ctx, kKeys[0], "v", "9")
	add(f.db+".k", `{"a":{"b64":"eApZ"},"b":"7"}`) // ("x\nY", 7): neither a row nor a key
	add(f.db+".k", `{"a":"x\ny","b":"7"}`)
	add(f.db+".q", `{"nope":"1"}`) // no primary key: stays
	add("otherdb.t", `{"id":"1"}`) // not a selected table: stays
	add(f.db+".q", `not json`)     // unreadable: stays

	st := &stateStore{rdb: f.rdb, key: "test:reconcile"}
	rep, err := r.resolveDeadLetters(ctx, st, 0, PassOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 8 || rep.Resolved != 5 || rep.Remaining != 3 || rep.Repaired != 3 {
		t.Fatalf("report %+v, want 8 entries, 5 resolved (3 repairs), 3 left", rep)
	}
	if v := f.rdb.HGet(ctx, f.db+":q:2", "v").Val(); v != "b" {
		t.Errorf("q:2 v = %q, want the MySQL row", v)
	}
	if n := f.rdb.Exists(ctx, f.db+":q:3").Val(); n != 0 {
		t.Errorf("q:3 still exists; its row is gone")
	}
	if v := f.rdb.HGet(ctx, kKeys[0], "v").Val(); v != "1" {
		t.Errorf("k v = %q, want 1", v)
	}
	left, err := f.rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil || len(left) != 3 {
		t.Fatalf("stream holds %d entries (%v), want the 3 unresolvable", len(left), err)
	}
	for _, m := range left {
		if tb := m.Values["table"].(string); tb != "otherdb.t" && !strings.HasSuffix(tb, ".q") {
			t.Errorf("resolved entry left: %v", m.Values)
		}
	}

	// A whole pass reports the stream too; nothing more to resolve.
	full := f.run(r, PassOptions{})
	if full.DeadLetters == nil || full.DeadLetters.Entries != 3 || full.DeadLetters.Resolved != 0 {
		t.Fatalf("pass dead letters = %+v, want the 3 left entries, none resolved", full.DeadLetters)
	}
}
