package reconcile

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
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

// BenchmarkRecv parses and hashes HGETALL replies of rows shaped like BenchmarkReconcile's (10 columns, "_v",
// "_h"), from memory: the reconciler's CPU per row of a full pass, without Redis.
func BenchmarkRecv(b *testing.B) {
	names := []string{"id", "a", "b", "name", "email", "created", "price", "score", "flags", "note"}
	tb := &table{t: &change.Table{DB: "d", Name: "recon", Columns: names, PK: []int{0}}}
	for i, n := range names {
		tb.cols = append(tb.cols, column{name: n, field: n, numeric: i != 3 && i != 4 && i != 9, utf8: true})
	}
	const rows = 512
	var reply []byte
	keys := make([]string, rows)
	for r := range rows {
		keys[r] = fmt.Sprintf("d:recon:%d", r)
		vals := []string{fmt.Sprint(r), fmt.Sprint(r % 1000), fmt.Sprint(r * 7), fmt.Sprintf("name %d", r),
			fmt.Sprintf("user%d@example.com", r), "2020-01-01 00:00:01.000", "123.45", "3333.3333333333335",
			fmt.Sprint(r % 100), strings.Repeat("n", r%60)}
		reply = fmt.Appendf(reply, "*%d\r\n", 2*len(vals)+4)
		for i, v := range vals {
			reply = fmt.Appendf(reply, "$%d\r\n%s\r\n$%d\r\n%s\r\n", len(names[i]), names[i], len(v), v)
		}
		row := make(change.Row, len(vals))
		for i, v := range vals {
			row[i] = []byte(v)
		}
		h, _ := tb.rowHashBuf(nil, row, false) // a cached hash that is up to date, as in a pass without drift
		reply = fmt.Appendf(reply, "$2\r\n_v\r\n$28\r\n%028d\r\n$2\r\n_h\r\n$24\r\n%s%016x\r\n", r, tb.rowSig(), h)
	}
	pl := &pull{p: &puller{}, tb: tb, sig: tb.rowSig(), rows: keys, rowBytes: new(atomic.Int64)}
	src := bytes.NewReader(reply)
	rb := &respBuf{src: src, b: make([]byte, 256<<10)}
	b.SetBytes(int64(len(reply)))
	for b.Loop() {
		src.Reset(reply)
		rb.r, rb.w = 0, 0
		pl.lo, pl.d, pl.refresh = 0, &digestResult{hashes: make([]keyHash, rows)}, pl.refresh[:0]
		if err := pl.recv(rb, rows); err != nil {
			b.Fatal(err)
		}
		if pl.d.count != rows || len(pl.refresh) != 0 {
			b.Fatalf("%d rows, %d hashes to refresh", pl.d.count, len(pl.refresh)/3)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
}
