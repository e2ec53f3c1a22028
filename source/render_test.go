package source

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// TestAppendFloatRoundTrips checks that the text parses back to the same
// float and follows the documented layout.
func TestAppendFloatRoundTrips(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(f float64, bitSize int) {
		t.Helper()
		s := string(appendFloat(nil, f, bitSize))
		back, err := strconv.ParseFloat(s, bitSize)
		if err != nil || back != f {
			t.Fatalf("appendFloat(%v, %d) = %q, parses back to %v (%v)", f, bitSize, s, back, err)
		}
		shortest := strconv.FormatFloat(f, 'e', -1, bitSize)
		exp, _ := strconv.Atoi(shortest[strings.IndexByte(shortest, 'e')+1:])
		hasE := strings.Contains(s, "e")
		if f != 0 && hasE != (exp < -15 || exp > 14) {
			t.Fatalf("appendFloat(%v) = %q: exponent %d, exponential form %v", f, s, exp, hasE)
		}
		if strings.Contains(s, "+") {
			t.Fatalf("appendFloat(%v) = %q has a plus sign", f, s)
		}
		if f != 0 && sigDigits(s) != sigDigits(shortest) {
			t.Fatalf("appendFloat(%v) = %q: digits differ from the shortest form %s", f, s, shortest)
		}
	}
	for _, f := range []float64{0, 1, -1, 0.1, 1e14, 1e15, 1e-15, 1e-16, 123456789012345.6, math.MaxFloat64,
		-math.MaxFloat64, math.SmallestNonzeroFloat64, 5e-324, 1.5e300, 999999999999999} {
		check(f, 64)
	}
	for range 20000 {
		if f := math.Float64frombits(r.Uint64()); !math.IsNaN(f) && !math.IsInf(f, 0) {
			check(f, 64)
		}
		f32 := math.Float32frombits(r.Uint32())
		if !math.IsNaN(float64(f32)) && !math.IsInf(float64(f32), 0) {
			check(float64(f32), 32)
		}
		check(r.NormFloat64()*math.Pow(10, float64(r.IntN(40)-20)), 64)
	}
}

// sigDigits is the significant digits of a decimal number's text.
func sigDigits(s string) string {
	m, _, _ := strings.Cut(strings.TrimPrefix(s, "-"), "e")
	m = strings.ReplaceAll(m, ".", "")
	return strings.TrimRight(strings.TrimLeft(m, "0"), "0")
}

func TestAppendTimeAddsMissingFraction(t *testing.T) {
	for _, c := range []struct {
		in   string
		fsp  int
		want string
	}{
		{"12:00:00", 0, "12:00:00"},
		{"12:00:00", 3, "12:00:00.000"},
		{"-838:59:59", 6, "-838:59:59.000000"},
		{"-00:00:00.5", 1, "-00:00:00.5"},
	} {
		if got := string(appendTime(nil, c.in, c.fsp)); got != c.want {
			t.Errorf("appendTime(%q, %d) = %q, want %q", c.in, c.fsp, got, c.want)
		}
	}
}

