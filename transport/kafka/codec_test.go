package kafka

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/change"
)

var usersTable = &change.Table{DB: "shop", Name: "users", Columns: []string{"id", "name", "blob", "note"}, PK: []int{0}}

func sampleChange() change.Change {
	return change.Change{
		Op:         change.Update,
		Table:      usersTable,
		Before:     change.Row{[]byte("42"), []byte("ann"), []byte{0, 0xff, 'a'}, nil},
		After:      change.Row{[]byte("42"), []byte("ann \"the\" <x>\n\u2028é"), []byte{}, []byte("")},
		Version:    change.Version{Epoch: 1, File: 3, Pos: 298, Seq: 2},
		CommitTime: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC),
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	c := sampleChange()
	src := Source{File: "mariadb-bin.000003", Pos: 298, GTIDSet: "0-1-5", Server: "mariadb-server-id:1"}
	b, err := Encode(nil, &c, src)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatalf("not JSON: %s", b)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	before := generic["before"].(map[string]any)
	if before["blob"].(map[string]any)["b64"] != "AP9h" || before["note"] != nil {
		t.Errorf("before = %v", before)
	}
	if generic["version"] != "0001000000030000012a00000002" || generic["op"] != "update" ||
		generic["commit_time"] != "2024-05-01T10:00:00Z" {
		t.Errorf("message = %s", b)
	}
	if bytes.Contains(b, []byte("\u2028")) {
		t.Errorf("U+2028 not escaped: %s", b)
	}
	d := NewDecoder()
	got, gsrc, err := d.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if gsrc != src {
		t.Errorf("source = %+v, want %+v", gsrc, src)
	}
	assertSame(t, c, got)
	if got.After[2] == nil || len(got.After[2]) != 0 || got.Before[3] != nil {
		t.Errorf("empty and NULL values confused: %q %q", got.After[2], got.Before[3])
	}
	// The same shape decodes to the same *change.Table (the sink caches by it).
	got2, _, err := d.Decode(b)
	if err != nil || got2.Table != got.Table {
		t.Errorf("table not reused: %v", err)
	}
}

func assertSame(t *testing.T, want, got change.Change) {
	t.Helper()
	if got.Op != want.Op || got.Version != want.Version || !got.CommitTime.Equal(want.CommitTime) {
		t.Errorf("got %v %v %v, want %v %v %v", got.Op, got.Version, got.CommitTime, want.Op, want.Version, want.CommitTime)
	}
	if got.Table.FullName() != want.Table.FullName() || strings.Join(got.Table.Columns, ",") != strings.Join(want.Table.Columns, ",") ||
		len(got.Table.PK) != len(want.Table.PK) {
		t.Errorf("table %+v, want %+v", got.Table, want.Table)
	}
	for i := range want.Table.PK {
		if got.Table.PK[i] != want.Table.PK[i] {
			t.Errorf("pk %v, want %v", got.Table.PK, want.Table.PK)
		}
	}
	sameRow(t, "before", want.Before, got.Before)
	sameRow(t, "after", want.After, got.After)
}

func sameRow(t *testing.T, name string, want, got change.Row) {
	t.Helper()
	if (want == nil) != (got == nil) || len(want) != len(got) {
		t.Fatalf("%s = %q, want %q", name, got, want)
	}
	for i := range want {
		if (want[i] == nil) != (got[i] == nil) || !bytes.Equal(want[i], got[i]) {
			t.Errorf("%s[%d] = %q, want %q", name, i, got[i], want[i])
		}
	}
}

func TestEncodeInsertDeleteAndKey(t *testing.T) {
	pairs := &change.Table{DB: "d", Name: "pairs", Columns: []string{"a", "b", "v"}, PK: []int{1, 0}}
	ins := change.Change{Op: change.Insert, Table: pairs, After: change.Row{[]byte("1"), []byte("x"), nil}, Version: change.Version{File: 1, Pos: 4, Seq: 1}}
	del := change.Change{Op: change.Delete, Table: pairs, Before: change.Row{[]byte("2"), []byte("y"), []byte("v")}, Version: change.Version{File: 1, Pos: 9, Seq: 1}}
	if k := string(Key(nil, &ins)); k != "d:pairs:x:1" {
		t.Errorf("insert key = %q", k)
	}
	if k := string(Key(nil, &del)); k != "d:pairs:y:2" {
		t.Errorf("delete key = %q", k)
	}
	d := NewDecoder()
	for _, c := range []change.Change{ins, del} {
		b, err := Encode(nil, &c, Source{})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("commit_time")) || bytes.Contains(b, []byte("gtid_set")) {
			t.Errorf("empty members not left out: %s", b)
		}
		got, _, err := d.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		assertSame(t, c, got)
	}
}

