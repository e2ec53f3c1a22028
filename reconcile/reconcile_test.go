package reconcile

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

// fixture is a database of the test's own and a Redis of its own.
type fixture struct {
	t     testing.TB
	my    *testenv.MariaDB
	db    string
	sqldb *sql.DB
	rdb   *redis.Client
	cl    *redis.ClusterClient    // when set, the sink and the reconciler write and read a Redis Cluster
	opts  map[string]TableOptions // by table name
	ckpt  *change.Position        // the fake stream checkpoint; nil = no stream
	// hashRows is Config.HashRows ("" = the default, rows hashed in the reconciler on a single Redis).
	hashRows string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	my := testenv.SharedMariaDB(t)
	rd := testenv.NewRedis(t)
	f := &fixture{t: t, my: my, opts: map[string]TableOptions{}}
	f.db = my.NewDatabase(t)
	f.sqldb = my.Root(t, f.db)
	f.rdb = redis.NewClient(&redis.Options{Addr: rd.Addr(), DisableIdentity: true})
	t.Cleanup(func() { f.rdb.Close() })
	return f
}

func (f *fixture) exec(stmts ...string) {
	f.t.Helper()
	for _, s := range stmts {
		if _, err := f.sqldb.Exec(s); err != nil {
			f.t.Fatalf("exec %.200q: %v", s, err)
		}
	}
}

// execNoBinlog runs stmt without writing the binlog: the change happens behind the stream's back.
func (f *fixture) execNoBinlog(stmt string) {
	f.t.Helper()
	ctx := context.Background()
	conn, err := f.sqldb.Conn(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"SET sql_log_bin = 0", stmt, "SET sql_log_bin = 1"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			f.t.Fatalf("exec %.200q: %v", q, err)
		}
	}
}

// client is the Redis the sink and the reconciler use.
func (f *fixture) client() redis.UniversalClient {
	if f.cl != nil {
		return f.cl
	}
	return f.rdb
}

func (f *fixture) sink() *sink.Sink {
	f.t.Helper()
	s, err := sink.New(f.client(), sink.Options{Table: func(t *change.Table) (sink.TableOptions, error) {
		o := f.opts[t.Name]
		return sink.TableOptions{Format: o.Format, KeyTemplate: o.KeyTemplate, TTL: o.TTL, KeyIndex: o.KeyIndex}, nil
	}})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) reconciler(chunkRows int) *Reconciler {
	f.t.Helper()
	cfg := Config{
		MySQL:     MySQLConfig{Addr: f.my.Addr(), User: "root", Password: f.my.RootPassword},
		DB:        f.sqldb,
		Flavor:    "mariadb",
		Redis:     f.client(),
		Sink:      f.sink(),
		Selected:  func(db, _ string) bool { return db == f.db },
		Table:     func(_, t string) TableOptions { return f.opts[t] },
		ChunkRows: chunkRows,
		StateKey:  "test:reconcile",
		HashRows:  f.hashRows,
	}
	if f.ckpt != nil {
		cfg.StreamPosition = func(context.Context) (change.Position, bool, error) { return *f.ckpt, true, nil }
		cfg.SettleTimeout = 300 * time.Millisecond
	}
	r, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) run(r *Reconciler, opts PassOptions) *Report {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := r.Run(ctx, opts)
	if err != nil {
		f.t.Fatalf("pass: %v", err)
	}
	return rep
}

func tableReport(t *testing.T, rep *Report, name string) TableReport {
	t.Helper()
	for _, tr := range rep.Tables {
		if strings.HasSuffix(tr.Table, "."+name) {
			return tr
		}
	}
	t.Fatalf("no report for table %s in %+v", name, rep.Tables)
	return TableReport{}
}

// snapshot reads db.table's rows over the text protocol (BIT as col+0, FLOAT as CAST(col AS DOUBLE)) and the
// Redis keys of the table, and returns the differences (FLOAT/DOUBLE compared as numbers).
func (f *fixture) differences(table string, pk ...string) []string {
	f.t.Helper()
	r := f.reconciler(1000)
	tb, err := loadTable(context.Background(), f.sqldb, f.db, table, f.opts[table])
	if err != nil {
		f.t.Fatal(err)
	}
	_, rows, err := testenv.SelectText(f.my.Addr(), "root", f.my.RootPassword, f.db,
		"SELECT "+tb.rowSelect()+" FROM "+tb.quoted)
	if err != nil {
		f.t.Fatal(err)
	}
	want := map[string]change.Row{}
	for _, vals := range rows {
		row, err := tb.render(vals)
		if err != nil {
			f.t.Fatal(err)
		}
		k, err := tb.key(r.cfg.Sink, tb.pkOf(row))
		if err != nil {
			f.t.Fatal(err)
		}
		want[k] = row
	}
	pat, err := parsePattern("", f.opts[table].KeyTemplate, tb)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx := context.Background()
	var keys []string
	it := f.rdb.Scan(ctx, 0, pat.glob(), 1000).Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		f.t.Fatal(err)
	}
	got, err := r.redis.read(ctx, tb, keys)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for i, k := range keys {
		w, ok := want[k]
		switch {
		case !ok:
			out = append(out, "extra key "+k)
		case got[i].bad || !tb.sameRow(w, got[i].fields):
			out = append(out, fmt.Sprintf("key %s = %v, want %q", k, got[i].fields, w))
		}
		delete(want, k)
	}
	for k := range want {
		out = append(out, "missing key "+k)
	}
	return out
}

const typesDDL = `CREATE TABLE types (
	id INT NOT NULL PRIMARY KEY,
	c_tiny TINYINT, c_ubig BIGINT UNSIGNED, c_dec DECIMAL(10,2), c_float FLOAT, c_double DOUBLE,
	c_date DATE, c_dt DATETIME(3), c_ts TIMESTAMP(6) NULL DEFAULT NULL, c_time TIME(2), c_year YEAR,
	c_char CHAR(10), c_char_l CHAR(10) CHARACTER SET latin1, c_varchar VARCHAR(50),
	c_text_l TEXT CHARACTER SET latin1, c_binary BINARY(4), c_varbinary VARBINARY(20), c_blob BLOB,
	c_enum ENUM('a','b c','é'), c_set SET('x','y','é'), c_bit BIT(10), c_json JSON,
	c_gen BIGINT AS (id * 2) VIRTUAL
) CHARACTER SET utf8mb4`

func typesRow(id int) string {
	floats := []string{"0.1", "123456789", "1.5e-16", "3.4e38", "-0.000123456789", "1e15", "0", "-2.5"}
	doubles := []string{"0.1", "1e15", "0.30000000000000004", "1.5e-16", "123456789.123456789", "-1e-300", "0", "2.5"}
	nul := func(s string) string {
		if id%7 == 3 {
			return "NULL"
		}
		return s
	}
	return fmt.Sprintf("(%d, %d, %d, %d.%02d, %s, %s, '2020-0%d-1%d', '2021-01-01 10:00:0%d.123', '2022-06-01 12:00:00.5', "+
		"'-12:00:0%d.5', %d, %s, 'é€%d', 'v%d', %s, 'a', X'00ff%02x', X'000102%02x', 'é', 'x,é', b'%b', '{\"k\": %d}')",
		id, id%128-64, uint64(id)*1e15, id, id%100, nul(floats[id%len(floats)]), doubles[id%len(doubles)],
		id%9+1, id%10, id%10, id%10, 1901+id%200, nul(fmt.Sprintf("'c%d  '", id%10)), id, id, nul("''"), id%256,
		id%256, id%1024, id)
}

func insertTypes(f *fixture, from, to int) {
	var vals []string
	for id := from; id <= to; id++ {
		vals = append(vals, typesRow(id))
		if len(vals) == 200 || id == to {
			f.exec("INSERT INTO types (id, c_tiny, c_ubig, c_dec, c_float, c_double, c_date, c_dt, c_ts, c_time, c_year, " +
				"c_char, c_char_l, c_varchar, c_text_l, c_binary, c_varbinary, c_blob, c_enum, c_set, c_bit, c_json) VALUES " +
				strings.Join(vals, ","))
			vals = vals[:0]
		}
	}
}

