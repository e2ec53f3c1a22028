package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// allTypesDDL is a table with every type SPEC section 2 covers.
func allTypesDDL() string {
	cols := []string{
		"id INT NOT NULL PRIMARY KEY",
		"c_tiny TINYINT", "c_utiny TINYINT UNSIGNED",
		"c_small SMALLINT", "c_usmall SMALLINT UNSIGNED",
		"c_med MEDIUMINT", "c_umed MEDIUMINT UNSIGNED",
		"c_int INT", "c_uint INT UNSIGNED",
		"c_big BIGINT", "c_ubig BIGINT UNSIGNED",
		"c_dec DECIMAL(65,30)", "c_dec2 DECIMAL(10,2)",
		"c_float FLOAT", "c_double DOUBLE",
		"c_date DATE",
	}
	for fsp := 0; fsp <= 6; fsp++ {
		cols = append(cols,
			fmt.Sprintf("c_dt%d DATETIME(%d)", fsp, fsp),
			fmt.Sprintf("c_ts%d TIMESTAMP(%d) NULL DEFAULT NULL", fsp, fsp),
			fmt.Sprintf("c_time%d TIME(%d)", fsp, fsp))
	}
	cols = append(cols,
		"c_year YEAR",
		"c_char CHAR(10) CHARACTER SET utf8mb4", "c_char_l CHAR(10) CHARACTER SET latin1",
		"c_varchar VARCHAR(50) CHARACTER SET utf8mb4", "c_varchar_l VARCHAR(50) CHARACTER SET latin1",
		"c_text TEXT CHARACTER SET utf8mb4", "c_text_l TEXT CHARACTER SET latin1",
		"c_binary BINARY(4)", "c_varbinary VARBINARY(20)", "c_blob BLOB",
		"c_enum ENUM('a','b c','é')", "c_set SET('x','y','é')",
		"c_bit1 BIT(1)", "c_bit64 BIT(64)",
		"c_json JSON",
		"c_char_u16 CHAR(6) CHARACTER SET utf16", "c_varchar_u32 VARCHAR(20) CHARACTER SET utf32",
		"c_text_ucs2 TEXT CHARACTER SET ucs2", "c_varchar_le VARCHAR(20) CHARACTER SET utf16le",
		"c_varchar_cp VARCHAR(20) CHARACTER SET cp1251", "c_char_l2 CHAR(6) CHARACTER SET latin2",
		"c_enum_cp ENUM('а','б','x') CHARACTER SET cp1251",
		"c_gen_s VARCHAR(60) AS (CONCAT(c_varchar, '!')) STORED",
		"c_gen_v BIGINT AS (c_int * 2) VIRTUAL",
	)
	return "CREATE TABLE alltypes (" + strings.Join(cols, ", ") + ") CHARACTER SET utf8mb4"
}

var allTypesFloats = map[string]bool{"c_float": true, "c_double": true}