func TestEncodeRefusesBadChanges(t *testing.T) {
	bad := []change.Change{
		{Op: change.Insert, Table: usersTable},
		{Op: change.Delete, Table: usersTable},
		{Op: 9, Table: usersTable, After: change.Row{nil, nil, nil, nil}},
		{Op: change.Insert, Table: usersTable, After: change.Row{nil}},
		{Op: change.Insert},
	}
	for i, c := range bad {
		if _, err := Encode(nil, &c, Source{}); err == nil {
			t.Errorf("%d: no error", i)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good, err := Encode(nil, func() *change.Change { c := sampleChange(); return &c }(), Source{})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"not json":        "hello",
		"other format":    strings.Replace(string(good), `"format":1`, `"format":2`, 1),
		"no format":       strings.Replace(string(good), `"format":1,`, ``, 1),
		"bad op":          strings.Replace(string(good), `"op":"update"`, `"op":"upsert"`, 1),
		"bad version":     strings.Replace(string(good), `"version":"0001`, `"version":"zz01`, 1),
		"missing column":  strings.Replace(string(good), `"note":""}`, `"x":""}`, 1),
		"bad b64":         strings.Replace(string(good), `"AP9h"`, `"!!"`, 1),
		"pk not listed":   strings.Replace(string(good), `"pk":["id"]`, `"pk":["nope"]`, 1),
		"pk mismatch":     strings.Replace(string(good), `"pk_values":["42"]`, `"pk_values":["43"]`, 1),
		"number value":    strings.Replace(string(good), `"name":"ann"`, `"name":7`, 1),
		"bad time":        strings.Replace(string(good), `"2024-05-01T10:00:00Z"`, `"yesterday"`, 1),
		"metadata column": strings.ReplaceAll(string(good), `"name"`, `"_v"`),
	}
	d := NewDecoder()
	for name, msg := range cases {
		if msg == string(good) {
			t.Fatalf("%s: the case did not change the message", name)
		}
		if _, _, err := d.Decode([]byte(msg)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestFileNamer(t *testing.T) {
	var f fileNamer
	f.set("mysql-bin.000042")
	if n := f.name(42); n != "mysql-bin.000042" {
		t.Errorf("name(42) = %q", n)
	}
	if n := f.name(43); n != "mysql-bin.000043" {
		t.Errorf("name(43) = %q", n)
	}
	if n := f.name(1234567); n != "mysql-bin.1234567" {
		t.Errorf("name(1234567) = %q", n)
	}
}

func BenchmarkEncode(b *testing.B) {
	c := sampleChange()
	var buf []byte
	for b.Loop() {
		buf, _ = Encode(buf[:0], &c, Source{File: "mysql-bin.000003", Pos: 298})
	}
}

func BenchmarkDecode(b *testing.B) {
	c := sampleChange()
	msg, _ := Encode(nil, &c, Source{File: "mysql-bin.000003", Pos: 298})
	d := NewDecoder()
	for b.Loop() {
		if _, _, err := d.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// narrowInsert is a row of the benchmarks' narrow table.
func narrowInsert() change.Change {
	t := &change.Table{DB: "bench", Name: "narrow", Columns: []string{"id", "name", "qty", "price", "updated"}, PK: []int{0}}
	return change.Change{Op: change.Insert, Table: t,
		After:   change.Row{[]byte("123456"), []byte("name-123456"), []byte("17"), []byte("12.50"), []byte("2024-05-01 10:00:00")},
		Version: change.Version{File: 1, Pos: 4000, Seq: 17}, CommitTime: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)}
}

func BenchmarkDecodeNarrowInsert(b *testing.B) {
	c := narrowInsert()
	msg, _ := Encode(nil, &c, Source{File: "mysql-bin.000001", Pos: 4000, GTIDSet: "0-1-11", Server: "mariadb-server-id:1"})
	d := NewDecoder()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, _, err := d.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeAnyJSONLayout checks that the decoder reads the format, not the
// encoder's byte layout: members in another order, white space, escapes
// where none are needed, unknown members and nulls for absent members.
func TestDecodeAnyJSONLayout(t *testing.T) {
	want := sampleChange()
	msg := ` { "after" : {"note":"","blob":{ "b64" : "" },"id":"\u0034\u0032","name":"ann \"the\" <x>\n\u2028\u00e9"},
	  "extra": [1, -2.5e3, {"x": [true, false, null]}, "s"], "commit_time":"2024-05-01T12:00:00+02:00",
	  "before": {"id":"42","name":"ann","blob":{"b64":"AP9h"},"note":null},
	  "version":"0001000000030000012A00000002", "source": {"epoch": 1, "pos": 298, "file": "f\/1", "x": {}},
	  "pk_values": ["42"], "pk": ["id"], "columns": ["id", "name", "blob", "note"],
	  "table": "users", "db": "shop", "op": "update", "format": 1 } `
	d := NewDecoder()
	got, src, err := d.Decode([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, want, got)
	if src.File != "f/1" || src.Pos != 298 || src.GTIDSet != "" {
		t.Errorf("source = %+v", src)
	}
	// Surrogate pairs and lone surrogates, as encoding/json reads them.
	emoji := strings.Replace(msg, `"ann"`, `"\ud83d\ude00\ud800x"`, 1)
	got, _, err = d.Decode([]byte(emoji))
	if err != nil {
		t.Fatal(err)
	}
	if s := string(got.Before[1]); s != "\U0001F600\uFFFDx" {
		t.Errorf("surrogates decoded to %q", s)
	}
}

func TestDecodeRefusesMalformed(t *testing.T) {
	c := sampleChange()
	good, err := Encode(nil, &c, Source{File: "mysql-bin.000003", Pos: 298})
	if err != nil {
		t.Fatal(err)
	}
	g := string(good)
	cases := map[string]string{
		"trailing data":       g + "x",
		"trailing comma":      strings.Replace(g, `"pk":["id"]`, `"pk":["id",]`, 1),
		"duplicate member":    strings.Replace(g, `"op":"update"`, `"op":"update","op":"update"`, 1),
		"duplicate column":    strings.Replace(g, `"note":""}`, `"note":"","note":""}`, 1),
		"unknown column":      strings.Replace(g, `"note":""}`, `"note":"","zz":""}`, 1),
		"b64 extra member":    strings.Replace(g, `{"b64":"AP9h"}`, `{"b64":"AP9h","x":1}`, 1),
		"b64 not string":      strings.Replace(g, `{"b64":"AP9h"}`, `{"b64":null}`, 1),
		"empty b64 object":    strings.Replace(g, `{"b64":"AP9h"}`, `{}`, 1),
		"control character":   strings.Replace(g, `"ann"`, "\"a\x01n\"", 1),
		"invalid UTF-8":       strings.Replace(g, `"ann"`, "\"a\xffn\"", 1),
		"bad escape":          strings.Replace(g, `"ann"`, `"a\qn"`, 1),
		"format not integer":  strings.Replace(g, `"format":1`, `"format":1.0`, 1),
		"pos out of range":    strings.Replace(g, `"pos":298`, `"pos":4294967296`, 1),
		"epoch differs":       strings.Replace(g, `"epoch":1`, `"epoch":2`, 1),
		"truncated":           g[:len(g)-10],
		"unterminated string": g[:strings.Index(g, `"ann"`)+3],
		"deep nesting":        strings.Replace(g, `"format":1`, `"x":`+strings.Repeat("[", 1000)+strings.Repeat("]", 1000)+`,"format":1`, 1),
	}
	d := NewDecoder()
	for name, msg := range cases {
		if msg == g {
			t.Fatalf("%s: the case did not change the message", name)
		}
		if _, _, err := d.Decode([]byte(msg)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, _, err := d.Decode(good); err != nil {
		t.Fatal(err)
	}
}