// TestDigestsAgree checks that MySQL's SQL, Redis's script and Go compute the same row hashes, so that a table
// loaded by the reconciler compares equal range by range, for every column type.
func TestDigestsAgree(t *testing.T) {
	f := newFixture(t)
	f.exec(typesDDL)
	insertTypes(f, 1, 300)
	r := f.reconciler(64)
	rep := f.run(r, PassOptions{})
	tr := tableReport(t, rep, "types")
	if tr.Missing.Found != 300 || tr.Missing.Repaired != 300 || tr.Extra.Found+tr.Stale.Found != 0 {
		t.Fatalf("bootstrap pass: %+v, want 300 missing rows repaired and nothing else", tr)
	}
	if d := f.differences("types"); len(d) > 0 {
		t.Fatalf("Redis differs from MySQL after the bootstrap pass:\n%s", strings.Join(d, "\n"))
	}
	// A second pass over identical data: every range digest must match, for every type.
	rep = f.run(r, PassOptions{})
	tr = tableReport(t, rep, "types")
	if tr.RangesDiffered != 0 || tr.Drift() != 0 || tr.Rows != 300 {
		t.Fatalf("second pass: %+v, want 300 rows in ranges that all match", tr)
	}

	// Row by row: the SQL hash, the script's hash and Go's hash of the rendered row.
	ctx := context.Background()
	tb, err := loadTable(ctx, f.sqldb, f.db, "types", TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, rows, err := testenv.SelectText(f.my.Addr(), "root", "", f.db,
		"SELECT "+tb.rowSelect()+", "+tb.rowHashExpr()+" FROM types ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var sqlHashes []uint64
	for _, vals := range rows {
		row, err := tb.render(vals[:len(tb.cols)])
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseHash16(vals[len(tb.cols)])
		if err != nil {
			t.Fatal(err)
		}
		if g := tb.rowHash(row, false); g != h {
			t.Fatalf("row %s: Go hash %016x, SQL hash %016x (row %q)", row[0], g, h, row)
		}
		k, _ := tb.key(r.cfg.Sink, tb.pkOf(row))
		keys = append(keys, k)
		sqlHashes = append(sqlHashes, h)
	}
	f.hashRows = HashRowsRedis
	rs := f.reconciler(64)
	for _, c := range []struct {
		name   string
		r      *Reconciler
		cached bool
	}{{"reconciler", r, false}, {"script", rs, false}, {"script, cached", rs, true}, {"script, cached", rs, true}} {
		d, err := c.r.redis.rangeDigest(ctx, tb, c.cached, keys, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range d.hashes {
			if !g.exists || g.hash != sqlHashes[i] {
				t.Fatalf("key %s (%s): hash %+v, SQL hash %016x", keys[i], c.name, g, sqlHashes[i])
			}
		}
	}
}

// TestRowsHashedInTheReconciler checks that the reconciler's own hashing of rows read with HGETALL agrees with the
// digest script on keys that are not plain rows (missing, another type, extra fields, no "_v"), finds probe keys,
// caches row hashes only where they are missing or stale, and leaves a row the stream rewrote meanwhile alone.
func TestRowsHashedInTheReconciler(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10), n INT)",
		"INSERT INTO q VALUES (1, 'a', 1), (2, 'b', NULL), (3, 'c', 3), (4, 'd', 4), (5, 'e', 5), (6, '', 6)")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	f.hashRows = HashRowsRedis
	rs := f.reconciler(100)
	ctx := context.Background()
	k := func(id int) string { return fmt.Sprintf("%s:q:%d", f.db, id) }
	f.rdb.Del(ctx, k(2))
	f.rdb.HSet(ctx, k(3), "extra", "x")
	f.rdb.HDel(ctx, k(4), "_v")
	f.rdb.Del(ctx, k(5))
	f.rdb.Set(ctx, k(5), "a string", 0)
	f.rdb.HSet(ctx, k(6), "v", "changed")
	f.rdb.HSet(ctx, k(9), "v", "probe hit")
	tb, err := loadTable(ctx, f.sqldb, f.db, "q", TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for id := 1; id <= 7; id++ {
		rows = append(rows, k(id))
	}
	probes := []string{k(8), k(9), k(10)}
	want, err := rs.redis.rangeDigest(ctx, tb, false, rows, probes)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.redis.rangeDigest(ctx, tb, false, rows, probes)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hashed in the reconciler: %+v\nby the script:           %+v", got, want)
	}
	if want.count != 5 || !reflect.DeepEqual(want.hits, []int{1}) || !want.hashes[4].bad || want.hashes[1].exists {
		t.Fatalf("digest %+v: want 5 keys, key 5 not a row, key 2 missing, probe 2 a hit", want)
	}
	// The script cached row 1's hash; the reconciler checks it and writes none.
	h1 := f.rdb.HGet(ctx, k(1), "_h").Val()
	f.rdb.HSet(ctx, k(7), "v", "g", "_v", "1") // a row without a cached hash
	f.rdb.HSet(ctx, k(1), "_h", h1[:8]+"0000000000000000")
	if _, err := r.redis.rangeDigest(ctx, tb, false, rows, nil); err != nil {
		t.Fatal(err)
	}
	if got := f.rdb.HGet(ctx, k(1), "_h").Val(); got != h1 {
		t.Fatalf("stale cached hash of row 1: %q after a pass, want %q", got, h1)
	}
	if got := f.rdb.HGet(ctx, k(7), "_h").Val(); len(got) != 24 || got[:8] != h1[:8] {
		t.Fatalf("row 7's cached hash: %q, want one with the signature %s", got, h1[:8])
	}
	// A row rewritten between the read and the write of its hash keeps no stale hash.
	if err := cacheHashes(ctx, f.rdb, []string{k(1), "another version", h1[:8] + "1111111111111111"}); err != nil {
		t.Fatal(err)
	}
	if got := f.rdb.HGet(ctx, k(1), "_h").Val(); got != h1 {
		t.Fatalf("row 1's cached hash: %q after a write for another version, want %q", got, h1)
	}
}

// TestLargeRowsHashedInTheReconciler checks that rows of a megabyte are read a few at a time.
func TestLargeRowsHashedInTheReconciler(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE big (id INT PRIMARY KEY, v LONGBLOB)",
		"INSERT INTO big SELECT seq, REPEAT(CHAR(65 + seq % 26), 1048576) FROM seq_1_to_40",
		"CREATE TABLE small (id INT PRIMARY KEY, v INT)", "INSERT INTO small SELECT seq, seq FROM seq_1_to_2000")
	r := f.reconciler(1000)
	f.run(r, PassOptions{})
	rep := f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "big"); tr.Drift() != 0 || tr.Rows != 40 {
		t.Fatalf("second pass: %+v, want 40 rows and no drift", tr)
	}
	if tr := tableReport(t, rep, "small"); tr.Drift() != 0 || tr.Rows != 2000 {
		t.Fatalf("second pass: %+v, want 2000 rows and no drift", tr)
	}
	if b := r.redis.pull.rowBytes(f.db + ".big").Load(); b < 1<<20 || pullBatchBytes/b > 4 {
		t.Fatalf("mean row bytes %d: want batches of at most 4 rows of 1 MiB", b)
	}
	// The batches are sized per table: the small rows keep batches of pullBatchKeys.
	if b := r.redis.pull.rowBytes(f.db + ".small").Load(); b == 0 || pullBatchBytes/b < pullBatchKeys {
		t.Fatalf("mean row bytes of the small table %d: want full batches", b)
	}
}

