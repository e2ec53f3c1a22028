package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{}) // the restart tests make go-redis log every refused dial
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}

var users = &change.Table{DB: "shop", Name: "users", Columns: []string{"id", "name", "email", "note"}, PK: []int{0}}

// v returns a version that orders by n.
func v(n uint32) change.Version { return change.Version{Epoch: 1, File: 3, Pos: n, Seq: 1} }

// r builds a row; a nil argument is NULL.
func r(vals ...any) change.Row {
	row := make(change.Row, len(vals))
	for i, x := range vals {
		switch x := x.(type) {
		case nil:
		case string:
			row[i] = []byte(x)
		case []byte:
			row[i] = x
		default:
			panic(fmt.Sprintf("r: %T", x))
		}
	}
	return row
}

func ins(t *change.Table, ver change.Version, after change.Row) change.Change {
	return change.Change{Op: change.Insert, Table: t, After: after, Version: ver}
}

func upd(t *change.Table, ver change.Version, before, after change.Row) change.Change {
	return change.Change{Op: change.Update, Table: t, Before: before, After: after, Version: ver}
}

func del(t *change.Table, ver change.Version, before change.Row) change.Change {
	return change.Change{Op: change.Delete, Table: t, Before: before, Version: ver}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sharedClient returns a client of the shared Redis, emptied.
func sharedClient(t *testing.T) *redis.Client {
	t.Helper()
	srv := testenv.SharedRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushAll(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}
	return rdb
}

// testHSetOnly makes newSink's sinks write hash rows with HSET, as after Redis refused RESTORE (TestHSetPath).
var testHSetOnly bool

func newSink(t *testing.T, rdb redis.UniversalClient, opts Options) *Sink {
	t.Helper()
	s, err := New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	if testHSetOnly {
		s.noRestoreUntil.Store(math.MaxInt64)
	}
	return s
}

func apply(t *testing.T, s *Sink, changes ...change.Change) Stats {
	t.Helper()
	st, err := s.Apply(ctxT(t), changes)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return st
}

func wantStats(t *testing.T, got, want Stats) {
	t.Helper()
	if got != want {
		t.Fatalf("stats = %+v, want %+v", got, want)
	}
}

func wantHash(t *testing.T, rdb redis.UniversalClient, key string, want map[string]string) {
	t.Helper()
	got, err := rdb.HGetAll(ctxT(t), key).Result()
	if err != nil {
		t.Fatalf("HGETALL %s: %v", key, err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("HGETALL %s = %q, want %q", key, got, want)
	}
}

func wantAbsent(t *testing.T, rdb redis.UniversalClient, key string) {
	t.Helper()
	n, err := rdb.Exists(ctxT(t), key).Result()
	if err != nil || n != 0 {
		t.Fatalf("EXISTS %s = %d, %v; want 0", key, n, err)
	}
}

func wantString(t *testing.T, rdb redis.UniversalClient, key, want string) {
	t.Helper()
	got, err := rdb.Get(ctxT(t), key).Result()
	if err != nil || got != want {
		t.Fatalf("GET %s = %q, %v; want %q", key, got, err, want)
	}
}

func TestHashInsertUpdateDelete(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{})
	const key = "shop:users:1"

	wantStats(t, apply(t, s, ins(users, v(10), r("1", "ann", "a@x", nil))), Stats{Written: 1})
	wantHash(t, rdb, key, map[string]string{"id": "1", "name": "ann", "email": "a@x", "_v": v(10).String()})
	if ttl := rdb.PTTL(ctxT(t), key).Val(); ttl != -1 {
		t.Errorf("PTTL of a row without TTL = %v, want -1", ttl)
	}

	// The full row image replaces the hash: email became NULL, note got a value, '' stays ''.
	wantStats(t, apply(t, s, upd(users, v(11), r("1", "ann", "a@x", nil), r("1", "", nil, "n\x00b"))), Stats{Written: 1})
	wantHash(t, rdb, key, map[string]string{"id": "1", "name": "", "note": "n\x00b", "_v": v(11).String()})

	wantStats(t, apply(t, s, del(users, v(12), r("1", "", nil, "n\x00b"))), Stats{Deleted: 1})
	wantAbsent(t, rdb, key)
	tomb := TombstoneKey(key)
	wantString(t, rdb, tomb, v(12).String())
	if ttl := rdb.PTTL(ctxT(t), tomb).Val(); ttl <= 23*time.Hour || ttl > DefaultTombstoneTTL {
		t.Errorf("tombstone PTTL = %v, want about %v", ttl, DefaultTombstoneTTL)
	}
	if keys := rdb.Keys(ctxT(t), "*").Val(); len(keys) != 1 || keys[0] != tomb {
		t.Errorf("keys after delete = %q, want only the tombstone %q", keys, tomb)
	}
}

func TestPrimaryKeyChange(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{})
	apply(t, s, ins(users, v(10), r("1", "ann", nil, nil)))

	st := apply(t, s, upd(users, v(20), r("1", "ann", nil, nil), r("2", "ann", "a@x", nil)))
	wantStats(t, st, Stats{Written: 1, Deleted: 1})
	wantAbsent(t, rdb, "shop:users:1")
	wantString(t, rdb, TombstoneKey("shop:users:1"), v(20).String())
	wantHash(t, rdb, "shop:users:2", map[string]string{"id": "2", "name": "ann", "email": "a@x", "_v": v(20).String()})

	// Replaying the insert of the old key must not bring it back; moving the key back later does.
	wantStats(t, apply(t, s, ins(users, v(10), r("1", "ann", nil, nil))), Stats{Skipped: 1})
	wantAbsent(t, rdb, "shop:users:1")
	st = apply(t, s, upd(users, v(30), r("2", "ann", "a@x", nil), r("1", "bob", nil, nil)))
	wantStats(t, st, Stats{Written: 1, Deleted: 1})
	wantHash(t, rdb, "shop:users:1", map[string]string{"id": "1", "name": "bob", "_v": v(30).String()})
	wantAbsent(t, rdb, TombstoneKey("shop:users:1"))
	wantAbsent(t, rdb, "shop:users:2")
}

