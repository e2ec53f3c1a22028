package jsonenc

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

// TestRoundTrip decodes what AppendValue wrote with encoding/json and expects the bytes back.
func TestRoundTrip(t *testing.T) {
	for _, v := range [][]byte{
		[]byte(""), []byte("plain"), []byte("quote \" backslash \\ newline \n tab \t cr \r"),
		[]byte("control \x00 \x01 \x1f del \x7f"), []byte("line sep \u2028 para sep \u2029 e2 alone \u20ac"),
		[]byte("utf8 ünïcødé 😀"), {0xff, 0x00, 0xfe, 'a'}, {0xe2, 0x80},
	} {
		out := AppendValue(nil, v)
		var s string
		if err := json.Unmarshal(out, &s); err == nil {
			if s != string(v) {
				t.Errorf("%q: decoded %q from %s", v, s, out)
			}
			continue
		}
		var b struct{ B64 string }
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("%q: %s is not JSON: %v", v, out, err)
		}
		got, err := base64.StdEncoding.DecodeString(b.B64)
		if err != nil || string(got) != string(v) {
			t.Errorf("%q: b64 %s decodes to %q (%v)", v, out, got, err)
		}
	}
	if got := string(AppendValue(nil, nil)); got != "null" {
		t.Errorf("NULL: %s", got)
	}
	if got := string(AppendString(nil, "a\u2028b")); got != `"a\u2028b"` {
		t.Errorf("U+2028 not escaped: %s", got)
	}
	if got := string(AppendName(nil, "bad\xffname")); got != "\"bad\ufffdname\"" {
		t.Errorf("invalid UTF-8 name: %s", got)
	}
}