// TestCachedHashes checks that cached row hashes are used, dropped by the sink's writes, and that a pass
// without them sees an edit that kept the cached hash.
func TestCachedHashes(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a'), (2, 'b'), (3, 'c')")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	f.run(r, PassOptions{Cached: true}) // computes and caches
	ctx := context.Background()
	k := f.db + ":q:1"
	if h := f.rdb.HGet(ctx, k, "_h").Val(); len(h) != 24 {
		t.Fatalf("_h = %q, want a cached hash", h)
	}
	f.rdb.HSet(ctx, k, "v", "edited") // keeps _h
	if tr := tableReport(t, f.run(r, PassOptions{Cached: true}), "q"); tr.Drift() != 0 {
		t.Fatalf("cached pass: %+v, want the edit unseen (the cache is trusted)", tr)
	}
	if tr := tableReport(t, f.run(r, PassOptions{}), "q"); tr.Stale != (Count{1, 1}) {
		t.Fatalf("full pass: %+v, want the edit found and repaired", tr)
	}
	if f.rdb.HExists(ctx, k, "_h").Val() {
		t.Fatal("the repair (a sink write) kept the cached hash")
	}
	f.rdb.Del(ctx, f.db+":q:2")
	if tr := tableReport(t, f.run(r, PassOptions{Cached: true}), "q"); tr.Missing != (Count{1, 1}) {
		t.Fatalf("cached pass: %+v, want a deleted key found", tr)
	}
}

// TestFloatCanonicalForm checks the script's FLOAT canonicalisation against Go's over awkward float32 values.
func TestFloatCanonicalForm(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE fl (id INT PRIMARY KEY, f FLOAT)")
	vals := []string{"0.1", "1e-45", "3.4e38", "-1.1754944e-38", "16777217", "0.3", "1e15", "1e-15", "123.456",
		"-0.000001", "7e22", "2.5", "100", "0.5"}
	var ins []string
	for i, v := range vals {
		ins = append(ins, fmt.Sprintf("(%d, %s)", i+1, v))
	}
	f.exec("INSERT INTO fl VALUES " + strings.Join(ins, ","))
	r := f.reconciler(1000)
	f.run(r, PassOptions{})
	rep := f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "fl"); tr.RangesDiffered != 0 {
		t.Fatalf("FLOAT digests differ between MySQL and Redis: %+v", tr)
	}
	// Go's canonical form and the stored value round-trip to the same float32.
	tb, err := loadTable(context.Background(), f.sqldb, f.db, "fl", TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0.1", "3.4e38", "1e-45"} {
		c := canonical(kindFloat, []byte(v))
		if !tb.sameRow(change.Row{[]byte("1"), c}, map[string]string{"id": "1", "f": v}) {
			t.Errorf("canonical(%s) = %s does not compare equal to it", v, c)
		}
	}
}

// TestPassFindsAndRepairsDrift injects every kind of drift and checks the report's counts and the result.
func TestPassFindsAndRepairsDrift(t *testing.T) {
	f, r := loadedTypes(t, 2000)
	ctx := context.Background()
	key := func(id int) string { return typesKey(f, id) }

	// missing: 5 keys deleted
	for _, id := range []int{1, 2, 500, 1999, 2000} {
		f.rdb.Del(ctx, key(id))
	}
	// stale: a changed field, an extra field, a removed field, a wrong type
	f.rdb.HSet(ctx, key(10), "c_varchar", "changed")
	f.rdb.HSet(ctx, key(11), "zz_extra", "x")
	f.rdb.HDel(ctx, key(12), "c_dec")
	f.rdb.Del(ctx, key(13))
	f.rdb.Set(ctx, key(13), "not a hash", 0)
	// extra: rows deleted in MySQL behind the stream's back (their keys stay), inside and after the key range
	f.execNoBinlog("DELETE FROM types WHERE id IN (20, 21, 1500, 2000)")
	// key 2000 was both deleted in Redis and in MySQL: no drift.

	dry := f.run(r, PassOptions{DryRun: true})
	tr := tableReport(t, dry, "types")
	if tr.Missing.Found != 4 || tr.Stale.Found != 4 || tr.Extra.Found != 3 || tr.Missing.Repaired+tr.Stale.Repaired+tr.Extra.Repaired != 0 {
		t.Fatalf("dry run: %+v, want 4 missing, 4 stale, 3 extra, nothing repaired", tr)
	}
	if d := f.differences("types"); len(d) != 11 {
		t.Fatalf("dry run changed Redis: %d differences, want 11:\n%s", len(d), strings.Join(d, "\n"))
	}

	rep := f.run(r, PassOptions{})
	tr = tableReport(t, rep, "types")
	want := TableReport{Missing: Count{4, 4}, Stale: Count{4, 4}, Extra: Count{3, 3}}
	if tr.Missing != want.Missing || tr.Stale != want.Stale || tr.Extra != want.Extra || tr.Rows != 1996 {
		t.Fatalf("pass: %+v, want %+v over 1996 rows", tr, want)
	}
	if tr.MySQLBytes == 0 {
		t.Errorf("no MySQL bytes counted")
	}
	if d := f.differences("types"); len(d) > 0 {
		t.Fatalf("Redis differs from MySQL after the pass:\n%s", strings.Join(d, "\n"))
	}
	rep = f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "types"); tr.Drift() != 0 || tr.RangesDiffered != 0 {
		t.Fatalf("pass after repair: %+v, want no drift", tr)
	}
}

// TestDriftInEveryRange spreads drift over every range, so that after the first range the digest queries list
// the row hashes and ranges are fixed from them (fixListed), next to a range with an orphan (found by probing,
// fixed the other way).
func TestDriftInEveryRange(t *testing.T) {
	f, r := loadedTypes(t, 3000)
	ctx := context.Background()
	key := func(id int) string { return typesKey(f, id) }
	missing, stale := 0, 0
	for id := 1; id <= 3000; id += 37 {
		if id%2 == 0 {
			f.rdb.Del(ctx, key(id))
			missing++
		} else {
			f.rdb.HSet(ctx, key(id), "c_varchar", "drift")
			stale++
		}
	}
	f.execNoBinlog("DELETE FROM types WHERE id = 1700")

	// Ranges of 50 rows: the producer runs up to seven ranges ahead of the comparisons that set differing, so the
	// table must have many more ranges than that for some to list their hashes.
	r.cfg.ChunkTarget = time.Nanosecond
	before := r.listedFixes.Load()
	rep := f.run(r, PassOptions{})
	tr := tableReport(t, rep, "types")
	want := TableReport{Missing: Count{int64(missing), int64(missing)}, Stale: Count{int64(stale), int64(stale)}, Extra: Count{1, 1}}
	if tr.Missing != want.Missing || tr.Stale != want.Stale || tr.Extra != want.Extra {
		t.Fatalf("pass: %+v, want %+v", tr, want)
	}
	if d := f.differences("types"); len(d) > 0 {
		t.Fatalf("Redis differs from MySQL after the pass:\n%s", strings.Join(d, "\n"))
	}
	if n := r.listedFixes.Load() - before; n == 0 || n >= int64(tr.RangesDiffered) {
		t.Fatalf("%d of %d differing ranges fixed from listed row hashes, want all but the first and the orphan's", n, tr.RangesDiffered)
	}
}

