package sink

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc64"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

func TestCRC64Redis(t *testing.T) {
	// The check value of CRC-64/Jones as Redis's crc64.c states it.
	if got := crc64Redis([]byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64Redis = %#x, want 0xe9c6d914c4b8d9ca", got)
	}
	// Slicing by 8 against hash/crc64's byte-by-byte loop, for every alignment of the tail.
	b := make([]byte, 300)
	for i := range b {
		b[i] = byte(i*131 + i>>3)
	}
	for n := range len(b) + 1 {
		if got, want := crc64Redis(b[:n]), ^crc64.Update(^uint64(0), redisCRC, b[:n]); got != want {
			t.Fatalf("crc64Redis of %d bytes = %#x, want %#x", n, got, want)
		}
	}
}

func TestLpInt(t *testing.T) {
	cases := map[string]bool{
		"0": true, "7": true, "-1": true, "127": true, "128": true, "-4096": true, "9223372036854775807": true,
		"-9223372036854775808": true,
		"":                     false, "-": false, "-0": false, "007": false, "+1": false, "1.5": false, " 1": false, "1 ": false,
		"9223372036854775808": false, "-9223372036854775809": false, "18446744073709551616": false,
		"99999999999999999999": false, "123456789012345678901": false, "1e3": false,
	}
	for s, want := range cases {
		if _, got := lpInt(s); got != want {
			t.Errorf("lpInt(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestHashPayloadMatchesDump checks the payloads against Redis itself: for rows of every integer encoding,
// strings of every length class, binary values and NULLs, the payload equals what DUMP returns for the same
// hash written with HSET (uncompressed, the RDB version aside), and RESTORE of it gives that hash back.
func TestHashPayloadMatchesDump(t *testing.T) {
	rdb := sharedClient(t)
	ctx := ctxT(t)
	for _, kv := range [][2]string{{"rdbcompression", "no"}, {"hash-max-listpack-value", "20000"}} {
		old := rdb.ConfigGet(ctx, kv[0]).Val()[kv[0]]
		if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.ConfigSet(ctx, kv[0], old) })
	}
	ints := []int64{0, 1, 127, 128, -1, -4096, 4095, -4097, 4096, -32768, 32767, -32769, 32768, -8388608, 8388607,
		-8388609, 8388608, -2147483648, 2147483647, -2147483649, 2147483648, -9223372036854775808, 9223372036854775807}
	var strs []string
	for _, n := range []int{0, 1, 63, 64, 65, 120, 125, 126, 127, 200, 4095, 4096, 4500, 4600, 16377, 16378} {
		strs = append(strs, strings.Repeat("x", n))
	}
	strs = append(strs, "-0", "007", "+5", "1.5", "9223372036854775808", "\x00\xff\r\n", "héllo")
	var names []string
	var row [][]byte
	for i, n := range ints {
		names = append(names, fmt.Sprintf("i%d", i))
		row = append(row, []byte(fmt.Sprint(n)))
	}
	for i, s := range strs {
		names = append(names, fmt.Sprintf("s%d", i))
		row = append(row, []byte(s))
	}
	names = append(names, "null", strings.Repeat("long field name ", 5))
	row = append(row, nil, []byte("v"))
	ver := []byte(v(7).String())

	// Every row size from one column up, so the listpack's own length crosses RDB's length classes.
	for cols := 1; cols <= len(row); cols++ {
		args := []any{"_v", ver}
		want := map[string]string{"_v": string(ver)}
		for c, val := range row[:cols] {
			if val != nil {
				args = append(args, names[c], val)
				want[names[c]] = string(val)
			}
		}
		rdb.Del(ctx, "ref", "got")
		if err := rdb.HSet(ctx, "ref", args...).Err(); err != nil {
			t.Fatal(err)
		}
		if enc := rdb.ObjectEncoding(ctx, "ref").Val(); enc != "listpack" {
			t.Fatalf("%d columns: HSET made a %s", cols, enc)
		}
		dump := []byte(rdb.Dump(ctx, "ref").Val())
		payload := appendHashPayload([]byte("prefix"), ver, names, row[:cols])
		if string(payload[:6]) != "prefix" {
			t.Fatal("appendHashPayload overwrote dst")
		}
		payload = payload[6:]
		if b := payloadBound(names, row[:cols]); len(payload) > b {
			t.Fatalf("%d columns: payload of %d bytes, payloadBound %d", cols, len(payload), b)
		}
		if len(payload) != len(dump) || string(payload[:len(payload)-10]) != string(dump[:len(dump)-10]) {
			t.Fatalf("%d columns: payload\n%q\nDUMP\n%q", cols, payload, dump)
		}
		if err := rdb.Restore(ctx, "got", 0, string(payload)).Err(); err != nil {
			t.Fatalf("%d columns: RESTORE: %v", cols, err)
		}
		if got := rdb.HGetAll(ctx, "got").Val(); !maps.Equal(got, want) {
			t.Fatalf("%d columns: restored %v, want %v", cols, got, want)
		}
		if got := rdb.Dump(ctx, "got").Val(); got != string(dump) {
			t.Fatalf("%d columns: DUMP of the restored key differs from the HSET one", cols)
		}
	}
}

// TestRowPayloadHashTable checks the RDB_TYPE_HASH payloads of rows that do not fit a listpack, against HSET of
// the same hash on the real server (default limits): the same fields and values, and the same encoding. The rows
// cross RDB's length classes (counts and lengths of 63/64, 16383/16384 and over 65535) and hold binary values,
// NULLs, empty strings and integers.
func TestRowPayloadHashTable(t *testing.T) {
	rdb := sharedClient(t)
	ctx := ctxT(t)
	ver := []byte(v(9).String())
	type tc struct {
		name  string
		names []string
		row   [][]byte
	}
	cols := func(n int, val func(int) []byte) tc {
		c := tc{name: fmt.Sprintf("%d columns", n)}
		for i := range n {
			c.names = append(c.names, fmt.Sprintf("c%d", i))
			c.row = append(c.row, val(i))
		}
		return c
	}
	cases := []tc{
		{"one value of 65 bytes", []string{"id", "v", "nul", "empty"}, [][]byte{[]byte("1"), bytes.Repeat([]byte("v"), 65), nil, {}}},
		{"a long field name", []string{"id", strings.Repeat("n", 65)}, [][]byte{[]byte("1"), []byte("x")}},
		cols(63, func(i int) []byte { return []byte(fmt.Sprint(i * 1000)) }),                                      // 64 pairs with _v: fits a listpack
		cols(64, func(i int) []byte { return []byte(fmt.Sprint(i * 1000)) }),                                      // 65 pairs: a hash table
		cols(1500, func(i int) []byte { return []byte(fmt.Sprint(i - 700)) }),                                     // a pair count over 63
		cols(3, func(i int) []byte { return bytes.Repeat([]byte{0, 0xff, byte(i)}, [3]int{21, 5462, 30000}[i]) }), // 63, 16386, 90000 bytes
		cols(17000, func(i int) []byte { return nil }),                                                            // only _v: a listpack, from a wide table
		cols(16400, func(i int) []byte { return []byte("x") }),                                                    // a pair count over 16383
	}
	for _, c := range cases {
		args := []any{"_v", ver}
		want := map[string]string{"_v": string(ver)}
		for i, val := range c.row {
			if val != nil {
				args = append(args, c.names[i], val)
				want[c.names[i]] = string(val)
			}
		}
		rdb.Del(ctx, "ref", "got")
		for i := 0; i < len(args); i += 2000 { // HSET in pieces, like the script
			if err := rdb.HSet(ctx, "ref", args[i:min(i+2000, len(args))]...).Err(); err != nil {
				t.Fatal(err)
			}
		}
		payload := appendRowPayload([]byte("prefix"), ver, c.names, c.row)[6:]
		if b := payloadBound(c.names, c.row); len(payload) > b {
			t.Fatalf("%s: payload of %d bytes, payloadBound %d", c.name, len(payload), b)
		}
		wantType := byte(rdbTypeHash)
		if fitsListpack(c.names, c.row) {
			wantType = rdbTypeHashListpack
		}
		if payload[0] != wantType {
			t.Fatalf("%s: payload of RDB type %d, want %d", c.name, payload[0], wantType)
		}
		if err := rdb.Restore(ctx, "got", 0, string(payload)).Err(); err != nil {
			t.Fatalf("%s: RESTORE: %v", c.name, err)
		}
		if got := rdb.HGetAll(ctx, "got").Val(); !maps.Equal(got, want) {
			t.Fatalf("%s: restored %d fields, want %d (or other values)", c.name, len(got), len(want))
		}
		if got, ref := rdb.ObjectEncoding(ctx, "got").Val(), rdb.ObjectEncoding(ctx, "ref").Val(); got != ref {
			t.Fatalf("%s: restored as a %s, HSET made a %s", c.name, got, ref)
		}
		// The first long pair leads, so that Redis converts to a hash table before loading any pair.
		for i, val := range c.row {
			if val != nil && (len(val) > listpackMaxValue || len(c.names[i]) > listpackMaxValue) {
				prefix := appendRDBString(appendRDBLen([]byte{rdbTypeHash}, len(want)), c.names[i])
				if !bytes.HasPrefix(payload, prefix) {
					t.Fatalf("%s: the payload does not begin with the long pair of %s", c.name, c.names[i])
				}
				break
			}
		}
	}
}

func TestFitsListpack(t *testing.T) {
	long := make([]byte, listpackMaxValue+1)
	names := make([]string, 64)
	row := make([][]byte, 64)
	for i := range row {
		names[i] = fmt.Sprint("c", i)
	}
	for i := range 63 {
		row[i] = []byte("x")
	}
	if !fitsListpack(names, row) {
		t.Error("63 columns and _v (128 entries) do not fit")
	}
	row[63] = []byte("x")
	if fitsListpack(names, row) {
		t.Error("64 columns and _v (130 entries) fit")
	}
	row[63] = nil
	row[5] = long
	if fitsListpack(names, row) {
		t.Errorf("a value of %d bytes fits", len(long))
	}
	row[5] = long[:listpackMaxValue]
	if !fitsListpack(names, row) {
		t.Errorf("a value of %d bytes does not fit", listpackMaxValue)
	}
	names[7] = string(long)
	if fitsListpack(names, row) {
		t.Errorf("a field name of %d bytes fits", len(long))
	}
}

// TestHSetPath runs the tests of writing, fencing and TTLs with hash rows written by HSET, the path of rows too
// large for a listpack and of servers that refuse RESTORE.
func TestHSetPath(t *testing.T) {
	testHSetOnly = true
	t.Cleanup(func() { testHSetOnly = false })
	for name, test := range map[string]func(*testing.T){
		"HashInsertUpdateDelete": TestHashInsertUpdateDelete, "PrimaryKeyChange": TestPrimaryKeyChange,
		"Fence": TestFence, "FreshCall": TestFreshCall, "OrderInOneBatch": TestOrderInOneBatch, "TTL": TestTTL,
		"KeyIndex": TestKeyIndex,
	} {
		t.Run(name, test)
	}
}

// TestRestoreRefused writes through a Redis user that may not run RESTORE: the first call that carries a payload
// fails, the sink switches to HSET and sends it again, and every row lands, on the script's fresh path (new keys)
// as on its checked path (existing keys).
func TestRestoreRefused(t *testing.T) {
	rdb := sharedClient(t)
	ctx := ctxT(t)
	if err := rdb.Do(ctx, "ACL", "SETUSER", "norestore", "on", ">pw", "~*", "+@all", "-restore").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Do(context.Background(), "ACL", "DELUSER", "norestore") })
	limited := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, Username: "norestore", Password: "pw"})
	t.Cleanup(func() { limited.Close() })

	for _, path := range []string{"fresh", "checked"} {
		t.Run(path, func(t *testing.T) {
			rdb.FlushAll(ctx)
			if path == "checked" {
				apply(t, newSink(t, rdb, Options{}), ins(users, v(1), r("1", "old", nil, nil)))
			}
			s := newSink(t, limited, Options{Lanes: 1})
			st := apply(t, s, ins(users, v(2), r("1", "a", nil, nil)), ins(users, v(3), r("2", "b", "x", nil)))
			wantStats(t, st, Stats{Written: 2})
			if s.restoreOK() {
				t.Error("the sink did not switch to HSET")
			}
			wantHash(t, rdb, "shop:users:1", map[string]string{"id": "1", "name": "a", "_v": v(2).String()})
			wantHash(t, rdb, "shop:users:2", map[string]string{"id": "2", "name": "b", "email": "x", "_v": v(3).String()})
		})
	}

	// RESTORE allowed again (an ACL fixed): the sink uses it once restoreRetry has passed, not before.
	t.Run("again", func(t *testing.T) {
		rdb.FlushAll(ctx)
		s := newSink(t, limited, Options{Lanes: 1})
		apply(t, s, ins(users, v(2), r("1", "a", nil, nil)))
		if err := rdb.Do(ctx, "ACL", "SETUSER", "norestore", "+restore").Err(); err != nil {
			t.Fatal(err)
		}
		n := restoreCalls(t, rdb)
		apply(t, s, ins(users, v(3), r("2", "b", nil, nil)))
		if got := restoreCalls(t, rdb); got != n {
			t.Fatalf("%d RESTOREs before the retry period passed, want none", got-n)
		}
		s.noRestoreUntil.Store(time.Now().Add(-time.Second).UnixNano()) // the period is over
		apply(t, s, ins(users, v(4), r("3", "c", nil, nil)))            // a new row
		apply(t, s, upd(users, v(5), nil, r("1", "a2", nil, nil)))      // an existing one
		if got := restoreCalls(t, rdb); got != n+2 {
			t.Fatalf("%d RESTOREs after the retry period, want 2", got-n)
		}
		wantHash(t, rdb, "shop:users:1", map[string]string{"id": "1", "name": "a2", "_v": v(5).String()})
		wantHash(t, rdb, "shop:users:3", map[string]string{"id": "3", "name": "c", "_v": v(4).String()})
	})
}