func TestFence(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{})
	const key = "shop:users:7"
	cur := map[string]string{"id": "7", "name": "new", "_v": v(50).String()}
	apply(t, s, ins(users, v(50), r("7", "new", nil, nil)))

	// Older write, same-version write and older delete are all skipped; the row is unchanged.
	st := apply(t, s,
		upd(users, v(40), r("7", "x", nil, nil), r("7", "old", nil, nil)),
		ins(users, v(50), r("7", "same version, other value", nil, nil)),
		del(users, v(45), r("7", "old", nil, nil)),
	)
	wantStats(t, st, Stats{Skipped: 3})
	wantHash(t, rdb, key, cur)

	// After a delete, replays of older changes (and of the delete itself) do not resurrect the row.
	apply(t, s, del(users, v(60), r("7", "new", nil, nil)))
	st = apply(t, s,
		ins(users, v(50), r("7", "new", nil, nil)),
		upd(users, v(55), r("7", "new", nil, nil), r("7", "newer", nil, nil)),
		del(users, v(60), r("7", "new", nil, nil)),
	)
	wantStats(t, st, Stats{Skipped: 3})
	wantAbsent(t, rdb, key)
	wantString(t, rdb, TombstoneKey(key), v(60).String())

	// A newer write lands and removes the tombstone.
	wantStats(t, apply(t, s, ins(users, v(70), r("7", "back", nil, nil))), Stats{Written: 1})
	wantHash(t, rdb, key, map[string]string{"id": "7", "name": "back", "_v": v(70).String()})
	wantAbsent(t, rdb, TombstoneKey(key))

	// Versions compare across all their parts (epoch first).
	later := change.Version{Epoch: 2}
	wantStats(t, apply(t, s, upd(users, later, nil, r("7", "epoch2", nil, nil))), Stats{Written: 1})
	wantStats(t, apply(t, s, ins(users, change.Version{Epoch: 1, File: 99, Pos: 99, Seq: 99}, r("7", "x", nil, nil))), Stats{Skipped: 1})
	wantHash(t, rdb, key, map[string]string{"id": "7", "name": "epoch2", "_v": later.String()})
}