// TestFixListed checks the keys fixListed reads at the snapshot: a key whose hash matches is not read, a key
// whose hash differs is read, and a key whose row is gone at the snapshot is an orphan candidate (when Redis
// holds it).
func TestFixListed(t *testing.T) {
	f := newFixture(t)
	f.exec(typesDDL)
	insertTypes(f, 1, 10)
	r := f.reconciler(100)
	ctx := context.Background()
	tb, err := loadTable(ctx, f.sqldb, f.db, "types", TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cn, err := dial(ctx, r.cfg.MySQL, &r.mysqlN)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.close()
	f.execNoBinlog("DELETE FROM types WHERE id IN (4, 5)")
	tr := &tableRun{r: r, tb: tb, rep: &TableReport{}}
	c := &chunk{redis: &digestResult{count: 4}}
	for id, h := range map[int]keyHash{
		2: {exists: true, hash: 7},   // equal: not read
		3: {exists: true, hash: 8},   // differs: read, the row
		4: {exists: true, hash: 9},   // differs, row gone: orphan candidate
		5: {exists: false},           // missing in Redis, row gone: nothing
		6: {exists: true, bad: true}, // not a row of the table: read
	} {
		pk := [][]byte{[]byte(strconv.Itoa(id))}
		k, err := tb.key(r.cfg.Sink, pk)
		if err != nil {
			t.Fatal(err)
		}
		c.pks, c.keys, c.hashes = append(c.pks, pk), append(c.keys, k), append(c.hashes, 7)
		c.redis.hashes = append(c.redis.hashes, h)
	}
	it, err := tr.fix(ctx, cn, c)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{} // key: with a row
	for _, cd := range it.cands {
		got[cd.key] = cd.want != nil
	}
	want := map[string]bool{typesKey(f, 3): true, typesKey(f, 4): false, typesKey(f, 6): true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("candidates %v, want %v", got, want)
	}
}

// typesKey is the Redis key of row id of the types table.
func typesKey(f *fixture, id int) string { return fmt.Sprintf("%s:types:%d", f.db, id) }

// loadedTypes creates the types table with rows 1..n and loads it into Redis with a first pass.
func loadedTypes(t *testing.T, n int) (*fixture, *Reconciler) {
	t.Helper()
	f := newFixture(t)
	f.exec(typesDDL)
	insertTypes(f, 1, n)
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	return f, r
}

// TestSamePositionRepair checks that a row edited outside the pipeline is repaired even when no binlog event
// happened since the repair that wrote it (same snapshot version).
func TestSamePositionRepair(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a'), (2, 'b')")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	ctx := context.Background()
	f.rdb.HSet(ctx, f.db+":q:1", "v", "edited")
	rep := f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "q"); tr.Stale != (Count{1, 1}) {
		t.Fatalf("pass: %+v, want one stale row repaired", tr)
	}
	if v := f.rdb.HGet(ctx, f.db+":q:1", "v").Val(); v != "a" {
		t.Fatalf("v = %q after the repair, want a", v)
	}
}

// TestInFlightIsNotDrift checks that a Redis row with a version newer than the snapshot is left alone, and that
// a repair never overwrites it.
func TestInFlightIsNotDrift(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a'), (2, 'b'), (3, 'c')")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	ctx := context.Background()
	newer := change.Version{File: 1 << 30, Pos: 4, Seq: 1}.String()
	f.rdb.HSet(ctx, f.db+":q:1", "v", "from the future", "_v", newer)
	f.rdb.Del(ctx, f.db+":q:2")
	f.rdb.Set(ctx, sink.TombstoneKey(f.db+":q:2"), newer, 0)
	rep := f.run(r, PassOptions{})
	tr := tableReport(t, rep, "q")
	if tr.Drift() != 0 || tr.InFlight != 2 {
		t.Fatalf("pass: %+v, want 2 in flight and no drift", tr)
	}
	if v := f.rdb.HGet(ctx, f.db+":q:1", "v").Val(); v != "from the future" {
		t.Fatalf("the newer row was overwritten: v = %q", v)
	}
	if n := f.rdb.Exists(ctx, f.db+":q:2").Val(); n != 0 {
		t.Fatalf("the row deleted by a newer change came back")
	}
}

// TestSettleWaitsForTheStream checks that a difference is decided only once the stream's checkpoint passed the
// snapshot, and counted unsettled when the stream does not move.
func TestSettleWaitsForTheStream(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a')")
	f.ckpt = &change.Position{File: "mariadb-bin.000001", Pos: 4} // far behind
	r := f.reconciler(100)
	rep := f.run(r, PassOptions{})
	tr := tableReport(t, rep, "q")
	if tr.Missing != (Count{1, 1}) || tr.Unsettled != 1 {
		t.Fatalf("pass with a stalled stream: %+v, want 1 missing repaired and counted unsettled", tr)
	}
	f.ckpt = &change.Position{File: "mariadb-bin.999999", Pos: 4} // ahead of every snapshot
	f.rdb.Del(context.Background(), f.db+":q:1")
	r = f.reconciler(100)
	rep = f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "q"); tr.Missing != (Count{1, 1}) || tr.Unsettled != 0 {
		t.Fatalf("pass with a stream ahead: %+v, want 1 missing repaired, settled", tr)
	}
}

// TestStalledStreamWaitedForOnce checks that once a settle wait saw the stream's checkpoint stand still, later
// tables decide at once while it stays there (a stopped stream cost SettleTimeout per table), and wait again once
// it moved.
func TestStalledStreamWaitedForOnce(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q1 (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q1 VALUES (1, 'a')",
		"CREATE TABLE q2 (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q2 VALUES (1, 'b')")
	f.ckpt = &change.Position{File: "mariadb-bin.000001", Pos: 4} // far behind, and still
	r := f.reconciler(100)
	var logs testenv.LogBuffer
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	rep := f.run(r, PassOptions{})
	for _, name := range []string{"q1", "q2"} {
		if tr := tableReport(t, rep, name); tr.Missing != (Count{1, 1}) || tr.Unsettled != 1 {
			t.Fatalf("%s: %+v, want 1 missing repaired and counted unsettled", name, tr)
		}
	}
	if n := strings.Count(logs.String(), "did not move"); n != 1 {
		t.Fatalf("the stalled stream was waited for %d times in one pass, want once:\n%s", n, logs.String())
	}
	// The stream moved (but not far enough): the next pass waits for it again.
	f.ckpt = &change.Position{File: "mariadb-bin.000001", Pos: 5}
	f.rdb.Del(context.Background(), f.db+":q1:1")
	f.run(r, PassOptions{Tables: []string{f.db + ".q1"}})
	if n := strings.Count(logs.String(), "did not move"); n != 2 {
		t.Fatalf("a moved stream was not waited for again (%d waits):\n%s", n, logs.String())
	}
}

// TestDigestCallsSizedByRows checks that the digest script calls of a table of large rows hold few keys: a call
// runs alone in Redis and reads every field of its rows, and 100 rows of a megabyte held Redis for over a second a
// call, past the client's read timeout (the pass failed, and the lease went unrenewed).
func TestDigestCallsSizedByRows(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE big (id INT PRIMARY KEY, v LONGBLOB)",
		"INSERT INTO big SELECT seq, REPEAT(CHAR(65 + seq % 26), 1048576) FROM seq_1_to_60")
	f.hashRows = HashRowsRedis
	r := f.reconciler(1000)
	f.run(r, PassOptions{}) // writes the rows
	calls := func() int64 { return commandCalls(t, f.rdb, "evalsha") }
	before := calls()
	rep := f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "big"); tr.Drift() != 0 || tr.Rows != 60 {
		t.Fatalf("second pass: %+v, want 60 rows and no drift", tr)
	}
	// One call of firstCallKeys keys measures the rows, then about callTime of rows per call: one row each.
	if n := calls() - before; n < 30 {
		t.Fatalf("60 rows of 1 MiB were hashed in %d script calls, want calls of a few rows", n)
	}
}

