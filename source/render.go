package source

import (
	"strconv"
	"unicode/utf8"
)

// dateTimeLayouts are the time.Format layouts of DATETIME/TIMESTAMP by
// fractional digits, used when go-mysql hands over a time.Time.
var dateTimeLayouts = [7]string{
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05.0",
	"2006-01-02 15:04:05.00",
	"2006-01-02 15:04:05.000",
	"2006-01-02 15:04:05.0000",
	"2006-01-02 15:04:05.00000",
	"2006-01-02 15:04:05.000000",
}

// appendTime appends a TIME string as go-mysql decodes it, adding the
// fractional digits it leaves out when they are all zero ("12:00:00" for a
// TIME(3) 12:00:00.000).
func appendTime(dst []byte, s string, fsp int) []byte {
	dst = append(dst, s...)
	if fsp == 0 {
		return dst
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return dst
		}
	}
	dst = append(dst, '.')
	for range fsp {
		dst = append(dst, '0')
	}
	return dst
}

// appendTimestamp appends a TIMESTAMP string as go-mysql decodes it. go-mysql
// prints any value whose seconds are 0 as the zero timestamp, but only 0
// seconds with 0 microseconds is; 1970-01-01 00:00:00.000001 is a real time.
func appendTimestamp(dst []byte, s string) []byte {
	const zero = "0000-00-00 00:00:00"
	if len(s) > len(zero)+1 && s[:len(zero)] == zero && s[len(zero)] == '.' {
		for i := len(zero) + 1; i < len(s); i++ {
			if s[i] != '0' {
				dst = append(dst, "1970-01-01 00:00:00"...)
				return append(dst, s[len(zero):]...)
			}
		}
	}
	return append(dst, s...)
}

// appendFloat appends the shortest decimal that parses back to f at the given
// bit size (32 or 64), laid out like MariaDB prints a DOUBLE: plain decimal
// notation when the decimal exponent is in -15..14 (0.000001, 150000000000000),
// otherwise d.ddde±x without a plus sign or leading exponent zeros (1e15,
// 1.5e-16). For DOUBLE this is the server's text; for FLOAT the server prints
// only 6 significant digits, so the two differ in digits but this form
// round-trips.
func appendFloat(dst []byte, f float64, bitSize int) []byte {
	var buf [40]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, bitSize)
	if len(e) == 0 || (e[0] != '-' && (e[0] < '0' || e[0] > '9')) { // NaN, +Inf
		return append(dst, e...)
	}
	if e[0] == '-' {
		dst = append(dst, '-')
		e = e[1:]
	}
	if e[0] == 'I' { // -Inf
		return append(dst, e...)
	}
	// e is d[.ddd]e±xx
	var digits [24]byte
	nd := 0
	i := 0
	for ; i < len(e) && e[i] != 'e'; i++ {
		if e[i] != '.' {
			digits[nd] = e[i]
			nd++
		}
	}
	exp := 0
	neg := e[i+1] == '-'
	for _, ch := range e[i+2:] {
		exp = exp*10 + int(ch-'0')
	}
	if neg {
		exp = -exp
	}
	d := digits[:nd]
	switch {
	case exp < -15 || exp > 14:
		dst = append(dst, d[0])
		if nd > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		dst = strconv.AppendInt(dst, int64(exp), 10)
	case exp < 0:
		dst = append(dst, '0', '.')
		for k := -1; k > exp; k-- {
			dst = append(dst, '0')
		}
		dst = append(dst, d...)
	default:
		if nd <= exp+1 {
			dst = append(dst, d...)
			for k := nd; k <= exp; k++ {
				dst = append(dst, '0')
			}
		} else {
			dst = append(dst, d[:exp+1]...)
			dst = append(dst, '.')
			dst = append(dst, d[exp+1:]...)
		}
	}
	return dst
}

// latin1High maps bytes 0x80..0x9F of MySQL's latin1, which is Windows-1252
// with the five unassigned bytes mapped to the C1 controls of the same value.
// Bytes 0xA0..0xFF are the Unicode code points of the same value.
var latin1High = [32]rune{
	0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
	0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
	0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
	0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
}

// appendLatin1 appends s, in MySQL's latin1, converted to UTF-8.
func appendLatin1[T string | []byte](dst []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b < 0x80:
			dst = append(dst, b)
		case b < 0xA0:
			dst = utf8.AppendRune(dst, latin1High[b-0x80])
		default:
			dst = append(dst, 0xC0|b>>6, 0x80|b&0x3F)
		}
	}
	return dst
}