// allTypesRows are the inserted rows, column -> SQL literal (others NULL).
func allTypesRows() []map[string]string {
	temporal := func(row map[string]string, dt, ts, tm string) map[string]string {
		for fsp := 0; fsp <= 6; fsp++ {
			row[fmt.Sprintf("c_dt%d", fsp)] = dt
			row[fmt.Sprintf("c_ts%d", fsp)] = ts
			row[fmt.Sprintf("c_time%d", fsp)] = tm
		}
		return row
	}
	nines := func(n int) string { return strings.Repeat("9", n) }
	return []map[string]string{
		temporal(map[string]string{ // maxima
			"id": "1", "c_tiny": "127", "c_utiny": "255", "c_small": "32767", "c_usmall": "65535",
			"c_med": "8388607", "c_umed": "16777215", "c_int": "2147483647", "c_uint": "4294967295",
			"c_big": "9223372036854775807", "c_ubig": "18446744073709551615",
			"c_dec": nines(35) + "." + nines(30), "c_dec2": "99999999.99",
			"c_float": "3.40282e38", "c_double": "1.7976931348623157e308", "c_date": "'9999-12-31'",
			"c_year": "2155", "c_char": "'xxxxxxxxxx'", "c_varchar": "'max'", "c_binary": "'abcd'",
			"c_enum": "'b c'", "c_set": "'x,y,é'", "c_bit1": "b'1'", "c_bit64": "18446744073709551615",
			"c_json": `'[1, 2.50, "x", null, true, {"k": []}]'`,
		}, "'9999-12-31 23:59:59.999999'", "'2038-01-19 08:44:07.999999'", "'838:59:59.999999'"),
		temporal(map[string]string{ // minima
			"id": "2", "c_tiny": "-128", "c_utiny": "0", "c_small": "-32768", "c_usmall": "0",
			"c_med": "-8388608", "c_umed": "0", "c_int": "-2147483648", "c_uint": "0",
			"c_big": "-9223372036854775808", "c_ubig": "0",
			"c_dec": "-" + nines(35) + "." + nines(30), "c_dec2": "-0.01",
			"c_float": "-1.5e-30", "c_double": "-2.2250738585072014e-308", "c_date": "'1000-01-01'",
			"c_year": "1901", "c_enum": "'a'", "c_set": "''", "c_bit1": "b'0'", "c_bit64": "0",
		}, "'1000-01-01 00:00:00'", "'1970-01-01 05:30:01'", "'-838:59:59'"),
		temporal(map[string]string{ // zeros and empty strings
			"id": "3", "c_tiny": "0", "c_int": "0", "c_big": "0", "c_dec": "0", "c_dec2": "0",
			"c_float": "0", "c_double": "0", "c_date": "'0000-00-00'", "c_year": "0",
			"c_char": "''", "c_char_l": "''", "c_varchar": "''", "c_varchar_l": "''", "c_text": "''", "c_text_l": "''",
			"c_binary": "''", "c_varbinary": "''", "c_blob": "''", "c_enum": "''", "c_set": "''", "c_json": "'{}'",
			"c_char_u16": "''", "c_varchar_u32": "''", "c_text_ucs2": "''", "c_varchar_cp": "''", "c_char_l2": "''",
		}, "'0000-00-00 00:00:00'", "'0000-00-00 00:00:00'", "'00:00:00'"),
		{"id": "4"}, // all NULL
		temporal(map[string]string{ // text, bytes, odd times
			"id": "5", "c_int": "42", "c_dec": "-0.000000000000000000000000000001", "c_dec2": "12.50",
			"c_float": "0.1", "c_double": "1e15", "c_date": "'2024-02-29'", "c_year": "2024",
			"c_char": "'é😀  '", "c_char_l": "'é€ x  '", "c_varchar": "'emoji 😀👍🏽 trailing  '",
			"c_varchar_l": "'latin1 é € Ÿ'", "c_text": "'tab\\tnewline\\n😀'", "c_text_l": "'ÿé€'",
			"c_binary": "X'00FF'", "c_varbinary": "X'00FF00'", "c_blob": "CONCAT(X'00', REPEAT(X'FF', 3000), X'00')",
			"c_enum": "'é'", "c_set": "'é,x'", "c_bit1": "1", "c_bit64": "9223372036854775808",
			"c_json":     `'{"k": "é😀", "a" : [1,2.5e0], "n": null, "esc": "q\\"b"}'`,
			"c_char_u16": "'é😀Ġ  '", "c_varchar_u32": "'ж😀 '", "c_text_ucs2": "'Ωé Ġ'", "c_varchar_le": "'é😀Ġ'",
			"c_varchar_cp": "'Привет № x'", "c_char_l2": "'ŁźŻ  '", "c_enum_cp": "'б'",
		}, "'2024-02-29 12:34:56.123456'", "'2024-02-29 00:00:00.5'", "'-00:00:00.5'"),
		temporal(map[string]string{
			"id": "6", "c_int": "6", "c_varchar": "'six'", "c_float": "16777217", "c_double": "0.1",
		}, "'2001-02-03 04:05:06.7'", "'2001-02-03 04:05:06.000007'", "'100:00:00.25'"),
		temporal(map[string]string{
			"id": "7", "c_int": "7", "c_varchar": "'seven'", "c_json": `'"just a string"'`,
		}, "'1970-01-01 00:00:00'", "'1970-01-01 05:30:00.000001'", "'-12:00:00'"),
	}
}