// TestCompositeKeysJSONAndTTL covers composite string keys (latin1 and binary), the JSON format and TTL tables.
func TestCompositeKeysJSONAndTTL(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE comp (a VARCHAR(10) CHARACTER SET latin1, b VARBINARY(8), c INT, v TEXT, PRIMARY KEY (a, b, c))",
		"CREATE TABLE js (id BIGINT PRIMARY KEY, v BLOB, w VARCHAR(20))",
		"CREATE TABLE ttl (id INT PRIMARY KEY, v INT)")
	var vals, jvals, tvals []string
	for i := range 600 {
		vals = append(vals, fmt.Sprintf("('%s', X'%02x00', %d, 'v%d')", []string{"é", "A", "b", "Z z"}[i%4], i%7, i, i))
		jvals = append(jvals, fmt.Sprintf("(%d, X'ff00%02x', 'é\"\\\\%d')", i*3, i%256, i))
		tvals = append(tvals, fmt.Sprintf("(%d, %d)", i, i))
	}
	f.exec("INSERT INTO comp VALUES "+strings.Join(vals, ","), "INSERT INTO js VALUES "+strings.Join(jvals, ","),
		"INSERT INTO ttl VALUES "+strings.Join(tvals, ","))
	f.opts["js"] = TableOptions{Format: sink.FormatJSON}
	f.opts["ttl"] = TableOptions{TTL: time.Hour}
	r := f.reconciler(50)
	rep := f.run(r, PassOptions{})
	for _, name := range []string{"comp", "js", "ttl"} {
		if tr := tableReport(t, rep, name); tr.Missing.Found != 600 {
			if name != "ttl" {
				t.Fatalf("%s bootstrap: %+v, want 600 missing", name, tr)
			}
		}
	}
	if tr := tableReport(t, rep, "ttl"); tr.Expired != 600 || tr.Missing.Found != 0 {
		t.Fatalf("ttl table: %+v, want 600 missing keys taken for expired", tr)
	}
	for _, name := range []string{"comp", "js"} {
		if d := f.differences(name); len(d) > 0 {
			t.Fatalf("%s differs after the bootstrap:\n%s", name, strings.Join(d, "\n"))
		}
	}
	rep = f.run(r, PassOptions{})
	for _, name := range []string{"comp", "js"} {
		if tr := tableReport(t, rep, name); tr.RangesDiffered != 0 || tr.Drift() != 0 {
			t.Fatalf("%s second pass: %+v, want every range equal", name, tr)
		}
	}
	ctx := context.Background()
	f.rdb.Set(ctx, f.db+":js:3", `{"_v":"0000000000000000000000000000","v":"x"}`, 0)
	f.rdb.HSet(ctx, f.db+":comp:A:\x01\x00:1", "v", "changed")
	f.opts["ttl"] = TableOptions{TTL: time.Hour, RestoreExpired: true}
	r = f.reconciler(50)
	rep = f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "js"); tr.Stale != (Count{1, 1}) {
		t.Fatalf("js: %+v, want 1 stale repaired", tr)
	}
	if tr := tableReport(t, rep, "comp"); tr.Stale != (Count{1, 1}) {
		t.Fatalf("comp: %+v, want 1 stale repaired", tr)
	}
	if tr := tableReport(t, rep, "ttl"); tr.Missing != (Count{600, 600}) {
		t.Fatalf("ttl with restore: %+v, want 600 missing restored", tr)
	}
	if ttl := f.rdb.PTTL(ctx, f.db+":ttl:5").Val(); ttl <= 0 {
		t.Fatalf("restored key has no TTL (%v)", ttl)
	}
	for _, name := range []string{"comp", "js", "ttl"} {
		if d := f.differences(name); len(d) > 0 {
			t.Fatalf("%s differs after the repair:\n%s", name, strings.Join(d, "\n"))
		}
	}
}

// TestScanOrphans checks that keys written outside the pipeline far from any row are only found by a scan, which
// full passes make and cached passes only when asked.
func TestScanOrphans(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a'), (2, 'b'), (3, 'c')")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	ctx := context.Background()
	f.rdb.HSet(ctx, f.db+":q:900000", "v", "stray")
	f.rdb.HSet(ctx, f.db+":q:007", "v", "not canonical")
	f.rdb.HSet(ctx, f.db+":q:abc", "v", "not an integer")
	rep := f.run(r, PassOptions{NoScanOrphans: true})
	if tr := tableReport(t, rep, "q"); tr.Extra.Found != 0 {
		t.Fatalf("pass without scan: %+v, want the stray keys unseen", tr)
	}
	rep = f.run(r, PassOptions{Cached: true})
	if tr := tableReport(t, rep, "q"); tr.Extra.Found != 0 || tr.OrphanScan != 0 {
		t.Fatalf("cached pass: %+v, want no scan", tr)
	}
	scans := func() int64 { return commandCalls(t, f.rdb, "scan") }
	before := scans()
	rep = f.run(r, PassOptions{})
	if tr := tableReport(t, rep, "q"); tr.Extra != (Count{2, 2}) || tr.OrphanScan != 6 {
		t.Fatalf("full pass: %+v, want 2 orphans of 6 keys scanned", tr)
	}
	if n := scans() - before; n != 1 {
		t.Fatalf("full pass made %d SCAN calls, want the one that ran alongside the ranges", n)
	}
	f.rdb.HSet(ctx, f.db+":q:800000", "v", "stray")
	rep = f.run(r, PassOptions{Cached: true, ScanOrphans: true})
	if tr := tableReport(t, rep, "q"); tr.Extra != (Count{1, 1}) {
		t.Fatalf("cached pass with scan: %+v, want the new orphan", tr)
	}
	if n := f.rdb.Exists(ctx, f.db+":q:900000", f.db+":q:007", f.db+":q:800000").Val(); n != 0 {
		t.Fatalf("%d orphan keys left", n)
	}
	if n := f.rdb.Exists(ctx, f.db+":q:abc", f.db+":q:1").Val(); n != 2 {
		t.Fatalf("the scan removed a key it cannot attribute or a real row")
	}

	// A gap too wide to probe: the scan looks its keys up (keys inside a fully probed span it need not).
	f.exec("CREATE TABLE g (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO g VALUES (1, 'a'), (5000000, 'b')")
	f.run(r, PassOptions{})
	f.rdb.HSet(ctx, f.db+":g:2500000", "v", "stray")
	before = scans()
	rep = f.run(r, PassOptions{Tables: []string{f.db + ".g"}})
	if tr := tableReport(t, rep, "g"); tr.Extra != (Count{1, 1}) {
		t.Fatalf("full pass over a table with a gap: %+v, want the orphan in the gap", tr)
	}
	if n := scans() - before; n != 2 {
		t.Fatalf("full pass over a table with a gap made %d SCAN calls, want 2 (the one alongside the ranges counted"+
			" on a span the ranges did not probe, so the keys were scanned again)", n)
	}

	// A key template of its own may share its pattern with keys of other programs: only --scan-orphans deletes.
	f.exec("CREATE TABLE c (id INT PRIMARY KEY)", "INSERT INTO c VALUES (1)")
	f.opts["c"] = TableOptions{KeyTemplate: "session:${id}"}
	f.run(r, PassOptions{Tables: []string{f.db + ".c"}})
	f.rdb.HSet(ctx, "session:777777", "user", "someone else's")
	if tr := tableReport(t, f.run(r, PassOptions{Tables: []string{f.db + ".c"}}), "c"); tr.Extra.Found != 0 || tr.OrphanScan != 0 {
		t.Fatalf("full pass over a table with its own key template: %+v, want no scan", tr)
	}
	if tr := tableReport(t, f.run(r, PassOptions{Tables: []string{f.db + ".c"}, ScanOrphans: true}), "c"); tr.Extra.Found != 1 {
		t.Fatalf("--scan-orphans over a table with its own key template: %+v, want the stray key", tr)
	}

	// Composite keys whose values hold ':' read several ways: a key is an orphan only when no reading is a row.
	f.exec("CREATE TABLE kv (a VARCHAR(20), b VARCHAR(20), v INT, PRIMARY KEY (a, b))",
		"INSERT INTO kv VALUES ('x:1', '2', 1), ('y', '3', 2), ('p', 'q:r', 3), ('m:n', 'o:p', 4)")
	kv := []string{f.db + ".kv"}
	f.run(r, PassOptions{Tables: kv})
	f.rdb.HSet(ctx, f.db+":kv:x:9:9", "v", "stray")
	if tr := tableReport(t, f.run(r, PassOptions{Tables: kv}), "kv"); tr.Extra != (Count{1, 1}) || tr.Drift() != 1 {
		t.Fatalf("full pass over keys with colons: %+v, want the one stray key", tr)
	}
	for _, k := range []string{"x:1:2", "y:3", "p:q:r", "m:n:o:p"} {
		if f.rdb.Exists(ctx, f.db+":kv:"+k).Val() != 1 {
			t.Errorf("the scan removed %s", k)
		}
	}
	if tr := tableReport(t, f.run(r, PassOptions{Tables: kv}), "kv"); tr.Drift() != 0 {
		t.Fatalf("second pass: %+v, want no drift", tr)
	}
}

