package reconcile

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/internal/testenv"
	"github.com/binlogsync/binlogsync/sink"
)

// evalCalls is the number of EVALSHA calls the masters of cl have served.
func evalCalls(t *testing.T, cl *testenv.RedisCluster) int64 {
	t.Helper()
	var n int64
	for _, node := range cl.Nodes {
		c := redis.NewClient(&redis.Options{Addr: node.Addr(), DisableIdentity: true})
		info, err := c.Info(context.Background(), "commandstats").Result()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
				v, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
				n += v
			}
		}
	}
	return n
}

// On a Redis Cluster a range's keys spread over the 16384 slots. The digest calls hold the keys of every slot of
// one master (nodeDigest), not of one slot, which made calls of about one key each. When the map of slots to
// masters is wrong (a slot moved), the keys are hashed again in calls of one slot and the pass ends right.
func TestClusterDigestCallsByMaster(t *testing.T) {
	const rows = 3000
	f := newFixture(t)
	cl := testenv.NewRedisCluster(t, 3)
	f.cl = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), DisableIdentity: true})
	t.Cleanup(func() { f.cl.Close() })
	f.exec(`CREATE TABLE c (id INT PRIMARY KEY, name VARCHAR(40), n INT)`,
		`INSERT INTO c SELECT seq, CONCAT('name ', seq), seq * 3 FROM seq_1_to_`+strconv.Itoa(rows))
	r := f.reconciler(1000)
	if rep := f.run(r, PassOptions{}); rep.Total().Missing.Repaired != rows {
		t.Fatalf("the first pass loaded %+v, want %d missing rows repaired", rep.Total().Missing, rows)
	}

	before := evalCalls(t, cl)
	rep := f.run(r, PassOptions{NoScanOrphans: true})
	calls := evalCalls(t, cl) - before
	if tot := rep.Total(); tot.Drift() != 0 || tot.Rows != rows {
		t.Fatalf("zero-drift pass: %+v", tot)
	}
	t.Logf("calls %d", calls)
	// By slot, nearly every key was a call of its own (3,000 keys over 16,384 slots). By master, calls are sized by
	// the time per key: 40-50 calls on a quiet machine, a few hundred on a busy one.
	if calls > rows/3 {
		t.Fatalf("%d digest calls for %d rows: calls are not by master", calls, rows)
	}
	if r.redis.slots.Owners(context.Background(), f.cl) == nil {
		t.Fatal("no map of slots to masters on a cluster")
	}

	// A map that puts every slot on one master: the calls reach keys their master does not serve.
	wrong := make([]uint16, sink.SlotCount)
	r.redis.slots.Set(wrong)
	ctx := context.Background()
	tb, err := loadTable(ctx, f.sqldb, f.db, "c", TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const drift = 20
	for i := 1; i <= drift; i++ {
		key, err := tb.key(r.cfg.Sink, [][]byte{[]byte(strconv.Itoa(i * 100))})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			err = f.cl.Del(ctx, key).Err()
		} else {
			err = f.cl.HSet(ctx, key, "name", "changed").Err()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	rep = f.run(r, PassOptions{NoScanOrphans: true})
	tot := rep.Total()
	if tot.Missing.Repaired != drift/2 || tot.Stale.Repaired != drift/2 || tot.Extra.Found != 0 {
		t.Fatalf("after %d deleted and %d changed keys, with a wrong slot map: %+v", drift/2, drift/2, tot)
	}
	if fmt.Sprint(r.redis.slots.Current()) == fmt.Sprint(wrong) {
		t.Fatal("the wrong slot map was kept after calls failed")
	}
	if tot := f.run(r, PassOptions{NoScanOrphans: true}).Total(); tot.Drift() != 0 {
		t.Fatalf("drift left after the repair: %+v", tot)
	}
	key, _ := tb.key(r.cfg.Sink, [][]byte{[]byte("300")})
	if v, err := f.cl.HGet(ctx, key, "name").Result(); err != nil || v != "name 300" {
		t.Fatalf("%s name = %q, %v; want the MySQL value", key, v, err)
	}
}

// A pass while a slot moves between masters finishes and finds no drift. The table's keys share a few slots (a
// hash tag in the key template), so calls hold many keys of the moving slot: Redis refuses those with TRYAGAIN
// while some of the slot's keys have moved, and calls of a master's keys meet keys their node no longer serves.
func TestClusterPassWhileSlotMoves(t *testing.T) {
	const groups, perGroup = 4, 2500
	f := newFixture(t)
	cl := testenv.NewRedisCluster(t, 3)
	f.cl = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), DisableIdentity: true})
	t.Cleanup(func() { f.cl.Close() })
	f.exec(`CREATE TABLE g (g INT, id INT, name VARCHAR(40), PRIMARY KEY (g, id))`,
		fmt.Sprintf(`INSERT INTO g SELECT seq DIV %d, seq, CONCAT('name ', seq) FROM seq_0_to_%d`, perGroup, groups*perGroup-1))
	f.opts["g"] = TableOptions{KeyTemplate: "{g${g}}:${id}"}
	r := f.reconciler(1000)
	f.run(r, PassOptions{})

	slot := sink.Slot("g0")
	from := -1
	for i, n := range cl.Nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr(), DisableIdentity: true})
		cnt, err := c.ClusterCountKeysInSlot(context.Background(), slot).Result()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cnt > 0 {
			from = i
		}
	}
	if from < 0 {
		t.Fatalf("no master holds the keys of slot %d", slot)
	}
	done := make(chan error, 1)
	go func() { done <- cl.MoveSlot(slot, from, (from+1)%len(cl.Nodes), 20, 20*time.Millisecond) }()
	passes := 0
	for moving := true; moving; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			moving = false
		default:
		}
		for _, cached := range []bool{false, true} {
			if tot := f.run(r, PassOptions{Cached: cached, NoScanOrphans: true}).Total(); tot.Drift() != 0 || tot.Rows != groups*perGroup {
				t.Fatalf("a pass while slot %d moved (cached %v): %+v", slot, cached, tot)
			}
			passes++
		}
	}
	t.Logf("%d passes while slot %d moved", passes, slot)
	if passes < 3 {
		t.Fatalf("only %d passes ran while the slot moved", passes)
	}
}
