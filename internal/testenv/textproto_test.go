package testenv

import (
	"reflect"
	"testing"
)

func TestSelectTextReturnsTheServersBytes(t *testing.T) {
	m := SharedMariaDB(t)
	db := m.NewDatabase(t)
	m.Exec(t,
		"CREATE TABLE `"+db+"`.x (id INT PRIMARY KEY, y YEAR, d DOUBLE, ts TIMESTAMP(3) NULL, "+
			"l VARCHAR(10) CHARACTER SET latin1, u VARCHAR(10) CHARACTER SET utf8mb4, b VARBINARY(4), n INT)",
		// one multi-statement Exec, so one session: the TIMESTAMP is written at +05:30
		"SET time_zone = '+05:30'; INSERT INTO `"+db+"`.x VALUES "+
			"(1, 0, 1e15, '2020-01-01 05:30:00.250', 'é', '😀', X'00FF', NULL), (2, 2024, 0.1, NULL, '', '', '', 7)",
	)
	cols, rows, err := SelectText(m.Addr(), "root", m.RootPassword, db, "SELECT * FROM x ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"id", "y", "d", "ts", "l", "u", "b", "n"}; !reflect.DeepEqual(cols, want) {
		t.Fatalf("columns %q, want %q", cols, want)
	}
	want := [][][]byte{
		{[]byte("1"), []byte("0000"), []byte("1e15"), []byte("2020-01-01 00:00:00.250"), []byte("é"), []byte("😀"), {0, 0xFF}, nil},
		{[]byte("2"), []byte("2024"), []byte("0.1"), nil, {}, {}, {}, []byte("7")},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("rows\n%q\nwant\n%q", rows, want)
	}
	if _, _, err := SelectText(m.Addr(), "root", m.RootPassword, db, "SELECT * FROM missing"); err == nil {
		t.Fatal("a failing query returned no error")
	}
}
