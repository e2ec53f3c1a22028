package sink

import (
	"encoding/base64"
	"fmt"
	"unicode/utf8"

	"github.com/binlogsync/binlogsync/change"
)

// Format is how a row is stored under its key (see the package documentation).
type Format uint8

// Row formats.
const (
	FormatHash Format = iota // a hash, one field per column (the default)
	FormatJSON               // a string holding a JSON object
)

func (f Format) String() string {
	switch f {
	case FormatHash:
		return "hash"
	case FormatJSON:
		return "json"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// ParseFormat is the inverse of Format.String.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "hash", "":
		return FormatHash, nil
	case "json":
		return FormatJSON, nil
	}
	return 0, fmt.Errorf("unknown row format %q (want hash or json)", s)
}

// VersionField is the metadata field (hash) or member (JSON) holding a row's version.
const VersionField = "_v"

// metadataFields are the names a column may not have.
var metadataFields = []string{VersionField}

// jsonHead is how every JSON row starts; the version text follows it.
const jsonHead = `{"` + VersionField + `":"`

// appendJSON appends the JSON document of row (see the package documentation).
func appendJSON(dst []byte, cols []string, row change.Row, v change.Version) []byte {
	dst = append(dst, jsonHead...)
	dst = v.AppendText(dst)
	dst = append(dst, '"')
	for i, val := range row {
		if val == nil {
			continue
		}
		dst = append(dst, ',')
		dst = appendJSONString(dst, cols[i])
		dst = append(dst, ':')
		if utf8.Valid(val) {
			dst = appendJSONString(dst, val)
		} else {
			dst = append(dst, `{"b64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, val)
			dst = append(dst, `"}`...)
		}
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
