package sink

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

func TestSlotTags(t *testing.T) {
	tags := slotTags()
	for slot, tag := range tags {
		if tag == "" || len(tag) > 3 || strings.ContainsAny(tag, "{}") || Slot(tag) != slot {
			t.Fatalf("tag of slot %d = %q (slot %d)", slot, tag, Slot(tag))
		}
	}
}

func TestSlotKnownValues(t *testing.T) {
	// From the Redis Cluster specification: CRC16("123456789") = 0x31C3.
	if got := crc16("123456789"); got != 0x31c3 {
		t.Fatalf("crc16 = %#x, want 0x31c3", got)
	}
}

func TestCluster(t *testing.T) {
	c := testenv.NewRedisCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { rdb.Close() })
	node := redis.NewClient(&redis.Options{Addr: c.Addrs()[0]})
	t.Cleanup(func() { node.Close() })

	t.Run("KeySlot", func(t *testing.T) {
		keys := []string{"", "a", "shop:users:1", "{user:1}:x", "x{user:1}", "{}", "{}{a}", "a{b}{c}", "a{", "}{b}",
			"a{b", "{{a}}", "é{ü}", "\x00\xff{\x01}", "__bls:tomb:{ab}:{}"}
		for i := range 300 {
			keys = append(keys, fmt.Sprintf("db:t:%d", i), fmt.Sprintf("p{t%d}:x", i), fmt.Sprintf("{}x%d", i))
		}
		for _, k := range keys {
			want, err := node.ClusterKeySlot(ctxT(t), k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := Slot(k); int64(got) != want {
				t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT = %d", k, got, want)
			}
			if k == "" {
				continue
			}
			tomb, err := node.ClusterKeySlot(ctxT(t), TombstoneKey(k)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if tomb != want {
				t.Errorf("TombstoneKey(%q) = %q is in slot %d, the row in %d", k, TombstoneKey(k), tomb, want)
			}
		}
	})

	t.Run("Apply", func(t *testing.T) {
		tagged := &change.Table{DB: "shop", Name: "orders", Columns: []string{"user", "n", "total"}, PK: []int{0, 1}}
		s := newSink(t, rdb, Options{Lanes: 2, RowsPerCall: 20, Table: func(t *change.Table) (TableOptions, error) {
			if t == tagged {
				return TableOptions{KeyTemplate: "{o:${user}}:${n}"}, nil
			}
			return TableOptions{}, nil
		}})
		var changes []change.Change
		n := uint32(0)
		for i := range 1500 {
			n++
			changes = append(changes, ins(users, v(n), r(fmt.Sprint(i), "u", nil, nil)))
			n++
			changes = append(changes, ins(tagged, v(n), r(fmt.Sprintf("u%d", i%10), fmt.Sprint(i), "1.00")))
		}
		for i := 0; i < 1500; i += 3 {
			n++
			changes = append(changes, del(users, v(n), r(fmt.Sprint(i), "u", nil, nil)))
		}
		st := apply(t, s, changes...)
		wantStats(t, st, Stats{Written: 3000, Deleted: 500})

		// Every master got rows; every row is there; every deleted one has its tombstone.
		err := rdb.ForEachMaster(ctxT(t), func(ctx2 context.Context, m *redis.Client) error {
			if n := m.DBSize(ctx2).Val(); n == 0 {
				return fmt.Errorf("master %s has no keys", m.Options().Addr)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1500 {
			key := fmt.Sprintf("shop:users:%d", i)
			if i%3 == 0 {
				wantAbsent(t, rdb, key)
				wantString(t, rdb, TombstoneKey(key), changes[3000+i/3].Version.String())
			} else {
				wantHash(t, rdb, key, map[string]string{"id": fmt.Sprint(i), "name": "u", "_v": v(uint32(2*i + 1)).String()})
			}
			wantHash(t, rdb, fmt.Sprintf("{o:u%d}:%d", i%10, i),
				map[string]string{"user": fmt.Sprintf("u%d", i%10), "n": fmt.Sprint(i), "total": "1.00", "_v": v(uint32(2*i + 2)).String()})
		}
		// Replaying the batch is a no-op.
		wantStats(t, apply(t, s, changes...), Stats{Skipped: 3500})
	})

	// A batch's rows spread over the 16384 slots. Calls hold the rows of every slot of one master (nodeScript),
	// not of one slot, which made calls of about one row each; a wrong map of slots to masters costs a retry by slot,
	// not a row.
	t.Run("CallsByMaster", func(t *testing.T) {
		hashes := &change.Table{DB: "shop", Name: "bym", Columns: []string{"id", "name"}, PK: []int{0}}
		docs := &change.Table{DB: "shop", Name: "bymj", Columns: []string{"id", "name"}, PK: []int{0}}
		s := newSink(t, rdb, Options{Table: func(t *change.Table) (TableOptions, error) {
			if t == docs {
				return TableOptions{Format: FormatJSON}, nil
			}
			return TableOptions{KeyIndex: true}, nil
		}})
		const rows = 2000
		n := uint32(0)
		var changes []change.Change
		for i := range rows {
			n++
			changes = append(changes, ins(hashes, v(n), r(fmt.Sprint(i), "a")))
			n++
			changes = append(changes, ins(docs, v(n), r(fmt.Sprint(i), "a")))
		}
		for i := range rows { // the same keys again in the same batch: each key's changes keep their order
			n++
			if i%5 == 0 {
				changes = append(changes, del(hashes, v(n), r(fmt.Sprint(i), "a")))
			} else {
				changes = append(changes, upd(hashes, v(n), r(fmt.Sprint(i), "a"), r(fmt.Sprint(i), "b")))
			}
		}
		calls0 := evalCalls(t, rdb)
		wantStats(t, apply(t, s, changes...), Stats{Written: 2*rows + rows*4/5, Deleted: rows / 5})
		calls := evalCalls(t, rdb) - calls0
		t.Logf("%d script calls for %d changes", calls, len(changes))
		if calls > rows/4 {
			t.Fatalf("%d script calls for %d changes: calls are not by master", calls, len(changes))
		}
		check := func(name string) {
			t.Helper()
			for i := range rows {
				key := fmt.Sprintf("shop:bym:%d", i)
				if i%5 == 0 {
					wantAbsent(t, rdb, key)
				} else if got := rdb.HGet(ctxT(t), key, "name").Val(); got != name {
					t.Fatalf("%s name = %q, want %q", key, got, name)
				}
				doc := rdb.Get(ctxT(t), fmt.Sprintf("shop:bymj:%d", i)).Val()
				if !strings.Contains(doc, `"name":"a"`) {
					t.Fatalf("shop:bymj:%d = %q", i, doc)
				}
			}
		}
		check("b")

		// A map that puts every slot on one master: two thirds of the calls reach rows their master does not
		// serve; they are sent again by slot, and the map is read again.
		wrong := make([]uint16, SlotCount)
		s.slots.Set(wrong)
		changes = changes[:0]
		for i := range rows {
			if i%5 != 0 {
				n++
				changes = append(changes, upd(hashes, v(n), r(fmt.Sprint(i), "b"), r(fmt.Sprint(i), "c")))
			}
		}
		st := apply(t, s, changes...)
		if st.Written+st.Skipped != len(changes) || st.Written < len(changes)/3 {
			t.Fatalf("with a wrong slot map: %+v for %d changes", st, len(changes))
		}
		check("c")
		if fmt.Sprint(s.slots.Current()) == fmt.Sprint(wrong) {
			t.Fatal("the wrong slot map was kept after calls failed")
		}
	})
}

// While slots move between masters (redis-cli --cluster reshard migrating their keys), calls of a master's rows
// meet keys their node no longer serves: the rows go again by slot, none is refused, and every key ends at its
// newest change.
func TestClusterResharding(t *testing.T) {
	c := testenv.NewRedisCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { rdb.Close() })
	table := &change.Table{DB: "shop", Name: "moving", Columns: []string{"id", "n"}, PK: []int{0}}
	s := newSink(t, rdb, Options{})
	const keys = 10000
	last := make([]uint32, keys) // the version whose value each key must end with
	n := uint32(0)
	batch := func(ids func(i int) int, count int) []change.Change {
		out := make([]change.Change, count)
		for i := range out {
			n++
			id := ids(i)
			out[i] = ins(table, v(n), r(fmt.Sprint(id), fmt.Sprint(n)))
			last[id] = n
		}
		return out
	}
	wantStats(t, apply(t, s, batch(func(i int) int { return i }, keys)...), Stats{Written: keys})

	done := make(chan error, 1)
	go func() {
		err := c.Reshard(0, 1, 500)
		if err == nil {
			err = c.Reshard(1, 2, 500)
		}
		done <- err
	}()
	applied, batches := 0, 0
	for moving := true; moving; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			moving = false
		default:
		}
		k := batches * 7919
		changes := batch(func(i int) int { return (k + i*31) % keys }, 2000)
		st, err := s.Apply(ctxT(t), changes)
		if err != nil {
			t.Fatalf("Apply while slots move: %v", err)
		}
		if st.Written+st.Skipped != len(changes) {
			t.Fatalf("while slots move: %+v for %d changes", st, len(changes))
		}
		applied += st.Written
		batches++
	}
	t.Logf("%d batches applied while slots moved", batches)
	if batches < 2 {
		t.Fatalf("only %d batch ran while slots moved", batches)
	}
	for id := range keys {
		key := fmt.Sprintf("shop:moving:%d", id)
		if got, want := rdb.HGet(ctxT(t), key, "n").Val(), fmt.Sprint(last[id]); got != want {
			t.Fatalf("%s n = %q, want %s (its newest change)", key, got, want)
		}
	}
}

// When a master dies, its replica takes over after the node timeout (5 s). The sink's retries read the cluster's
// slots again, so writes go on soon after; go-redis alone read them again only after a minute.
func TestClusterMasterFailover(t *testing.T) {
	c := testenv.NewRedisClusterWithReplicas(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()[:3]})
	t.Cleanup(func() { rdb.Close() })
	table := &change.Table{DB: "shop", Name: "fo", Columns: []string{"id", "n"}, PK: []int{0}}
	s := newSink(t, rdb, Options{})
	n := uint32(0)
	batch := func() []change.Change {
		var out []change.Change
		for id := range 300 {
			n++
			out = append(out, ins(table, v(n), r(fmt.Sprint(id), fmt.Sprint(n))))
		}
		return out
	}
	wantStats(t, apply(t, s, batch()...), Stats{Written: 300})
	key := "shop:fo:0"
	slots, err := rdb.ClusterSlots(ctxT(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	var master string
	for _, sl := range slots {
		if int(sl.Start) <= Slot(key) && Slot(key) <= int(sl.End) {
			master = sl.Nodes[0].Addr
		}
	}
	killed := false
	for _, node := range c.Nodes {
		if node.Addr() == master {
			node.Stop()
			killed = true
		}
	}
	if !killed {
		t.Fatalf("the master %q of %s is not a node of the test", master, key)
	}
	start := time.Now()
	changes := batch()
	if st := apply(t, s, changes...); st.Written != 300 {
		t.Fatalf("after the failover: %+v, want 300 written", st)
	}
	took := time.Since(start)
	t.Logf("writes went on %s after the master was killed", took.Round(100*time.Millisecond))
	if took > 30*time.Second {
		t.Fatalf("writes went on only %s after the master was killed", took)
	}
	if got := rdb.HGet(ctxT(t), key, "n").Val(); got != fmt.Sprint(changes[0].Version.Pos) {
		t.Fatalf("%s n = %q after the failover, want %d", key, got, changes[0].Version.Pos)
	}
}

// A slot left half-migrated (IMPORTING on one master, MIGRATING on another, as a failed reshard leaves it) holds
// the writes of its rows back: Redis refuses a call of a row key and its tombstone with TRYAGAIN. The warning names
// the slot and the fix, and the rows land once the slot is settled.
func TestClusterHalfMigratedSlot(t *testing.T) {
	c := testenv.NewRedisCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { rdb.Close() })
	var logs testenv.LogBuffer
	table := &change.Table{DB: "shop", Name: "half", Columns: []string{"id", "n"}, PK: []int{0}}
	s := newSink(t, rdb, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	wantStats(t, apply(t, s, ins(table, v(1), r("1", "a"))), Stats{Written: 1})
	key := "shop:half:1"
	slot := Slot(key)
	nodes := make([]*redis.Client, len(c.Nodes))
	ids := make([]string, len(c.Nodes))
	from := -1
	for i, n := range c.Nodes {
		nodes[i] = redis.NewClient(&redis.Options{Addr: n.Addr()})
		t.Cleanup(func() { nodes[i].Close() })
		ids[i] = nodes[i].Do(ctxT(t), "cluster", "myid").Val().(string)
		if nodes[i].Exists(ctxT(t), key).Val() == 1 {
			from = i
		}
	}
	to := (from + 1) % len(nodes)
	setslot := func(node int, args ...any) {
		t.Helper()
		if err := nodes[node].Do(ctxT(t), append([]any{"cluster", "setslot", slot}, args...)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	setslot(to, "importing", ids[from])
	setslot(from, "migrating", ids[to])

	done := make(chan error, 1)
	var st Stats
	go func() {
		var err error
		st, err = s.Apply(ctxT(t), []change.Change{upd(table, v(2), r("1", "a"), r("1", "b"))})
		done <- err
	}()
	want := fmt.Sprintf("slot=%d fix=", slot)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no retry warning naming slot %d; logs:\n%s", slot, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "redis-cli --cluster fix") {
		t.Fatalf("the warning does not name the fix:\n%s", logs.String())
	}
	setslot(to, "stable")
	setslot(from, "stable")
	select {
	case err := <-done:
		if err != nil || st.Written != 1 {
			t.Fatalf("after the slot was settled: %+v, %v", st, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the row did not land after the slot was settled")
	}
	if got := rdb.HGet(ctxT(t), key, "n").Val(); got != "b" {
		t.Fatalf("%s n = %q, want b", key, got)
	}
}

// evalCalls is the number of EVALSHA calls the masters of rdb have served.
func evalCalls(t *testing.T, rdb *redis.ClusterClient) int64 {
	t.Helper()
	var mu sync.Mutex
	var n int64
	err := rdb.ForEachMaster(ctxT(t), func(ctx context.Context, m *redis.Client) error {
		info, err := m.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
				v, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
				mu.Lock()
				n += v
				mu.Unlock()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