// TestFreshCall covers the script's path for calls none of whose keys and tombstones exist (rows are written
// without reading their version first): a key seen again in the same call is fenced as usual, and one existing
// tombstone or row sends the whole call down the checked path.
func TestFreshCall(t *testing.T) {
	rdb := sharedClient(t)
	ctx := ctxT(t)
	s := newSink(t, rdb, Options{Lanes: 1, RowsPerCall: 100})
	st := apply(t, s,
		ins(users, v(5), r("1", "a", nil, nil)),
		ins(users, v(6), r("2", "b", nil, nil)),
		ins(users, v(3), r("1", "replayed", nil, nil)), // seen in this call: fenced by the version just written
		del(users, v(7), r("2", "b", nil, nil)),
		ins(users, v(6), r("2", "replayed", nil, nil)), // fenced by the tombstone just written
		upd(users, v(8), r("1", "a", nil, nil), r("1", "a2", "x", nil)),
	)
	wantStats(t, st, Stats{Written: 3, Deleted: 1, Skipped: 2})
	wantHash(t, rdb, "shop:users:1", map[string]string{"id": "1", "name": "a2", "email": "x", "_v": v(8).String()})
	wantAbsent(t, rdb, "shop:users:2")

	// A tombstone of one row among absent keys: that row's older insert is skipped, the others land.
	rdb.Set(ctx, TombstoneKey("shop:users:9"), v(20).String(), time.Hour)
	st = apply(t, s,
		ins(users, v(10), r("10", "new", nil, nil)),
		ins(users, v(19), r("9", "resurrected", nil, nil)),
		ins(users, v(11), r("11", "new", nil, nil)),
	)
	wantStats(t, st, Stats{Written: 2, Skipped: 1})
	wantAbsent(t, rdb, "shop:users:9")
	wantHash(t, rdb, "shop:users:11", map[string]string{"id": "11", "name": "new", "_v": v(11).String()})

	// A hash written outside the pipeline among absent keys: its foreign fields go.
	rdb.HSet(ctx, "shop:users:12", "foreign", "x")
	st = apply(t, s, ins(users, v(30), r("13", "n", nil, nil)), ins(users, v(31), r("12", "n", nil, nil)))
	wantStats(t, st, Stats{Written: 2})
	wantHash(t, rdb, "shop:users:12", map[string]string{"id": "12", "name": "n", "_v": v(31).String()})

	// A row of the pipeline, newer than its replay, in the middle of a call of new rows (a call of RESTORE payloads
	// finds it with the RESTORE itself): the rows before and after it land, it is fenced.
	apply(t, s, ins(users, v(50), r("21", "kept", nil, nil)))
	st = apply(t, s,
		ins(users, v(40), r("20", "n", nil, nil)),
		ins(users, v(41), r("21", "replayed", nil, nil)),
		ins(users, v(42), r("22", "n", nil, nil)),
		ins(users, v(43), r("23", "n", nil, nil)),
	)
	wantStats(t, st, Stats{Written: 3, Skipped: 1})
	wantHash(t, rdb, "shop:users:21", map[string]string{"id": "21", "name": "kept", "_v": v(50).String()})
	for id, ver := range map[string]uint32{"20": 40, "22": 42, "23": 43} {
		wantHash(t, rdb, "shop:users:"+id, map[string]string{"id": id, "name": "n", "_v": v(ver).String()})
	}
}

