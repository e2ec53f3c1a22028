package reconcile

import (
	"testing"

	"github.com/binlogsync/binlogsync/change"
)

func BenchmarkParseKey(b *testing.B) {
	tb := &table{t: &change.Table{DB: "d", Name: "narrow", Columns: []string{"id", "v"}, PK: []int{0}}}
	pat, _ := parsePattern("", "", tb)
	for b.Loop() {
		if _, ok := pat.parse("d:narrow:1234567", tb); !ok {
			b.Fatal("no reading")
		}
	}
}