// restoreCalls is how many RESTORE commands Redis has run.
// TestRestoreOutOfMemory checks that a RESTORE failing because Redis is out of memory (maxmemory with
// noeviction) is retried like any write: it was taken for Redis refusing RESTORE, and the sink wrote with HSET for
// the next ten minutes.
func TestRestoreOutOfMemory(t *testing.T) {
	srv := testenv.NewRedis(t, "--maxmemory-policy", "noeviction")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DisableIdentity: true})
	t.Cleanup(func() { rdb.Close() })
	ctx := ctxT(t)
	var logs testenv.LogBuffer
	s := newSink(t, rdb, Options{Lanes: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if _, err := s.Apply(short, []change.Change{ins(users, v(1), r("1", "a", nil, nil))}); err == nil {
		t.Fatal("a write to a Redis out of memory succeeded")
	}
	if !s.restoreOK() || strings.Contains(logs.String(), "refused RESTORE") {
		t.Fatalf("out of memory was taken for Redis refusing RESTORE:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "OOM") {
		t.Fatalf("the retries do not name the error:\n%s", logs.String())
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	n := restoreCalls(t, rdb)
	apply(t, s, ins(users, v(2), r("1", "a", nil, nil)))
	if got := restoreCalls(t, rdb); got != n+1 {
		t.Fatalf("%d RESTOREs once memory was back, want 1", got-n)
	}
	wantHash(t, rdb, "shop:users:1", map[string]string{"id": "1", "name": "a", "_v": v(2).String()})
}

// TestCallsBoundedByBytes checks that rows of a megabyte do not go RowsPerCall to a script call: a call runs alone
// in Redis, and one of 100 such rows held every other client for seconds.
func TestCallsBoundedByBytes(t *testing.T) {
	rdb := sharedClient(t)
	big := strings.Repeat("x", 400<<10)
	var changes []change.Change
	for i := 1; i <= 5; i++ {
		changes = append(changes, ins(users, v(uint32(i)), r(strconv.Itoa(i), big, nil, nil)))
	}
	n := commandCalls(t, rdb, "evalsha")
	apply(t, newSink(t, rdb, Options{Lanes: 1}), changes...)
	if got := commandCalls(t, rdb, "evalsha") - n; got != 2 {
		t.Fatalf("5 rows of 400 KiB went in %d script calls, want 2 (calls of about %d bytes)", got, bytesPerCall)
	}
	for i := 1; i <= 5; i++ {
		if got := rdb.HStrLen(ctxT(t), "shop:users:"+strconv.Itoa(i), "name").Val(); got != int64(len(big)) {
			t.Fatalf("row %d: name of %d bytes", i, got)
		}
	}
}

func restoreCalls(t *testing.T, rdb redis.UniversalClient) int {
	return commandCalls(t, rdb, "restore")
}

// commandCalls is Redis's count of calls of a command (INFO commandstats).
func commandCalls(t *testing.T, rdb redis.UniversalClient, cmd string) int {
	t.Helper()
	info, err := rdb.Info(ctxT(t), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// BenchmarkCRC64Redis checksums a payload of a narrow row (about 100 bytes), eight bytes a step and, for
// comparison, byte by byte as hash/crc64 does with a table of its own.
// Run: go test -run '^$' -bench CRC64Redis ./sink/
func BenchmarkCRC64Redis(b *testing.B) {
	p := make([]byte, 100)
	for i := range p {
		p[i] = byte(i * 7)
	}
	b.Run("slicing8", func(b *testing.B) {
		for b.Loop() {
			crc64Redis(p)
		}
	})
	b.Run("bytewise", func(b *testing.B) {
		for b.Loop() {
			crc64.Update(0, redisCRC, p)
		}
	})
}