// TestOrderInOneBatch applies many changes of a few rows in one Apply, over several lanes and calls: each row
// must end at its last change.
func TestOrderInOneBatch(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{Lanes: 3, RowsPerCall: 7})
	var changes []change.Change
	n := uint32(0)
	for round := range 40 {
		for id := range 10 {
			n++
			rw := r(fmt.Sprint(id), fmt.Sprintf("r%d", round), nil, nil)
			switch {
			case round == 0:
				changes = append(changes, ins(users, v(n), rw))
			case round == 20 && id%2 == 0:
				changes = append(changes, del(users, v(n), rw))
			case round == 21 && id%2 == 0:
				changes = append(changes, ins(users, v(n), rw))
			default:
				changes = append(changes, upd(users, v(n), rw, rw))
			}
		}
	}
	st := apply(t, s, changes...)
	wantStats(t, st, Stats{Written: 395, Deleted: 5})
	for id := range 10 {
		last := uint32(390 + id + 1)
		wantHash(t, rdb, fmt.Sprintf("shop:users:%d", id),
			map[string]string{"id": fmt.Sprint(id), "name": "r39", "_v": v(last).String()})
	}
	// Re-applying the whole batch changes nothing.
	wantStats(t, apply(t, s, changes...), Stats{Skipped: 400})
}

func TestWideRow(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{})
	wide := &change.Table{DB: "d", Name: "wide", PK: []int{0}}
	row := make(change.Row, 1500)
	want := map[string]string{"_v": v(1).String()}
	for i := range row {
		wide.Columns = append(wide.Columns, fmt.Sprintf("c%d", i))
		row[i] = []byte(fmt.Sprint(i))
		want[wide.Columns[i]] = fmt.Sprint(i)
	}
	apply(t, s, ins(wide, v(1), row))
	wantHash(t, rdb, "d:wide:0", want)
}

func TestJSONFormat(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{Table: func(*change.Table) (TableOptions, error) {
		return TableOptions{Format: FormatJSON}, nil
	}})
	const key = "shop:users:1"
	bin := []byte{0xff, 0x00, 'a'}
	apply(t, s, ins(users, v(10), r("1", "é \"q\" \\ \n\x01<>&", nil, bin)))
	want := `{"_v":"` + v(10).String() + `","id":"1","name":"é \"q\" \\ \n\u0001<>&","note":{"b64":"/wBh"}}`
	wantString(t, rdb, key, want)
	if got := rdb.GetRange(ctxT(t), key, 7, 34).Val(); got != v(10).String() {
		t.Errorf("GETRANGE 7 34 = %q, want the version", got)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(rdb.Get(ctxT(t), key).Val()), &doc); err != nil {
		t.Fatalf("stored document is not JSON: %v", err)
	}
	if doc["name"] != "é \"q\" \\ \n\x01<>&" {
		t.Errorf("name decodes to %q", doc["name"])
	}

	// Fence and tombstones work the same.
	wantStats(t, apply(t, s, ins(users, v(9), r("1", "old", nil, nil))), Stats{Skipped: 1})
	wantString(t, rdb, key, want)
	wantStats(t, apply(t, s, upd(users, v(11), nil, r("1", "b", "e", nil))), Stats{Written: 1})
	wantString(t, rdb, key, `{"_v":"`+v(11).String()+`","id":"1","name":"b","email":"e"}`)
	wantStats(t, apply(t, s, del(users, v(12), r("1", "b", "e", nil))), Stats{Deleted: 1})
	wantAbsent(t, rdb, key)
	wantStats(t, apply(t, s, ins(users, v(11), r("1", "b", "e", nil))), Stats{Skipped: 1})
	wantAbsent(t, rdb, key)
	wantString(t, rdb, TombstoneKey(key), v(12).String())
}

