package sink

import (
	"fmt"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/jsonenc"
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
		dst = jsonenc.AppendName(dst, cols[i])
		dst = append(dst, ':')
		dst = jsonenc.AppendValue(dst, val)
	}
	return append(dst, '}')
}
