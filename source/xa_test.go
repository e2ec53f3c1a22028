package source

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestParseXID(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"X'7831',X'',1", "1:7831:"},             // as MariaDB and MySQL write it to the binlog
		{"X'7831',X'',1 ONE PHASE", "1:7831:"},   // one-phase commit
		{"'x1'", "1:7831:"},                      // as a client writes it: bqual '' and format 1 by default
		{"'b', 'q', 7", "7:62:71"},               // all three parts
		{"0x6263,0x,-3", "4294967293:6263:"},     // hex literals, negative format id
		{`'it''s', "a\"b"`, "1:69742773:612262"}, // doubled and escaped quotes
	} {
		got, err := parseXID(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseXID(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "x1", "X'78", "X'zz'", "'open", "'a', X'1"} {
		if got, err := parseXID(bad); err == nil {
			t.Errorf("parseXID(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDecodeXAPrepare(t *testing.T) {
	body := make([]byte, 13, 20)
	body[0] = 0 // two-phase
	binary.LittleEndian.PutUint32(body[1:], 7)
	binary.LittleEndian.PutUint32(body[5:], 1)
	binary.LittleEndian.PutUint32(body[9:], 1)
	body = append(body, 'b', 'q')
	got, onePhase, err := decodeXAPrepare(body)
	if err != nil || onePhase {
		t.Fatal(err, onePhase)
	}
	want, _ := parseXID("'b', 'q', 7")
	if got != want {
		t.Errorf("prepare event XID %q, the statement's %q: XA COMMIT would not find the parked rows", got, want)
	}
	// MySQL logs XA COMMIT ... ONE PHASE as an XA_PREPARE event with one_phase set.
	body[0] = 1
	if _, onePhase, _ := decodeXAPrepare(body); !onePhase {
		t.Errorf("one_phase not read")
	}
	// The server keeps 4 bytes of the format id: a statement's 3000000000 or -1 is stored wrapped.
	for _, format := range []string{"3000000000", "-1294967296"} {
		binary.LittleEndian.PutUint32(body[1:], 3000000000)
		got, _, _ := decodeXAPrepare(body)
		want, err := parseXID("'b', 'q', " + format)
		if err != nil || got != want {
			t.Errorf("format id %s: event %q, statement %q (%v)", format, got, want, err)
		}
	}
	for _, bad := range [][]byte{body[:12], body[:14]} {
		if _, _, err := decodeXAPrepare(bad); err == nil {
			t.Errorf("decodeXAPrepare(%x) succeeded on a truncated body", bad)
		}
	}
}

func TestLogQueryHidesPasswords(t *testing.T) {
	for _, q := range []string{
		"ALTER USER 'u'@'%' IDENTIFIED BY 'S3cret'",
		"  create or replace user u identified by 'S3cret'",
		"/* c */ SET PASSWORD FOR u = PASSWORD('S3cret')",
		"GRANT SELECT ON *.* TO u IDENTIFIED BY 'S3cret'",
		"CHANGE MASTER TO MASTER_PASSWORD='S3cret'",
		"CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (PASSWORD 'S3cret')",
	} {
		if got := logQuery(q); strings.Contains(got, "S3cret") || !strings.Contains(got, "not logged") {
			t.Errorf("logQuery(%q) = %q", q, got)
		}
	}
	if got := logQuery("ALTER TABLE t ADD c INT"); got != "ALTER TABLE t ADD c INT" {
		t.Errorf("an ordinary DDL statement should be logged as is: %q", got)
	}
}
