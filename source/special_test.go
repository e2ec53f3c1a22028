package source

import (
	"encoding/hex"
	"math/rand"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// TestUUIDAndInetMatchServer checks the text forms of UUID, INET4 and INET6 values against the server's, for
// addresses with zero groups in every arrangement.
func TestUUIDAndInetMatchServer(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	db := m.Root(t, "")
	r := rand.New(rand.NewSource(1))
	check := func(typ string, b []byte) {
		t.Helper()
		var want string
		if err := db.QueryRow("SELECT CAST(CAST(UNHEX(?) AS "+typ+") AS CHAR)", hex.EncodeToString(b)).Scan(&want); err != nil {
			t.Fatalf("%s %x: %v", typ, b, err)
		}
		c := Column{Name: "c", Type: mysql.MYSQL_TYPE_STRING, Meta: uint16(mysql.MYSQL_TYPE_STRING)<<8 | uint16(len(b)),
			Charset: "binary", TextType: strings.ToLower(typ)}
		trimmed := string(b)
		for len(trimmed) > 0 && trimmed[len(trimmed)-1] == 0 { // as the binlog carries BINARY
			trimmed = trimmed[:len(trimmed)-1]
		}
		got, _, err := c.AppendValue(nil, trimmed)
		if err != nil || string(got) != want {
			t.Errorf("%s %x: %q (%v), the server prints %q", typ, b, got, err, want)
		}
	}
	for i := 0; i < 400; i++ {
		b := make([]byte, 16)
		for g := 0; g < 8; g++ {
			switch r.Intn(3) {
			case 0: // zero group
			case 1:
				b[2*g+1] = byte(r.Intn(3))
			default:
				b[2*g], b[2*g+1] = byte(r.Intn(256)), byte(r.Intn(256))
			}
		}
		if r.Intn(8) == 0 { // IPv4-mapped and -compatible shapes
			copy(b, make([]byte, 10))
			if r.Intn(2) == 0 {
				b[10], b[11] = 0xff, 0xff
			} else {
				b[10], b[11] = 0, 0
			}
		}
		check("INET6", b)
		check("UUID", b)
		check("INET4", b[12:])
	}
	check("INET6", make([]byte, 16))
	check("UUID", make([]byte, 16))
	check("INET4", make([]byte, 4))
}

func TestZeroFillWidth(t *testing.T) {
	for ct, want := range map[[2]string]int{
		{"int", "int(6) unsigned zerofill"}:             6,
		{"bigint", "bigint(20) unsigned zerofill"}:      20,
		{"decimal", "decimal(5,3) unsigned zerofill"}:   6,
		{"decimal", "decimal(5,0) unsigned zerofill"}:   5,
		{"int", "int(11)"}:                              0,
		{"float", "float(7,3) unsigned zerofill"}:       0,
		{"tinyint", "tinyint(3) unsigned zerofill"}:     3,
		{"mediumint", "MEDIUMINT(8) UNSIGNED ZEROFILL"}: 8,
	} {
		sc := SchemaColumn{DataType: ct[0], ColumnType: ct[1]}
		if ct[0] == "decimal" && ct[1] == "decimal(5,3) unsigned zerofill" {
			sc.Scale = 3
		}
		if got := zeroFillWidth(&sc); got != want {
			t.Errorf("%s: %d, want %d", ct[1], got, want)
		}
	}
	c := Column{Name: "z", Type: mysql.MYSQL_TYPE_LONG, Unsigned: true, ZeroFill: 6}
	for v, want := range map[any]string{int32(42): "000042", int32(1234567): "1234567", int32(0): "000000"} {
		if got, _, err := c.AppendValue([]byte("x"), v); err != nil || string(got) != "x"+want {
			t.Errorf("ZEROFILL(6) %v: %q %v, want %q", v, got, err, want)
		}
	}
}
