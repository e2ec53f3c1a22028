package reconcile

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/source"
)

var (
	floatColumn  = source.Column{Name: "float", Type: mysql.MYSQL_TYPE_FLOAT}
	doubleColumn = source.Column{Name: "double", Type: mysql.MYSQL_TYPE_DOUBLE}
)

// render turns the text-protocol values of rowSelect into the row the stream would write: FLOAT and DOUBLE are
// re-rendered with the source's own renderer (FLOAT is read as CAST(col AS DOUBLE), which is exact), everything
// else is the server's bytes (SPEC section 2).
func (tb *table) render(vals [][]byte) (change.Row, error) {
	if len(vals) != len(tb.cols) {
		return nil, fmt.Errorf("rendering a row of %s: %d values for %d columns", tb.name(), len(vals), len(tb.cols))
	}
	row := make(change.Row, len(vals))
	for i, v := range vals {
		if v == nil {
			continue
		}
		c := &tb.cols[i]
		switch c.kind {
		case kindFloat, kindDouble:
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return nil, fmt.Errorf("rendering column %s of %s: %w", c.name, tb.name(), err)
			}
			var out []byte
			if c.kind == kindFloat {
				out, _, err = floatColumn.AppendValue(nil, float32(f))
			} else {
				out, _, err = doubleColumn.AppendValue(nil, f)
			}
			if err != nil {
				return nil, fmt.Errorf("rendering column %s of %s: %w", c.name, tb.name(), err)
			}
			row[i] = out
		default:
			row[i] = append([]byte{}, v...)
		}
	}
	return row, nil
}

// canonical returns the digest form of a stored value: the value itself, except FLOAT, whose stored form (the
// shortest decimal of a float32) becomes the shortest decimal of that float32 widened to a float64, laid out like
// the server prints a DOUBLE. It mirrors the digest script's canonf.
func canonical(k kind, v []byte) []byte {
	if k != kindFloat {
		return v
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return v
	}
	out, _, _ := doubleColumn.AppendValue(nil, float64(float32(f)))
	return out
}

// rowHash is the 64-bit row hash of a row as the digest SQL and script compute it (see the package
// documentation); extra marks a Redis row holding fields that are not columns.
func (tb *table) rowHash(row change.Row, extra bool) uint64 {
	h, _ := tb.rowHashBuf(nil, row, extra)
	return h
}

// rowHashBuf is rowHash serializing the row into buf, which it returns for the next row.
func (tb *table) rowHashBuf(b []byte, row change.Row, extra bool) (uint64, []byte) {
	b = b[:0]
	for i, v := range row {
		if i > 0 {
			b = append(b, ',')
		}
		switch {
		case v == nil:
			b = append(b, '-')
		case tb.cols[i].numeric:
			b = append(b, canonical(tb.cols[i].kind, v)...)
		default:
			b = strconv.AppendInt(b, int64(len(v)), 10)
			b = append(b, ':')
			b = append(b, v...)
		}
	}
	if extra {
		b = append(b, '!')
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8]), b
}

// parseHash16 parses a 16-hex-digit row hash.
func parseHash16(s []byte) (uint64, error) {
	var b [8]byte
	if len(s) != 16 {
		return 0, fmt.Errorf("row hash %q: want 16 hex digits", s)
	}
	if _, err := hex.Decode(b[:], s); err != nil {
		return 0, fmt.Errorf("row hash %q: %w", s, err)
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

// parseHashList parses n row hashes of 16 hex digits each, written one after another.
func parseHashList(s []byte, n int) ([]uint64, error) {
	if len(s) != 16*n {
		return nil, fmt.Errorf("%d bytes of row hashes for %d rows (is group_concat_max_len capped?)", len(s), n)
	}
	out := make([]uint64, n)
	for i := range out {
		h, err := parseHash16(s[16*i : 16*i+16])
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

// sameRow reports whether the stored fields got (metadata removed) hold want: the same fields, the same bytes,
// FLOAT and DOUBLE compared as numbers (SPEC section 2).
func (tb *table) sameRow(want change.Row, got map[string]string) bool {
	n := 0
	for i, w := range want {
		g, ok := got[tb.t.Columns[i]]
		if w == nil {
			if ok {
				return false
			}
			continue
		}
		if !ok {
			return false
		}
		n++
		if g == string(w) {
			continue
		}
		switch tb.cols[i].kind {
		case kindFloat, kindDouble:
			x, err1 := strconv.ParseFloat(g, 64)
			y, err2 := strconv.ParseFloat(string(w), 64)
			if err1 != nil || err2 != nil {
				return false
			}
			if tb.cols[i].kind == kindFloat {
				if float32(x) != float32(y) {
					return false
				}
			} else if x != y && !(math.IsNaN(x) && math.IsNaN(y)) {
				return false
			}
		default:
			return false
		}
	}
	for f := range got {
		if !strings.HasPrefix(f, "_") {
			n--
		}
	}
	return n == 0
}

// decodeJSONRow decodes a JSON-format row (see the sink package documentation): members are strings, or
// {"b64": "..."} objects for values that are not UTF-8.
func decodeJSONRow(doc string) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &raw); err != nil {
		return nil, fmt.Errorf("decoding a JSON row: %w", err)
	}
	m := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			m[k] = s
			continue
		}
		var o struct {
			B64 *string `json:"b64"`
		}
		if err := json.Unmarshal(v, &o); err != nil || o.B64 == nil {
			return nil, fmt.Errorf("decoding a JSON row: member %q is neither a string nor {\"b64\": ...}", k)
		}
		b, err := base64.StdEncoding.DecodeString(*o.B64)
		if err != nil {
			return nil, fmt.Errorf("decoding a JSON row: member %q: %w", k, err)
		}
		m[k] = string(b)
	}
	return m, nil
}
