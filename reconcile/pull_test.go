package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/redis/go-redis/v9"
)

// TestRespBuf parses replies that arrive a byte at a time into a buffer smaller than one of them, so every
// position must survive the buffer's compaction and growth; and the same replies buffered whole, which bulkAt
// parses inline.
func TestRespBuf(t *testing.T) {
	big := strings.Repeat("x", 100)
	in := "*4\r\n$4\r\nname\r\n$100\r\n" + big + "\r\n$2\r\n_v\r\n$0\r\n\r\n" + ":1\r\n-WRONGTYPE Operation\r\n+OK\r\n"
	for _, whole := range []bool{false, true} {
		rb := &respBuf{src: iotest.OneByteReader(strings.NewReader(in)), b: make([]byte, 8)}
		if whole {
			rb = &respBuf{src: strings.NewReader(in), b: make([]byte, 1024)}
			if err := rb.ensure(len(in)); err != nil {
				t.Fatal(err)
			}
		}
		typ, n, pos, err := rb.header(0)
		if err != nil || typ != '*' || n != 4 {
			t.Fatalf("array header: %c %d %v", typ, n, err)
		}
		var spans [][2]int
		for range n {
			var s [2]int
			if s, pos, err = rb.bulkAt(pos); err != nil {
				t.Fatal(err)
			}
			spans = append(spans, s)
		}
		want := []string{"name", big, "_v", ""}
		for i, s := range spans {
			if got := rb.text(s[0], s[1]); string(got) != want[i] || got == nil {
				t.Errorf("buffered whole %v: field %d: %q, want %q", whole, i, got, want[i])
			}
		}
		rb.consume(pos)
		if typ, n, pos, err = rb.header(0); err != nil || typ != ':' || n != 1 {
			t.Fatalf("integer: %c %d %v", typ, n, err)
		}
		rb.consume(pos)
		if typ, _, pos, err = rb.header(0); err != nil || typ != '-' || !bytes.Equal(rb.text(1, pos-2), []byte("WRONGTYPE Operation")) {
			t.Fatalf("error: %c %q %v", typ, rb.text(1, pos-2), err)
		}
		rb.consume(pos)
		if typ, _, pos, err = rb.header(0); err != nil || typ != '+' {
			t.Fatalf("status: %c %v", typ, err)
		}
		rb.consume(pos)
		if _, _, _, err := rb.header(0); err == nil {
			t.Fatal("read past the end")
		}
	}
	for _, bad := range []string{"*x\r\n", "*1\n", ":99999999999999999999\r\n", "$3\r\nabcde\r\n", "$3\r\nabc\n\n",
		"$-1\r\n", "$\r\n\r\n", "$3\nabc\r\n", "$3\r\nab", "$1234567890\r\nabc\r\n", ":1\r\n"} {
		rb := &respBuf{src: strings.NewReader(bad), b: make([]byte, 64)}
		_ = rb.ensure(len(bad))
		var err error
		if bad[0] == '$' || bad == ":1\r\n" {
			_, _, err = rb.bulkAt(0)
		} else {
			_, _, _, err = rb.header(0)
		}
		if err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// cutConn fails its reads with a connection reset once it has read limit bytes.
type cutConn struct {
	net.Conn
	left int
}

func (c *cutConn) Read(b []byte) (int, error) {
	if c.left <= 0 {
		c.Conn.Close()
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by test")}
	}
	n, err := c.Conn.Read(b[:min(len(b), c.left)])
	c.left -= n
	return n, err
}

// TestPullRedialsBrokenConnections breaks the reconciler's Redis connections in the middle of pipelined replies:
// the pass dials again and resumes at the first key whose reply it had not parsed, so it finds exactly the drift
// injected; connections that never work end the pass with an error naming the table.
func TestPullRedialsBrokenConnections(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE pr (id INT PRIMARY KEY, v VARCHAR(40))",
		"INSERT INTO pr SELECT seq, CONCAT('value of row ', seq) FROM seq_1_to_5000")
	r := f.reconciler(2500)
	f.run(r, PassOptions{})
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		f.rdb.Del(ctx, fmt.Sprintf("%s:pr:%d", f.db, i*900))
		f.rdb.HSet(ctx, fmt.Sprintf("%s:pr:%d", f.db, i*900+7), "v", "drift")
	}
	o := *f.client().(*redis.Client).Options()
	var dials, cut atomic.Int64
	limit := 80 << 10 // about a batch and a half of these rows' replies (512 rows of about 100 bytes)
	o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil || dials.Add(1) > 6 {
			return c, err
		}
		cut.Add(1)
		return &cutConn{Conn: c, left: limit}, nil
	}
	r.redis.pull = newPuller(&o)
	tr := tableReport(t, f.run(r, PassOptions{}), "pr")
	if tr.Rows != 5000 || tr.Missing != (Count{5, 5}) || tr.Stale != (Count{5, 5}) || tr.Extra != (Count{}) {
		t.Fatalf("pass over broken connections: %+v, want 5000 rows, 5 missing and 5 stale repaired", tr)
	}
	if cut.Load() != 6 {
		t.Fatalf("%d connections were cut, want 6", cut.Load())
	}
	if tr := tableReport(t, f.run(r, PassOptions{}), "pr"); tr.Drift() != 0 {
		t.Fatalf("pass after the repairs: %+v, want no drift", tr)
	}

	// The digest read over broken connections equals the one read over sound ones, key by key (the pass above
	// could hide a wrong one: settling reads the candidates again).
	tb, err := loadTable(ctx, f.sqldb, f.db, "pr", TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys, probes []string
	for i := 1; i <= 5000; i++ {
		keys = append(keys, fmt.Sprintf("%s:pr:%d", f.db, i))
	}
	for i := 4990; i <= 5010; i++ {
		probes = append(probes, fmt.Sprintf("%s:pr:%d", f.db, i))
	}
	f.rdb.Del(ctx, keys[10], keys[4000])
	f.rdb.HSet(ctx, keys[20], "v", "drift")
	want, err := newPuller(f.client().(*redis.Client).Options()).digest(ctx, f.rdb, tb, keys, probes)
	if err != nil {
		t.Fatal(err)
	}
	dials.Store(0)
	cut.Store(0)
	got, err := newPuller(&o).digest(ctx, f.rdb, tb, keys, probes)
	if err != nil {
		t.Fatal(err)
	}
	if cut.Load() != 6 || !reflect.DeepEqual(got, want) || want.count != 4998 || len(want.hits) != 11 {
		t.Fatalf("digest over %d broken connections: count %d, xor %x, hits %v; over sound ones: count %d, xor %x, hits %v",
			cut.Load(), got.count, got.xor, got.hits, want.count, want.xor, want.hits)
	}

	limit = 0 // every connection fails at once
	dials.Store(0)
	r.redis.pull = newPuller(&o)
	_, err = r.Run(ctx, PassOptions{})
	if err == nil || !strings.Contains(err.Error(), "reading rows of "+f.db+".pr in Redis") ||
		!strings.Contains(err.Error(), "connection reset by test") {
		t.Fatalf("pass whose connections all fail: %v, want the table and the read error named", err)
	}
}