func TestTTL(t *testing.T) {
	rdb := sharedClient(t)
	hashT := &change.Table{DB: "d", Name: "h", Columns: []string{"id", "x"}, PK: []int{0}}
	jsonT := &change.Table{DB: "d", Name: "j", Columns: []string{"id", "x"}, PK: []int{0}}
	s := newSink(t, rdb, Options{TombstoneTTL: 10 * time.Minute, Table: func(t *change.Table) (TableOptions, error) {
		if t.Name == "j" {
			return TableOptions{Format: FormatJSON, TTL: time.Hour}, nil
		}
		return TableOptions{TTL: time.Hour}, nil
	}})
	check := func(key string, max time.Duration) {
		t.Helper()
		ttl := rdb.PTTL(ctxT(t), key).Val()
		if ttl <= max-time.Minute || ttl > max {
			t.Errorf("PTTL %s = %v, want about %v", key, ttl, max)
		}
	}
	apply(t, s, ins(hashT, v(1), r("1", "a")), ins(jsonT, v(1), r("1", "a")))
	check("d:h:1", time.Hour)
	check("d:j:1", time.Hour)
	// Every write sets the TTL again (the hash is replaced, so it would otherwise be lost).
	rdb.Persist(ctxT(t), "d:h:1")
	rdb.Persist(ctxT(t), "d:j:1")
	apply(t, s, upd(hashT, v(2), nil, r("1", "b")), upd(jsonT, v(2), nil, r("1", "b")))
	check("d:h:1", time.Hour)
	check("d:j:1", time.Hour)
	apply(t, s, del(hashT, v(3), r("1", "b")))
	check(TombstoneKey("d:h:1"), 10*time.Minute)
	// Calls of hash rows only (compact calls on the RESTORE path): new rows, then an existing one.
	apply(t, s, ins(hashT, v(4), r("2", "c")), ins(hashT, v(5), r("3", "d")))
	check("d:h:2", time.Hour)
	check("d:h:3", time.Hour)
	rdb.Persist(ctxT(t), "d:h:2")
	apply(t, s, upd(hashT, v(6), nil, r("2", "e")))
	check("d:h:2", time.Hour)
}

func TestKeyTemplates(t *testing.T) {
	orders := &change.Table{DB: "shop", Name: "orders", Columns: []string{"user", "total", "n"}, PK: []int{2, 0}}
	row := r("u1", "9.50", "42")
	for _, tc := range []struct {
		prefix, tmpl, want string
	}{
		{"", "", "shop:orders:42:u1"},
		{"app:", "", "app:shop:orders:42:u1"},
		{"", "{o:${pk}}", "{o:42:u1}"},
		{"p/", "${table}{${user}}:${n}", "p/orders{u1}:42"},
		{"", "${db}.${table}/${pk}/$x{}", "shop.orders/42:u1/$x{}"},
	} {
		s := newSink(t, nil, Options{Prefix: tc.prefix, Table: func(*change.Table) (TableOptions, error) {
			return TableOptions{KeyTemplate: tc.tmpl}, nil
		}})
		got, err := s.Key(orders, row)
		if err != nil || got != tc.want {
			t.Errorf("Key(prefix %q, template %q) = %q, %v; want %q", tc.prefix, tc.tmpl, got, err, tc.want)
		}
	}

	for _, tc := range []struct {
		table *change.Table
		tmpl  string
		want  string
	}{
		{orders, "x:${user}", "${n} is missing"},
		{orders, "x:${n}:${total}", "total} is not a primary-key column"},
		{orders, "x:${pk}:${nope}", "unknown placeholder ${nope}"},
		{orders, "x:${pk", "unterminated placeholder"},
		{orders, "constant", "does not determine the whole primary key"},
		{&change.Table{DB: "d", Name: "nopk", Columns: []string{"a"}}, "", "no primary key"},
		{&change.Table{DB: "d", Name: "meta", Columns: []string{"id", "_v"}, PK: []int{0}}, "", `column "_v" collides`},
		{&change.Table{DB: "d", Name: "dup", Columns: []string{"id", "a", "a"}, PK: []int{0}}, "", `two columns are named "a"`},
	} {
		s := newSink(t, nil, Options{Table: func(*change.Table) (TableOptions, error) {
			return TableOptions{KeyTemplate: tc.tmpl}, nil
		}})
		err := s.CheckTable(tc.table)
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), tc.table.FullName()) {
			t.Errorf("CheckTable(%s, %q) = %v; want an ErrConfig naming the table and containing %q",
				tc.table.FullName(), tc.tmpl, err, tc.want)
		}
		if tc.tmpl != "" && err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.tmpl)) {
			t.Errorf("error %q does not name the template %q", err, tc.tmpl)
		}
	}
}

