package sink

import (
	"context"
	"fmt"
	"strings"
	"testing"

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
}
