package kafka

import (
	"bytes"
	"testing"
)

// FuzzDecode checks that Decode never panics, and that whatever it accepts
// encodes to a message that decodes to the same change and source.
func FuzzDecode(f *testing.F) {
	c := sampleChange()
	msg, err := Encode(nil, &c, Source{File: "mysql-bin.000003", Pos: 298, GTIDSet: "0-1-5"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(msg)
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		c1, s1, err := d.Decode(data)
		if err != nil {
			return
		}
		enc, err := Encode(nil, &c1, s1)
		if err != nil {
			t.Fatalf("decoded change does not encode: %v", err)
		}
		c2, s2, err := d.Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v\n%s", err, enc)
		}
		if s1 != s2 {
			t.Fatalf("source %+v became %+v", s1, s2)
		}
		assertSame(t, c1, c2)
		enc2, err := Encode(nil, &c2, s2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s", enc, enc2)
		}
	})
}