// writeAllTypes creates alltypes and writes, updates and deletes its rows from
// a session at time_zone '+05:30' with sql_mode ” (zero dates allowed).
func writeAllTypes(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	e.exec(allTypesDDL())
	conn, err := e.sqldb.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stmts := []string{"SET time_zone = '+05:30', sql_mode = ''"}
	for _, row := range allTypesRows() {
		var cols, vals []string
		for c, v := range row {
			cols, vals = append(cols, c), append(vals, v)
		}
		stmts = append(stmts, "INSERT INTO alltypes ("+strings.Join(cols, ",")+") VALUES ("+strings.Join(vals, ",")+")")
	}
	stmts = append(stmts,
		// from NULL to values
		"UPDATE alltypes SET c_int = -5, c_varchar = 'was null', c_ts3 = '2020-06-01 10:00:00.123', c_time6 = '-01:02:03.000004', "+
			"c_blob = X'FF00FF', c_json = '{\"now\": 1}', c_bit64 = 1, c_set = 'y' WHERE id = 4",
		// from values to NULL, and a primary-key change
		"UPDATE alltypes SET c_varchar = NULL, c_text = NULL, c_json = NULL, c_ts6 = NULL, c_binary = NULL WHERE id = 5",
		"UPDATE alltypes SET c_tiny = c_tiny - 1, c_dt6 = '2000-01-01 00:00:00.000001', id = 10 WHERE id = 1",
		"DELETE FROM alltypes WHERE id IN (2, 6)",
	)
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			t.Fatalf("exec %.200q: %v", s, err)
		}
	}
}

func TestIntegrationEveryTypeRoundTrips(t *testing.T) {
	t.Run("hash", func(t *testing.T) {
		e := sharedEnv(t)
		p := e.start("--config", "../config.example.yaml")
		writeAllTypes(t, e)
		e.waitSame("alltypes", 30*time.Second, allTypesFloats, "id")

		want := e.snapshotMySQL("alltypes", "id")
		if len(want) != 5 {
			t.Fatalf("MySQL has %d rows, want 5 (7 inserted, 2 deleted)", len(want))
		}
		// A few values spelled out, so the comparison cannot pass by both
		// sides being wrong the same way.
		got, _ := e.snapshotRedis("alltypes")
		for _, c := range []struct{ key, field, want string }{
			{"3", "c_date", "0000-00-00"},
			{"3", "c_year", "0000"},
			{"10", "c_ubig", "18446744073709551615"},
			{"10", "c_bit64", "18446744073709551615"},
			{"10", "c_ts6", "2038-01-19 03:14:07.999999"}, // written at +05:30, read in UTC
			{"10", "c_time6", "838:59:59.999999"},
			{"10", "c_dec", strings.Repeat("9", 35) + "." + strings.Repeat("9", 30)},
			{"5", "c_time6", "-00:00:00.500000"},
			{"6", "c_time2", ""},  // deleted
			{"5", "c_binary", ""}, // became NULL
			{"5", "c_char", "é😀"},
			{"5", "c_char_l", "é€ x"},
			{"5", "c_char_u16", "é😀Ġ"}, // Ġ is 0x0120 in UTF-16: its 0x20 byte is no space
			{"5", "c_varchar_u32", "ж😀 "},
			{"5", "c_text_ucs2", "Ωé Ġ"},
			{"5", "c_varchar_le", "é😀Ġ"},
			{"5", "c_varchar_cp", "Привет № x"},
			{"5", "c_char_l2", "ŁźŻ"},
			{"5", "c_enum_cp", "б"},
			{"3", "c_char_u16", ""},
			{"5", "c_varbinary", "\x00\xff\x00"},
			{"5", "c_dec2", "12.50"},
			{"4", "c_varchar", "was null"},
			{"4", "c_gen_v", "-10"},
			{"7", "c_ts6", "1970-01-01 00:00:00.000001"},
			{"7", "c_ts1", "0000-00-00 00:00:00.0"}, // rounds to the epoch, which TIMESTAMP cannot hold
			{"7", "c_time3", "-12:00:00.000"},
		} {
			if v := got[e.db+":alltypes:"+c.key][c.field]; v != c.want {
				t.Errorf("Redis id %s %s = %q, want %q", c.key, c.field, v, c.want)
			}
		}
		if code := p.stop(t, 15*time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
	})

	t.Run("json rules", func(t *testing.T) {
		e := sharedEnv(t)
		cfg := filepath.Join(t.TempDir(), "binlogsync.yaml")
		yaml := fmt.Sprintf(`tables:
  rules:
    - match: "%s.alltypes"
      columns:
        exclude: [c_text_l]
        rename: {c_varchar: name}
      key: "doc:{${id}}:${db}"
      ttl: 1h
      format: json
`, e.db)
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		p := e.start("--config", cfg)
		writeAllTypes(t, e)

		// MySQL's rows as the rule shapes them.
		mysqlWant := func() map[string]map[string]string {
			out := map[string]map[string]string{}
			for _, row := range e.snapshotMySQL("alltypes", "id") {
				delete(row, "c_text_l")
				if v, ok := row["c_varchar"]; ok {
					row["name"] = v
					delete(row, "c_varchar")
				}
				out["doc:{"+row["id"]+"}:"+e.db] = row
			}
			return out
		}
		var want, got map[string]map[string]string
		var raw map[string][]byte
		deadline := time.Now().Add(30 * time.Second)
		for {
			want = mysqlWant()
			got, raw = e.jsonDocs(t, "doc:*")
			d := diff(want, got, allTypesFloats)
			if len(d) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Redis JSON documents differ from MySQL:\n%s", strings.Join(d, "\n"))
			}
			time.Sleep(100 * time.Millisecond)
		}

		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		wantKeys := []string{"doc:{10}:" + e.db, "doc:{3}:" + e.db, "doc:{4}:" + e.db, "doc:{5}:" + e.db, "doc:{7}:" + e.db}
		if fmt.Sprint(keys) != fmt.Sprint(wantKeys) {
			t.Errorf("keys %v, want %v", keys, wantKeys)
		}
		if n, err := e.rdb.Exists(context.Background(), e.db+":alltypes:10").Result(); err != nil || n != 0 {
			t.Errorf("the default key exists too (%d, %v)", n, err)
		}
		for k, doc := range raw {
			if !bytes.HasPrefix(doc, []byte(`{"_v":"`)) || len(doc) < 36 || doc[35] != '"' {
				t.Errorf("%s: _v is not the first member at bytes 7..34: %.80s", k, doc)
			}
			if bytes.Contains(doc, []byte(`"c_text_l"`)) || bytes.Contains(doc, []byte(`"c_varchar"`)) {
				t.Errorf("%s: excluded or renamed-away column present: %.200s", k, doc)
			}
			ttl, err := e.rdb.TTL(context.Background(), k).Result()
			if err != nil || ttl <= 0 || ttl > time.Hour {
				t.Errorf("%s: TTL %v (%v), want in (0, 1h]", k, ttl, err)
			}
		}
		if n := got["doc:{4}:"+e.db]["name"]; n != "was null" {
			t.Errorf("renamed field name = %q, want %q", n, "was null")
		}
		// Not UTF-8: an object {"b64": ...} holding the bytes.
		var doc5 map[string]json.RawMessage
		if err := json.Unmarshal(raw["doc:{5}:"+e.db], &doc5); err != nil {
			t.Fatal(err)
		}
		if want := `{"b64":"` + base64.StdEncoding.EncodeToString([]byte{0, 0xff, 0}) + `"}`; string(doc5["c_varbinary"]) != want {
			t.Errorf("c_varbinary = %s, want %s", doc5["c_varbinary"], want)
		}
		p.stop(t, 15*time.Second)
	})
}