// TestScanAheadGivesUp: a SCAN alongside the ranges that meets more keys to keep than it may hold gives up, and
// the SCAN after the ranges finds the orphans.
func TestScanAheadGivesUp(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a'), (2, 'b'), (3, 'c')")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	ctx := context.Background()
	for _, id := range []string{"700000", "800000", "900000"} {
		f.rdb.HSet(ctx, f.db+":q:"+id, "v", "stray")
	}
	defer func(n int) { scanAheadKept = n }(scanAheadKept)
	scanAheadKept = 1
	before := commandCalls(t, f.rdb, "scan")
	if tr := tableReport(t, f.run(r, PassOptions{}), "q"); tr.Extra != (Count{3, 3}) || tr.OrphanScan != 6 {
		t.Fatalf("full pass: %+v, want 3 orphans of 6 keys scanned", tr)
	}
	if n := commandCalls(t, f.rdb, "scan") - before; n != 2 {
		t.Fatalf("%d SCAN calls, want 2 (one given up, one after the ranges)", n)
	}
}

// commandCalls is how many times Redis ran the command (INFO commandstats).
func commandCalls(t *testing.T, rdb *redis.Client, name string) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+name+":calls="); ok {
			n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			return n
		}
	}
	return 0
}

func TestCanonicalInt(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "7": 7, "-7": -7, "9223372036854775807": math.MaxInt64,
		"-9223372036854775808": math.MinInt64} {
		if v, ok := canonicalInt([]byte(in)); !ok || v != want {
			t.Errorf("canonicalInt(%q) = %d, %v; want %d", in, v, ok, want)
		}
	}
	for _, in := range []string{"", "-", "007", "-0", "-07", "+7", "7a", "9223372036854775808", "-9223372036854775809",
		"99999999999999999999", "1-2"} {
		if v, ok := canonicalInt([]byte(in)); ok {
			t.Errorf("canonicalInt(%q) = %d, want not canonical", in, v)
		}
	}
}

// TestDecodePKList decodes GROUP_CONCAT key lists: numbers as text, other values in hex, columns joined with ':'.
func TestDecodePKList(t *testing.T) {
	tb := &table{t: &change.Table{DB: "d", Name: "t", Columns: []string{"a", "b"}, PK: []int{0, 1}},
		cols: []column{{name: "a", pk: pkNumber}, {name: "b", pk: pkText}}}
	got, err := tb.decodePKList([]byte("1:6162,-2.5:,30:3a2c"))
	if err != nil || fmt.Sprintf("%q", got) != `[["1" "ab"] ["-2.5" ""] ["30" ":,"]]` {
		t.Fatalf("composite key list: %q, %v", got, err)
	}
	got[0][0] = append(got[0][0], 'x') // a value's capacity ends with it: appending must not overwrite the next key
	if string(got[0][1]) != "ab" || string(got[1][0]) != "-2.5" {
		t.Fatalf("append to a decoded value changed its neighbours: %q", got)
	}
	for _, bad := range []string{"1", "1:61:62", "1:6g", "1:61,2"} {
		if got, err := tb.decodePKList([]byte(bad)); err == nil {
			t.Errorf("%q decoded as %q", bad, got)
		}
	}
	one := &table{t: &change.Table{DB: "d", Name: "t", Columns: []string{"id"}, PK: []int{0}},
		cols: []column{{name: "id", pk: pkNumber, isInt: true}}}
	if got, err := one.decodePKList([]byte("3,1,2")); err != nil || fmt.Sprintf("%q", got) != `[["3"] ["1"] ["2"]]` {
		t.Fatalf("integer key list: %q, %v", got, err)
	}
	if got, err := one.decodePKList([]byte("3:4")); err == nil {
		t.Errorf("two values for a one-column key decoded as %q", got)
	}
	if got, err := one.decodePKList(nil); err != nil || got != nil {
		t.Errorf("empty list: %q, %v", got, err)
	}
}

func TestSplitPK(t *testing.T) {
	for _, c := range []struct {
		v    string
		n    int
		want [][]string
	}{
		{"a:b", 2, [][]string{{"a", "b"}}},
		{"a:b:c", 2, [][]string{{"a", "b:c"}, {"a:b", "c"}}},
		{"a:b:c", 3, [][]string{{"a", "b", "c"}}},
		{"a:b:c:d", 3, [][]string{{"a", "b", "c:d"}, {"a", "b:c", "d"}, {"a:b", "c", "d"}}},
		{"a", 2, nil},
		{"::", 2, [][]string{{"", ":"}, {":", ""}}},
	} {
		got, ok := splitPK(c.v, c.n)
		if !ok || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("splitPK(%q, %d) = %q, %v; want %q", c.v, c.n, got, ok, c.want)
		}
	}
	if _, ok := splitPK(strings.Repeat("a:", 20), 4); ok {
		t.Errorf("C(20,3) readings should exceed the bound")
	}
}

// TestParseKeyReadings: keys whose values hold the template's separators are read every way they can be.
func TestParseKeyReadings(t *testing.T) {
	tb := &table{t: &change.Table{DB: "d", Name: "kv", Columns: []string{"a", "v", "b"}, PK: []int{0, 2}}}
	for _, c := range []struct {
		template, key string
		want          string
	}{
		{"", "d:kv:x:1:2", "[[x 1:2] [x:1 2]]"},
		{"kv:${a}:${b}", "kv:x:1:2", "[[x 1:2] [x:1 2]]"},
		{"kv:${b}/${a}", "kv:p/q/r", "[[q/r p] [r p/q]]"},
		{"kv:${a}:${b}", "other:x:1", "[]"},
		{"kv:${a}:${b}", "kv:x", "[]"},
	} {
		pat, err := parsePattern("", c.template, tb)
		if err != nil {
			t.Fatal(err)
		}
		readings, _ := pat.parse(c.key, tb)
		var got [][]string
		for _, r := range readings {
			got = append(got, []string{string(r[0]), string(r[1])})
		}
		slices.SortFunc(got, func(x, y []string) int { return strings.Compare(x[0], y[0]) })
		if s := fmt.Sprint(got); s != c.want && !(c.want == "[]" && got == nil) {
			t.Errorf("%q with %q: %s, want %s", c.key, c.template, s, c.want)
		}
	}
	pat, _ := parsePattern("", "kv:${a}:${b}", tb)
	if _, ok := pat.parse("kv:"+strings.Repeat(":", 500), tb); ok {
		t.Errorf("a key of 500 separators should exceed the bound")
	}
}