func TestAppendTimestampKeepsEpochWithMicroseconds(t *testing.T) {
	for in, want := range map[string]string{
		"0000-00-00 00:00:00":        "0000-00-00 00:00:00",
		"0000-00-00 00:00:00.000":    "0000-00-00 00:00:00.000",
		"0000-00-00 00:00:00.000001": "1970-01-01 00:00:00.000001",
		"2020-01-01 00:00:00.5":      "2020-01-01 00:00:00.5",
	} {
		if got := string(appendTimestamp(nil, in)); got != want {
			t.Errorf("appendTimestamp(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAppendLatin1ProducesValidUTF8(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	out := appendLatin1(nil, all)
	if !utf8.Valid(out) {
		t.Fatalf("invalid UTF-8: %q", out)
	}
	runes := []rune(string(out))
	if len(runes) != 256 {
		t.Fatalf("%d runes, want 256", len(runes))
	}
	for i, r := range runes {
		if i < 0x80 || i >= 0xA0 {
			if r != rune(i) {
				t.Errorf("byte %#x -> %U, want %U", i, r, rune(i))
			}
		}
	}
}

// TestAppendValueFixesUnsignedIntegers covers table maps without signedness
// (go-mysql then decodes UNSIGNED columns into signed Go integers).
func TestAppendValueFixesUnsignedIntegers(t *testing.T) {
	for _, c := range []struct {
		typ  byte
		v    any
		want uint64
	}{
		{mysql.MYSQL_TYPE_TINY, int8(-1), math.MaxUint8},
		{mysql.MYSQL_TYPE_SHORT, int16(-1), math.MaxUint16},
		{mysql.MYSQL_TYPE_INT24, int32(-1), 1<<24 - 1},
		{mysql.MYSQL_TYPE_INT24, int32(-8388608), 1 << 23},
		{mysql.MYSQL_TYPE_LONG, int32(-1), math.MaxUint32},
		{mysql.MYSQL_TYPE_LONGLONG, int64(-1), math.MaxUint64},
		{mysql.MYSQL_TYPE_LONGLONG, uint64(math.MaxUint64), math.MaxUint64},
	} {
		col := Column{Name: "u", Type: c.typ, Unsigned: true}
		got, null, err := col.AppendValue(nil, c.v)
		if err != nil || null || string(got) != strconv.FormatUint(c.want, 10) {
			t.Errorf("type %d %T(%v): got %q %v %v, want %d", c.typ, c.v, c.v, got, null, err, c.want)
		}
		col.Unsigned = false
		if s, ok := c.v.(int64); ok {
			got, _, _ = col.AppendValue(nil, c.v)
			if string(got) != strconv.FormatInt(s, 10) {
				t.Errorf("signed %v: got %q", s, got)
			}
		}
	}
}

func TestAppendValueErrors(t *testing.T) {
	enum := Column{Name: "e", Type: mysql.MYSQL_TYPE_STRING, Meta: uint16(mysql.MYSQL_TYPE_ENUM)<<8 | 1, EnumValues: []string{"a"}}
	set := Column{Name: "s", Type: mysql.MYSQL_TYPE_STRING, Meta: uint16(mysql.MYSQL_TYPE_SET)<<8 | 1, SetValues: []string{"a", "b"}}
	for _, c := range []struct {
		col Column
		v   any
	}{
		{enum, int64(2)},
		{enum, "a"},
		{set, int64(4)},
		{Column{Name: "d", Type: mysql.MYSQL_TYPE_NEWDECIMAL}, 1.5},
		{Column{Name: "v", Type: mysql.MYSQL_TYPE_VARCHAR, Charset: "gbk"}, "x"},
		{Column{Name: "x", Type: 0xF1}, "x"},
	} {
		if _, _, err := c.col.AppendValue(nil, c.v); err == nil {
			t.Errorf("AppendValue(%s, %T %v): no error", c.col.Name, c.v, c.v)
		}
	}
	if out, null, err := enum.AppendValue([]byte("keep"), nil); !null || err != nil || string(out) != "keep" {
		t.Errorf("NULL: got %q %v %v", out, null, err)
	}
}

// fuzzColumns are the column shapes FuzzAppendValue picks from.
var fuzzColumns = []Column{
	{Name: "tiny", Type: mysql.MYSQL_TYPE_TINY},
	{Name: "int24", Type: mysql.MYSQL_TYPE_INT24},
	{Name: "bigint", Type: mysql.MYSQL_TYPE_LONGLONG},
	{Name: "float", Type: mysql.MYSQL_TYPE_FLOAT},
	{Name: "double", Type: mysql.MYSQL_TYPE_DOUBLE},
	{Name: "varchar_l", Type: mysql.MYSQL_TYPE_VARCHAR, Charset: "latin1"},
	{Name: "char", Type: mysql.MYSQL_TYPE_STRING, Meta: 0xFE28, Charset: "utf8mb4"},
	{Name: "binary", Type: mysql.MYSQL_TYPE_STRING, Meta: 0xFE08, Charset: "binary"},
	{Name: "blob", Type: mysql.MYSQL_TYPE_BLOB, Meta: 2, Charset: "latin1"},
	{Name: "time", Type: mysql.MYSQL_TYPE_TIME2, Meta: 4},
	{Name: "timestamp", Type: mysql.MYSQL_TYPE_TIMESTAMP2, Meta: 6},
	{Name: "enum", Type: mysql.MYSQL_TYPE_STRING, Meta: uint16(mysql.MYSQL_TYPE_ENUM)<<8 | 1, EnumValues: []string{"a", "b"}},
	{Name: "set", Type: mysql.MYSQL_TYPE_STRING, Meta: uint16(mysql.MYSQL_TYPE_SET)<<8 | 1, SetValues: []string{"x", "y", "z"}},
	{Name: "bit", Type: mysql.MYSQL_TYPE_BIT, Meta: 0x0800},
}

// FuzzAppendValue feeds arbitrary values of the decoded Go types to a few
// column shapes: AppendValue must not panic, must keep dst's prefix, and
// floats must parse back to themselves.
func FuzzAppendValue(f *testing.F) {
	f.Add(uint8(0), false, []byte{0x80})
	f.Add(uint8(4), false, []byte{0, 0, 0, 0, 0, 0, 0xF0, 0x3F})
	f.Add(uint8(5), false, []byte("caf\xe9 \x80\x81"))
	f.Add(uint8(6), false, []byte("ab  "))
	f.Add(uint8(9), false, []byte("-838:59:59"))
	f.Add(uint8(10), false, []byte("0000-00-00 00:00:00.000001"))
	f.Add(uint8(12), true, []byte{7})
	f.Fuzz(func(t *testing.T, kind uint8, unsigned bool, data []byte) {
		col := fuzzColumns[int(kind)%len(fuzzColumns)]
		col.Unsigned = unsigned
		var word [8]byte
		copy(word[:], data)
		u := binary.LittleEndian.Uint64(word[:])
		var v any
		switch col.Type {
		case mysql.MYSQL_TYPE_TINY:
			v = int8(u)
		case mysql.MYSQL_TYPE_INT24:
			v = int32(u<<40) >> 8 // a sign-extended 24-bit value
		case mysql.MYSQL_TYPE_LONGLONG:
			v = int64(u)
		case mysql.MYSQL_TYPE_FLOAT:
			v = math.Float32frombits(uint32(u))
		case mysql.MYSQL_TYPE_DOUBLE:
			v = math.Float64frombits(u)
		case mysql.MYSQL_TYPE_BLOB:
			v = data
		case mysql.MYSQL_TYPE_BIT:
			v = int64(u)
		default:
			if col.RealType() == mysql.MYSQL_TYPE_ENUM || col.RealType() == mysql.MYSQL_TYPE_SET {
				v = int64(u)
			} else {
				v = string(data)
			}
		}
		prefix := []byte("prefix")
		out, null, err := col.AppendValue(append([]byte(nil), prefix...), v)
		if null {
			t.Fatalf("non-nil value reported NULL")
		}
		if string(out[:len(prefix)]) != string(prefix) {
			t.Fatalf("dst prefix clobbered: %q", out)
		}
		if err != nil {
			return
		}
		val := string(out[len(prefix):])
		switch x := v.(type) {
		case float32:
			if back, err := strconv.ParseFloat(val, 32); !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) && (err != nil || float32(back) != x) {
				t.Fatalf("float32 %v rendered %q, parses back to %v (%v)", x, val, back, err)
			}
		case float64:
			if back, err := strconv.ParseFloat(val, 64); !math.IsNaN(x) && !math.IsInf(x, 0) && (err != nil || back != x) {
				t.Fatalf("float64 %v rendered %q, parses back to %v (%v)", x, val, back, err)
			}
		}
		if col.Charset == "latin1" && !utf8.ValidString(val) {
			t.Fatalf("latin1 text rendered to invalid UTF-8 %q", val)
		}
	})
}
