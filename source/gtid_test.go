package source

import (
	"testing"

	gmysql "github.com/go-mysql-org/go-mysql/mysql"
)

// TestFormatGTIDSet checks the fast formatting of MariaDB GTID sets against the library's own String.
func TestFormatGTIDSet(t *testing.T) {
	for _, in := range []string{"", "0-1-5", "3-4294967295-18446744073709551615", "0-1-5,1-2-7", "0-0-0"} {
		set, err := gmysql.ParseMariadbGTIDSet(in)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := formatGTIDSet(set), set.String(); got != want {
			t.Errorf("formatGTIDSet(%q) = %q, want %q", in, got, want)
		}
	}
	my, err := gmysql.ParseMysqlGTIDSet("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	if err != nil {
		t.Fatal(err)
	}
	if got := formatGTIDSet(my); got != my.String() {
		t.Errorf("MySQL set formatted %q, want %q", got, my.String())
	}
}