// TestConfigErrorWritesNothing checks that Apply reports a bad table before writing any change of the batch.
func TestConfigErrorWritesNothing(t *testing.T) {
	rdb := sharedClient(t)
	bad := &change.Table{DB: "d", Name: "bad", Columns: []string{"id", "_v"}, PK: []int{0}}
	s := newSink(t, rdb, Options{})
	_, err := s.Apply(ctxT(t), []change.Change{ins(users, v(1), r("1", "a", nil, nil)), ins(bad, v(2), r("1", "x"))})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "d.bad") {
		t.Fatalf("Apply = %v, want a configuration error naming d.bad", err)
	}
	if n := rdb.DBSize(ctxT(t)).Val(); n != 0 {
		t.Errorf("DBSIZE = %d after a configuration error, want 0", n)
	}
}

func TestRowErrors(t *testing.T) {
	rdb := sharedClient(t)
	blocker := "shop:users:3"
	rdb.Set(ctxT(t), blocker, "not a hash", 0)
	empty := &change.Table{DB: "d", Name: "e", Columns: []string{"id"}, PK: []int{0}}
	var changes []change.Change
	for i := range 10 {
		changes = append(changes, ins(users, v(uint32(i+1)), r(fmt.Sprint(i), "n", nil, nil)))
	}
	changes = append(changes, ins(empty, v(100), r("")))
	tableOpts := func(t *change.Table) (TableOptions, error) {
		if t == empty {
			return TableOptions{KeyTemplate: "${pk}"}, nil
		}
		return TableOptions{}, nil
	}

	var mu sync.Mutex
	var got []change.Change
	var reasons []error
	s := newSink(t, rdb, Options{Lanes: 2, RowsPerCall: 4, Table: tableOpts,
		DeadLetter: func(_ context.Context, c change.Change, reason error) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, c)
			reasons = append(reasons, reason)
			return nil
		}})
	st := apply(t, s, changes...)
	wantStats(t, st, Stats{Written: 9, DeadLettered: 2})
	if len(got) != 2 || got[0].Version != v(4) || got[1].Table != empty {
		t.Fatalf("dead-lettered %v, want the change of key 3 and the empty key", got)
	}
	var re *RowError
	if !errors.As(reasons[0], &re) || re.Key != blocker || re.Table != "shop.users" || !strings.Contains(re.Error(), "WRONGTYPE") {
		t.Errorf("reason = %v, want a RowError for %s with WRONGTYPE", reasons[0], blocker)
	}
	if !strings.Contains(reasons[1].Error(), "key is empty") {
		t.Errorf("reason = %v, want an empty key error", reasons[1])
	}
	for i := range 10 {
		if i != 3 {
			wantHash(t, rdb, fmt.Sprintf("shop:users:%d", i), map[string]string{"id": fmt.Sprint(i), "name": "n", "_v": v(uint32(i + 1)).String()})
		}
	}
	wantString(t, rdb, blocker, "not a hash")

	// Without DeadLetter the rest is still applied, and the error names key, table and version.
	rdb.Del(ctxT(t), "shop:users:0")
	s = newSink(t, rdb, Options{})
	st, err := s.Apply(ctxT(t), changes[:10])
	if err == nil || !strings.Contains(err.Error(), blocker) || !strings.Contains(err.Error(), "shop.users") ||
		!strings.Contains(err.Error(), v(4).String()) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Apply = %v, want an error naming key, table, version and WRONGTYPE", err)
	}
	wantStats(t, st, Stats{Written: 1, Skipped: 8})
	wantHash(t, rdb, "shop:users:0", map[string]string{"id": "0", "name": "n", "_v": v(1).String()})
}

func TestDeadLetterError(t *testing.T) {
	rdb := sharedClient(t)
	rdb.Set(ctxT(t), "shop:users:1", "x", 0)
	boom := errors.New("boom")
	s := newSink(t, rdb, Options{DeadLetter: func(context.Context, change.Change, error) error { return boom }})
	if _, err := s.Apply(ctxT(t), []change.Change{ins(users, v(1), r("1", "a", nil, nil))}); !errors.Is(err, boom) {
		t.Fatalf("Apply = %v, want the DeadLetter error", err)
	}
}

