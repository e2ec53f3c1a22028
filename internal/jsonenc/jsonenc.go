// Package jsonenc appends JSON strings and column values to byte slices without reflection: the encoding the
// sink's JSON row format and the Kafka message format share (docs/formats.md, docs/kafka.md).
//
// A column value is null (SQL NULL), a JSON string when its bytes are valid UTF-8, and otherwise
// {"b64":"<standard base64>"}, so binary values survive exactly.
package jsonenc

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendValue appends one column value: null, a string, or {"b64":...}.
func AppendValue(dst []byte, v []byte) []byte {
	switch {
	case v == nil:
		return append(dst, "null"...)
	case utf8.Valid(v):
		return AppendString(dst, v)
	default:
		dst = append(dst, `{"b64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, v)
		return append(dst, `"}`...)
	}
}

// AppendString appends s, which must be valid UTF-8, as a JSON string, escaping only '"', '\', control characters
// and U+2028/U+2029 (which break JavaScript readers).
func AppendString[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 0x20 && b != '"' && b != '\\' && b != 0xe2:
			continue
		case b == 0xe2:
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9) {
				dst = append(dst, s[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xf])
				i += 2
				start = i + 1
			}
			continue
		}
		dst = append(dst, s[start:i]...)
		switch b {
		case '"', '\\':
			dst = append(dst, '\\', b)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendName appends a database, table or column name as a JSON string, made valid UTF-8 first.
func AppendName(dst []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\ufffd")
	}
	return AppendString(dst, s)
}