// TestRepairAfterOwnTombstone: a pass deletes an orphan at a snapshot version; the row then appears in MySQL
// without the binlog moving (sql_log_bin=0), so the next pass has the same snapshot version, and its repair must
// not be fenced by the first pass's tombstone.
func TestRepairAfterOwnTombstone(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE tb (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO tb VALUES (1, 'a')")
	r := f.reconciler(100)
	f.run(r, PassOptions{})
	ctx := context.Background()
	f.rdb.HSet(ctx, f.db+":tb:2", "v", "orphan")
	if tr := tableReport(t, f.run(r, PassOptions{}), "tb"); tr.Extra != (Count{1, 1}) {
		t.Fatalf("first pass: %+v, want the orphan deleted", tr)
	}
	f.execNoBinlog("INSERT INTO tb VALUES (2, 'b')")
	if tr := tableReport(t, f.run(r, PassOptions{}), "tb"); tr.Missing != (Count{1, 1}) || tr.Fenced != 0 {
		t.Fatalf("second pass: %+v, want the row repaired", tr)
	}
	if v := f.rdb.HGet(ctx, f.db+":tb:2", "v").Val(); v != "b" {
		t.Fatalf("row 2 holds v=%q, want b", v)
	}
}

// TestResume interrupts a pass and checks that the next one resumes from the last finished range.
func TestResume(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE a1 (id INT PRIMARY KEY, v INT)", "CREATE TABLE a2 (id INT PRIMARY KEY, v INT)")
	var vals []string
	for i := range 3000 {
		vals = append(vals, fmt.Sprintf("(%d, %d)", i, i))
	}
	f.exec("INSERT INTO a1 VALUES "+strings.Join(vals, ","), "INSERT INTO a2 VALUES "+strings.Join(vals, ","))
	r := f.reconciler(100)
	r.cfg.ChunkTarget = time.Hour // keep ranges at 100 rows
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slept := false
	_, err := r.Run(ctx, PassOptions{Progress: func(p Progress) {
		if p.Table == f.db+".a2" && p.Rows >= 1500 {
			if slept {
				cancel()
			} else {
				time.Sleep(1100 * time.Millisecond) // let the progress be saved
				slept = true
			}
		}
	}})
	if err == nil {
		t.Fatal("the interrupted pass reported success")
	}
	rep := f.run(r, PassOptions{})
	if !rep.Resumed {
		t.Fatal("the pass did not resume")
	}
	t1, t2 := tableReport(t, rep, "a1"), tableReport(t, rep, "a2")
	if t1.Missing.Found != 3000 || t1.Rows != 3000 {
		t.Fatalf("a1 (finished before the interruption): %+v", t1)
	}
	// Ranges finished after the saved progress are compared again, and found equal.
	if t2.Rows < 3000 || t2.Missing.Repaired < 1500 || t2.Missing.Repaired > 3000 {
		t.Fatalf("a2: %+v, want all 3000 rows compared over both runs", t2)
	}
	if d := f.differences("a2"); len(d) > 0 {
		t.Fatalf("a2 differs:\n%s", strings.Join(d, "\n"))
	}
	last, err := r.LastReport(context.Background())
	if err != nil || last == nil || last.ID != rep.ID {
		t.Fatalf("last report %v, %v; want the resumed pass %s", last, err, rep.ID)
	}
	rep = f.run(r, PassOptions{})
	if rep.Resumed {
		t.Fatal("a finished pass was resumed")
	}
}

// TestServe runs the scheduler and the HTTP trigger.
func TestServe(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE q (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO q VALUES (1, 'a'), (2, 'b')",
		"CREATE TABLE nokey (v INT)") // skipped by every pass: it must not make the schedule run pass after pass
	r := f.reconciler(100)
	reg := prometheus.NewRegistry()
	r.cfg.Metrics = NewMetrics(reg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- r.Serve(ctx, ServeOptions{Addr: "127.0.0.1:0", Token: "s3cret", Registry: reg,
			Interval: func(string) time.Duration { return time.Hour }, Listening: func(a string) { addr <- a }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	base := "http://" + <-addr
	call := func(method, path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	lastID := func() string {
		_, body := call("GET", "/reconcile", "s3cret")
		var st status
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("GET /reconcile: %v: %s", err, body)
		}
		if st.Last == nil {
			return ""
		}
		return st.Last.ID
	}
	waitID := func(not string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if id := lastID(); id != "" && id != not {
				return id
			}
			if time.Now().After(deadline) {
				t.Fatal("no pass finished")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := waitID("") // the tables were never verified: due at once
	time.Sleep(time.Second)
	if id := lastID(); id != first {
		t.Fatalf("another scheduled pass (%s) ran right after the first (%s): the skipped table stayed due", id, first)
	}
	if code, _ := call("GET", "/reconcile", ""); code != http.StatusUnauthorized {
		t.Fatalf("GET without the token: %d, want 401", code)
	}
	if code, _ := call("POST", "/reconcile?table="+f.db+".q", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("POST with a wrong token: %d, want 401", code)
	}
	f.rdb.Del(context.Background(), f.db+":q:1")
	if code, body := call("POST", "/reconcile?table="+f.db+".q", "s3cret"); code != http.StatusAccepted {
		t.Fatalf("POST: %d %s, want 202", code, body)
	}
	waitID(first)
	if n := f.rdb.Exists(context.Background(), f.db+":q:1").Val(); n != 1 {
		t.Fatal("the triggered pass did not repair the deleted key")
	}
	code, body := call("GET", "/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, `binlogsync_reconcile_drift_repaired_total{kind="missing",table="`+f.db+`.q"} 3`) ||
		!strings.Contains(body, "binlogsync_reconcile_seconds_since_verified{table=") ||
		!strings.Contains(body, `binlogsync_reconcile_seconds_since_full_verified{table="`+f.db+`.q"}`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := call("GET", path, ""); code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
	}
	if code, body := call("POST", "/reconcile?table="+f.db+".nosuch", "s3cret"); code != http.StatusBadRequest ||
		!strings.Contains(body, "not a selected table") {
		t.Fatalf("POST of an unknown table: %d %s, want 400", code, body)
	}
	for _, q := range []string{"tabel=" + f.db + ".q", "dry_run=maybe", "dry_run=1&dry_run=0", "dry_run=%zz", "table=" + f.db + ".q&dry_run=1;x"} {
		if code, body := call("POST", "/reconcile?"+q, "s3cret"); code != http.StatusBadRequest {
			t.Fatalf("POST /reconcile?%s: %d %s, want 400 (a mistyped dry run must not repair)", q, code, body)
		}
	}

	// A dry run that finds drift finishes a pass but does not verify the table in full.
	ctx0 := context.Background()
	fullBefore, err := r.FullyVerified(ctx0)
	if err != nil || fullBefore[f.db+".q"].IsZero() {
		t.Fatalf("full verification times %v, %v: want the table's", fullBefore, err)
	}
	f.rdb.Del(ctx0, f.db+":q:2")
	second := lastID()
	if code, body := call("POST", "/reconcile?table="+f.db+".q&dry_run=1", "s3cret"); code != http.StatusAccepted {
		t.Fatalf("POST dry_run: %d %s", code, body)
	}
	waitID(second)
	fullAfter, _ := r.FullyVerified(ctx0)
	verified, _ := r.Verified(ctx0)
	if !fullAfter[f.db+".q"].Equal(fullBefore[f.db+".q"]) || !verified[f.db+".q"].After(fullBefore[f.db+".q"]) {
		t.Fatalf("after a dry run with drift: full %v (was %v), finished %v", fullAfter, fullBefore, verified)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", err, problems)
	}
}

// TestLease: one pass at a time per state key, across processes. A held lease refuses a pass with its holder; a
// lease lost during a pass (Redis flushed) stops the pass.
func TestLease(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE l (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO l SELECT seq, 'x' FROM seq_1_to_3000")
	r := f.reconciler(100)
	ctx := context.Background()
	lockKey := "test:reconcile:lock"
	f.rdb.Set(ctx, lockKey, "other-host pid 7 abc", time.Minute)
	if _, err := r.Run(ctx, PassOptions{}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "other-host pid 7") {
		t.Fatalf("pass under another's lease: %v, want ErrLocked naming the holder", err)
	}
	f.rdb.Del(ctx, lockKey)
	f.run(r, PassOptions{})
	if n := f.rdb.Exists(ctx, lockKey).Val(); n != 0 {
		t.Fatal("the lease outlived the pass")
	}

	old := lockTTL
	lockTTL = 300 * time.Millisecond
	t.Cleanup(func() { lockTTL = old })
	r.cfg.RateLimitRows = 1000 // about 3 s for the table
	done := make(chan error, 1)
	go func() {
		_, err := r.Run(ctx, PassOptions{Restart: true})
		done <- err
	}()
	time.Sleep(400 * time.Millisecond)
	if n := f.rdb.Exists(ctx, lockKey).Val(); n != 1 {
		t.Fatal("a running pass holds no lease")
	}
	f.rdb.Set(ctx, lockKey, "a thief", time.Minute)
	select {
	case err := <-done:
		if !errors.Is(err, errLeaseLost) {
			t.Fatalf("pass after its lease was taken: %v, want errLeaseLost", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the pass went on after its lease was taken")
	}
	if v := f.rdb.Get(ctx, lockKey).Val(); v != "a thief" {
		t.Fatalf("the stopped pass released a lease it did not hold (now %q)", v)
	}
}

// TestDigestCharsets: character columns of every supported charset and of different collations in one row
// hash the same in MySQL (UTF-8 columns without a conversion) and in Redis.
func TestDigestCharsets(t *testing.T) {
	f := newFixture(t)
	f.exec(`CREATE TABLE cs (id INT PRIMARY KEY, a VARCHAR(20) CHARACTER SET utf8mb3, b VARCHAR(20) CHARACTER SET ascii,
		c VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, d VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
		e VARCHAR(20) CHARACTER SET latin1, g CHAR(5) CHARACTER SET utf8mb4)`,
		`INSERT INTO cs SELECT seq, CONCAT('é', seq), CONCAT('a,', seq), CONCAT('€', seq), CONCAT('ü ', seq), CONCAT('ß', seq),
		IF(seq % 3 = 0, NULL, 'x  ') FROM seq_1_to_500`)
	r := f.reconciler(50)
	if tr := tableReport(t, f.run(r, PassOptions{}), "cs"); tr.Missing.Repaired != 500 {
		t.Fatalf("bootstrap: %+v", tr)
	}
	if d := f.differences("cs"); len(d) > 0 {
		t.Fatalf("Redis differs from MySQL:\n%s", strings.Join(d, "\n"))
	}
	if tr := tableReport(t, f.run(r, PassOptions{}), "cs"); tr.RangesDiffered != 0 || tr.Drift() != 0 || tr.Rows != 500 {
		t.Fatalf("second pass: %+v, want every range's digests equal", tr)
	}
}

// TestSortIntKeys: a range's integer keys listed out of order are put in order, with their hashes.
func TestSortIntKeys(t *testing.T) {
	keys := []string{"5", "-12", "18446744073709551615", "-3", "0", "100", "99"}
	want := []string{"-12", "-3", "0", "5", "99", "100", "18446744073709551615"}
	pks := make([][][]byte, len(keys))
	hashes := make([]uint64, len(keys))
	for i, k := range keys {
		pks[i] = [][]byte{[]byte(k)}
		hashes[i] = uint64(len(k))*1000 + uint64(i)
	}
	byKey := map[string]uint64{}
	for i, k := range keys {
		byKey[k] = hashes[i]
	}
	sortIntKeys(pks, hashes)
	for i, w := range want {
		if string(pks[i][0]) != w || hashes[i] != byKey[w] {
			t.Fatalf("position %d: key %s hash %d, want %s hash %d", i, pks[i][0], hashes[i], w, byKey[w])
		}
	}
}

// TestServeAfterAlterTable: the stream writes only the rows that change, so after ALTER TABLE the rows written
// before it keep their old shape in Redis. Serve notices the changed columns and reconciles the table at once, not
// at its interval (an hour here), and does not start pass after pass on a table whose pass cannot finish.
func TestServeAfterAlterTable(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE s (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO s VALUES (1, 'a'), (2, 'b')",
		"CREATE TABLE u (id INT PRIMARY KEY, w INT)", "INSERT INTO u VALUES (1, 1)")
	r := f.reconciler(100)
	old := passRetry
	passRetry = 200 * time.Millisecond
	t.Cleanup(func() { passRetry = old })
	ctx, cancel := context.WithCancel(context.Background())
	var logs testenv.LogBuffer
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	done := make(chan error, 1)
	go func() {
		done <- r.Serve(ctx, ServeOptions{Interval: func(string) time.Duration { return time.Hour },
			SchemaCheck: 100 * time.Millisecond})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	bg := context.Background()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s\n%s", what, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	key := f.db + ":s:1"
	waitFor("the first pass", func() bool { return f.rdb.HGet(bg, key, "v").Val() == "a" })
	passes := func() int { return strings.Count(logs.String(), "reconcile pass finished") }
	waitFor("the first pass's end", func() bool { return passes() == 1 })

	f.exec("ALTER TABLE s ADD COLUMN c INT NOT NULL DEFAULT 7")
	waitFor("the new column in Redis", func() bool {
		return f.rdb.HGet(bg, key, "c").Val() == "7" && f.rdb.HGet(bg, f.db+":s:2", "c").Val() == "7"
	})
	if !strings.Contains(logs.String(), "the columns of a table changed") || !strings.Contains(logs.String(), "table="+f.db+".s") {
		t.Errorf("the triggered pass was not logged with its table:\n%s", logs.String())
	}
	f.exec("ALTER TABLE s CHANGE v vv VARCHAR(20)")
	waitFor("the renamed column in Redis", func() bool {
		m := f.rdb.HGetAll(bg, key).Val()
		return m["vv"] == "a" && m["v"] == ""
	})
	if u := f.rdb.HGetAll(bg, f.db+":u:1").Val(); u["w"] != "1" {
		t.Errorf("the unchanged table's row: %v", u)
	}

	// A pass that fails (another process holds the lease) is tried again for the same change.
	waitFor("the passes' end", func() bool { return passes() == 3 })
	f.rdb.Set(bg, "test:reconcile:lock", "other-host pid 7 abc", time.Minute)
	f.exec("ALTER TABLE s ADD COLUMN d INT NOT NULL DEFAULT 9")
	waitFor("the refused pass", func() bool { return strings.Contains(logs.String(), "other-host pid 7") })
	f.rdb.Del(bg, "test:reconcile:lock")
	waitFor("the new column after the lease was freed", func() bool { return f.rdb.HGet(bg, key, "d").Val() == "9" })
	waitFor("the passes' end", func() bool { return passes() == 4 })

	// A table that lost its primary key is skipped by every pass: one pass for the change, not one a tick.
	f.exec("ALTER TABLE u DROP PRIMARY KEY")
	waitFor("the pass after DROP PRIMARY KEY", func() bool { return passes() == 5 })
	time.Sleep(time.Second)
	if n := passes(); n != 5 {
		t.Fatalf("%d passes after the table lost its primary key, want 5 (one for the change)\n%s", n, logs.String())
	}
}

// TestColumnsChangedAfterDryRun: a pass records a table's columns only when it leaves the rows in their shape, so
// a dry run right after an ALTER TABLE does not hide the change from the schedule.
func TestColumnsChangedAfterDryRun(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO a VALUES (1, 'x')")
	r := f.reconciler(100)
	ctx := context.Background()
	f.run(r, PassOptions{})
	changed := func() []string {
		t.Helper()
		c, _, err := r.ColumnsChanged(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := changed(); len(c) != 0 {
		t.Fatalf("columns changed after the first pass: %v", c)
	}
	f.exec("ALTER TABLE a ADD COLUMN w INT DEFAULT 3")
	want := []string{f.db + ".a"}
	if c := changed(); !slices.Equal(c, want) {
		t.Fatalf("after ALTER TABLE: %v, want %v", c, want)
	}
	if rep := f.run(r, PassOptions{DryRun: true}); rep.Total().Stale.Found != 1 {
		t.Fatalf("dry run after ALTER TABLE: %+v, want the row stale", rep.Total())
	}
	if c := changed(); !slices.Equal(c, want) {
		t.Fatalf("after a dry run: %v, want %v still", c, want)
	}
	f.run(r, PassOptions{})
	if c := changed(); len(c) != 0 {
		t.Fatalf("after the repairing pass: %v, want none", c)
	}
	if v := f.rdb.HGet(ctx, f.db+":a:1", "w").Val(); v != "3" {
		t.Fatalf("the row's new field: %q, want 3", v)
	}
}