// jsonDocs reads the JSON-format rows under pattern: key -> member -> value
// (b64 objects decoded, "_v" left out), and the raw documents.
func (e *env) jsonDocs(t *testing.T, pattern string) (map[string]map[string]string, map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	out := map[string]map[string]string{}
	raw := map[string][]byte{}
	iter := e.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		b, err := e.rdb.Get(ctx, k).Bytes()
		if errors.Is(err, redis.Nil) {
			continue // deleted since the SCAN saw it (a delete or key change still streaming): the caller retries
		}
		if err != nil {
			t.Fatalf("GET %s: %v", k, err)
		}
		raw[k] = b
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s is not a JSON object: %v: %.200s", k, err, b)
		}
		m := map[string]string{}
		for f, v := range doc {
			switch v := v.(type) {
			case string:
				if f != "_v" {
					m[f] = v
				}
			case map[string]any:
				s, ok := v["b64"].(string)
				dec, err := base64.StdEncoding.DecodeString(s)
				if !ok || len(v) != 1 || err != nil {
					t.Fatalf("%s: member %s is %v, want a string or {\"b64\": ...}", k, f, v)
				}
				m[f] = string(dec)
			default:
				t.Fatalf("%s: member %s is %T %v, want a string or {\"b64\": ...}", k, f, v, v)
			}
		}
		if _, ok := doc["_v"]; !ok {
			t.Errorf("%s: no _v member", k)
		}
		out[k] = m
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out, raw
}

