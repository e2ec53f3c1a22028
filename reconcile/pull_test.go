package reconcile

import (
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

// TestRespBuf parses replies that arrive a byte at a time into a buffer smaller than one of them, so every
// position must survive the buffer's compaction and growth.
func TestRespBuf(t *testing.T) {
	big := strings.Repeat("x", 100)
	in := "*4\r\n$4\r\nname\r\n$100\r\n" + big + "\r\n$2\r\n_v\r\n$0\r\n\r\n" + ":1\r\n-WRONGTYPE Operation\r\n+OK\r\n"
	rb := &respBuf{src: iotest.OneByteReader(strings.NewReader(in)), b: make([]byte, 8)}
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
			t.Errorf("field %d: %q, want %q", i, got, want[i])
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
	for _, bad := range []string{"*x\r\n", "$3\r\nabcde\r\n", "*1\n", ":99999999999999999999\r\n"} {
		rb := &respBuf{src: strings.NewReader(bad), b: make([]byte, 64)}
		_, _, pos, err := rb.header(0)
		if err == nil && bad[0] == '$' {
			_, _, err = rb.bulkAt(0)
		}
		if err == nil {
			t.Errorf("%q parsed (next %d)", bad, pos)
		}
	}
}