func TestWrite(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{})
	apply(t, s, ins(users, v(10), r("1", "a", nil, nil)), ins(users, v(10), r("2", "b", nil, nil)))
	st, err := s.Write(ctxT(t), []Write{
		{Table: users, Key: "shop:users:1", Version: v(5)},                              // older delete: skipped
		{Table: users, Key: "shop:users:2", Version: v(15)},                             // orphan removal
		{Table: users, Key: "shop:users:3", Row: r("3", "c", nil, nil), Version: v(15)}, // repair
	})
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, st, Stats{Written: 1, Deleted: 1, Skipped: 1})
	wantHash(t, rdb, "shop:users:1", map[string]string{"id": "1", "name": "a", "_v": v(10).String()})
	wantAbsent(t, rdb, "shop:users:2")
	wantHash(t, rdb, "shop:users:3", map[string]string{"id": "3", "name": "c", "_v": v(15).String()})
}

// TestRedisRestart stops Redis, applies a batch while it is down, and starts it again after two seconds: Apply
// must retry until it lands, and reload the script the restart dropped.
func TestRedisRestart(t *testing.T) {
	srv := testenv.NewRedis(t)
	// MaxRetries -1 turns off go-redis's own retries, so the sink's retry loop is what recovers.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	s := newSink(t, rdb, Options{Lanes: 2, RowsPerCall: 50})
	apply(t, s, ins(users, v(1), r("0", "warm-up", nil, nil))) // loads the script

	srv.Stop()
	started := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Second)
		started <- srv.Start()
	}()
	var changes []change.Change
	for i := range 2000 {
		changes = append(changes, ins(users, v(uint32(10+i)), r(fmt.Sprint(i), "x", nil, nil)))
	}
	st := apply(t, s, changes...)
	if err := <-started; err != nil {
		t.Fatalf("restarting Redis: %v", err)
	}
	if st.Written != 2000 || st.Retries == 0 {
		t.Errorf("stats = %+v, want 2000 written after some retries", st)
	}
	if n := rdb.DBSize(ctxT(t)).Val(); n != 2000 {
		t.Errorf("DBSIZE = %d, want 2000", n)
	}
	wantHash(t, rdb, "shop:users:1999", map[string]string{"id": "1999", "name": "x", "_v": v(2009).String()})
}

// TestRedisKilledMidApply kills Redis (SIGKILL) while a large Apply runs and starts it again two seconds later:
// Apply must retry the unfinished calls (and reload the script the restart dropped) until every row is there.
// The AOF with fsync on every write keeps what Redis acknowledged before the kill.
func TestRedisKilledMidApply(t *testing.T) {
	srv := testenv.NewRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	probe := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { probe.Close() })
	s := newSink(t, rdb, Options{Lanes: 2, RowsPerCall: 20})

	const n = 100000
	changes := make([]change.Change, n)
	for i := range changes {
		changes[i] = ins(users, v(uint32(10+i)), r(fmt.Sprint(i), "x", nil, nil))
	}
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := s.Apply(ctxT(t), changes)
		done <- result{st, err}
	}()
	for probe.DBSize(ctxT(t)).Val() == 0 {
		time.Sleep(2 * time.Millisecond)
	}
	srv.Stop()
	time.Sleep(2 * time.Second)
	if err := srv.Start(); err != nil {
		t.Fatalf("restarting Redis: %v", err)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("Apply: %v", res.err)
	}
	// Calls that ran but whose reply was lost are re-sent and skipped by the fence.
	if res.st.Written+res.st.Skipped != n || res.st.Retries == 0 {
		t.Errorf("stats = %+v, want %d written or skipped, after some retries", res.st, n)
	}
	if got := rdb.DBSize(ctxT(t)).Val(); got != n {
		t.Errorf("DBSIZE = %d, want %d", got, n)
	}
	for _, i := range []int{0, 1, n / 2, n - 1} {
		wantHash(t, rdb, fmt.Sprintf("shop:users:%d", i), map[string]string{"id": fmt.Sprint(i), "name": "x", "_v": v(uint32(10 + i)).String()})
	}
}