// TestIntegrationTextTypesAndZerofill covers what the binlog does not describe and SELECT prints differently from
// the stored bytes: MariaDB's UUID, INET6 and INET4 (BINARY in the binlog, text in SELECT) and ZEROFILL padding.
// The stream writes what SELECT prints, and the reconciler finds no drift in it (its digests hash the text too).
func TestIntegrationTextTypesAndZerofill(t *testing.T) {
	e := sharedEnv(t)
	e.exec(`CREATE TABLE texttypes (id INT PRIMARY KEY, u UUID, i6 INET6, i4 INET4, z INT(6) ZEROFILL,
		d DECIMAL(5,3) UNSIGNED ZEROFILL, b BIGINT ZEROFILL, n INT)`)
	p := e.start("--config", "../config.example.yaml")
	e.exec(`INSERT INTO texttypes VALUES
		(1, '123e4567-e89b-12d3-a456-426655440000', '2001:db8::ff00:42:8329', '192.168.1.10', 42, 1.5, 7, 1),
		(2, '6ccd780c-baba-1026-9564-5b8c656024db', '::ffff:192.168.1.10', '0.0.0.0', 1234567, 12.345, 0, 2),
		(3, NULL, NULL, NULL, NULL, NULL, NULL, 3),
		(4, '00000000-0000-0000-0000-000000000000', '::', '1.2.3.0', 0, 0, 18446744073709551615, 4)`,
		"UPDATE texttypes SET i6 = '1:2:3:4:5:6:7:0', z = 5 WHERE id = 3")
	e.waitSame("texttypes", 20*time.Second, nil, "id")
	got, _ := e.snapshotRedis("texttypes")
	for _, c := range []struct{ key, field, want string }{
		{"1", "u", "123e4567-e89b-12d3-a456-426655440000"},
		{"1", "i6", "2001:db8::ff00:42:8329"},
		{"1", "i4", "192.168.1.10"},
		{"1", "z", "000042"},
		{"1", "d", "01.500"},
		{"1", "b", "00000000000000000007"},
		{"2", "i6", "::ffff:192.168.1.10"},
		{"2", "z", "1234567"},
		{"3", "i6", "1:2:3:4:5:6:7::"},
		{"3", "z", "000005"},
		{"4", "u", "00000000-0000-0000-0000-000000000000"},
		{"4", "i4", "1.2.3.0"},
	} {
		if v := got[e.db+":texttypes:"+c.key][c.field]; v != c.want {
			t.Errorf("Redis id %s %s = %q, want %q", c.key, c.field, v, c.want)
		}
	}
	rep := e.tableReport(e.reconcile("--table", e.db+".texttypes"), "texttypes")
	if rep.Rows != 4 || rep.Drift() != 0 || rep.RangesDiffered != 0 {
		t.Errorf("the reconciler should find the streamed rows equal: %+v", rep)
	}

	// A UUID primary key: keys in its text form, and the reconciler ranges over it and repairs.
	e.exec("CREATE TABLE uuidpk (id UUID PRIMARY KEY, v INT)")
	for i := 0; i < 300; i++ {
		e.exec(fmt.Sprintf("INSERT INTO uuidpk VALUES ('%08x-0000-1000-8000-%012x', %d)", i*7919, i, i))
	}
	e.waitSame("uuidpk", 20*time.Second, nil, "id")
	ctx := context.Background()
	first := e.db + ":uuidpk:00000000-0000-1000-8000-000000000000"
	if err := e.rdb.Del(ctx, first).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HSet(ctx, e.db+":uuidpk:"+fmt.Sprintf("%08x-0000-1000-8000-%012x", 150*7919, 150), "v", "wrong").Err(); err != nil {
		t.Fatal(err)
	}
	e.extra["BINLOGSYNC_RECONCILE_CHUNK_ROWS"] = "40" // several ranges, bounded by UUIDs
	rep = e.tableReport(e.reconcile("--table", e.db+".uuidpk"), "uuidpk")
	if rep.Error != "" || rep.Rows != 300 || rep.Ranges < 3 || rep.Missing.Repaired != 1 || rep.Stale.Repaired != 1 {
		t.Errorf("the reconciler over a UUID key: %+v, want 300 rows in several ranges, 1 missing and 1 stale repaired", rep)
	}
	e.waitSame("uuidpk", 20*time.Second, nil, "id")
	p.stop(t, 15*time.Second)
}