func TestScriptFlushed(t *testing.T) {
	rdb := sharedClient(t)
	s := newSink(t, rdb, Options{})
	apply(t, s, ins(users, v(1), r("1", "a", nil, nil)))
	if err := rdb.ScriptFlush(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, apply(t, s, ins(users, v(2), r("1", "b", nil, nil))), Stats{Written: 1})
	wantHash(t, rdb, "shop:users:1", map[string]string{"id": "1", "name": "b", "_v": v(2).String()})
}

func TestApplyCanceled(t *testing.T) {
	srv := testenv.NewRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	s := newSink(t, rdb, Options{})
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := s.Apply(ctx, []change.Change{ins(users, v(1), r("1", "a", nil, nil))}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply with Redis down = %v, want the context's error", err)
	}
}

// TestKeyIndex checks the per-slot key index of a table with TableOptions.KeyIndex: created rows are added
// (also over a key written outside the pipeline), deleted rows and old keys of primary-key changes removed,
// replays change nothing, and tables without the option get no index.
func TestKeyIndex(t *testing.T) {
	rdb := sharedClient(t)
	ctx := ctxT(t)
	codes := &change.Table{DB: "shop", Name: "codes", Columns: []string{"code", "v"}, PK: []int{0}}
	plain := &change.Table{DB: "shop", Name: "plain", Columns: []string{"id"}, PK: []int{0}}
	s := newSink(t, rdb, Options{Lanes: 2, RowsPerCall: 2, Table: func(t *change.Table) (TableOptions, error) {
		return TableOptions{KeyIndex: t == codes}, nil
	}})
	rdb.HSet(ctx, "shop:codes:foreign", "v", "x") // written outside the pipeline, no _v
	apply(t, s,
		ins(codes, v(1), r("a", "1")), ins(codes, v(2), r("b", "2")), ins(codes, v(3), r("c", "3")),
		ins(codes, v(4), r("foreign", "4")), ins(plain, v(5), r("1")),
		upd(codes, v(6), r("a", "1"), r("a", "9")), // an update: already indexed
		del(codes, v(7), r("b", "2")),
		upd(codes, v(8), r("c", "3"), r("d", "3")), // a primary-key change
		ins(codes, v(1), r("a", "1")),              // a replay: fenced, no change
	)
	members := map[string]bool{}
	for slot := range SlotCount {
		for _, m := range rdb.SMembers(ctx, IndexKey("", codes, slot)).Val() {
			if Slot(m) != slot {
				t.Errorf("member %q in the set of slot %d, but it lives in slot %d", m, slot, Slot(m))
			}
			members[m] = true
		}
		if n := rdb.Exists(ctx, IndexKey("", plain, slot)).Val(); n != 0 {
			t.Fatalf("a table without KeyIndex got an index set in slot %d", slot)
		}
	}
	want := map[string]bool{"shop:codes:a": true, "shop:codes:d": true, "shop:codes:foreign": true}
	if !maps.Equal(members, want) {
		t.Fatalf("index members %v, want %v", members, want)
	}
}

// TestColumnsChanged: a table whose columns changed (ALTER TABLE) is reported once per new column list, even
// when changes of both lists interleave (Kafka partitions), and not when a table's definition is read again with
// the same columns.
func TestColumnsChanged(t *testing.T) {
	var got []string
	s := newSink(t, sharedClient(t), Options{ColumnsChanged: func(table string, before, after []string) {
		got = append(got, fmt.Sprint(table, before, after))
	}})
	v1 := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "a"}, PK: []int{0}}
	same := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "a"}, PK: []int{0}}
	v2 := &change.Table{DB: "d", Name: "t", Columns: []string{"id", "a", "b"}, PK: []int{0}}
	other := &change.Table{DB: "d", Name: "u", Columns: []string{"id"}, PK: []int{0}}
	for _, tb := range []*change.Table{v1, other, same, v2, v1, v2, same} {
		if err := s.CheckTable(tb); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"d.t[id a] [id a b]"}; !slices.Equal(got, want) {
		t.Fatalf("reported %q, want %q", got, want)
	}
}
