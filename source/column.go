package source

import (
	"fmt"
	"strconv"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// ConfigureDecoding sets the decoding options of cfg that Column.AppendValue
// relies on. Call it on every BinlogSyncerConfig whose rows are rendered.
//
// With these options go-mysql decodes each value into a form that still holds
// everything the server would print:
//   - ParseTime off: DATE, DATETIME, TIMESTAMP arrive as strings with exactly the
//     column's fractional digits, and zero or invalid dates (2020-02-31 under
//     ALLOW_INVALID_DATES) stay as written instead of being normalised by
//     time.Date.
//   - TimestampStringLocation UTC: TIMESTAMP strings are printed in UTC, whatever
//     the zone of the server, of the writing session or of this process.
//   - UseDecimal off: DECIMAL arrives as a string that keeps its scale (12.50);
//     decimal.Decimal would drop trailing zeros.
//   - RenderJSONAsMySQLText on: MySQL's binary JSON is printed as mysqld prints
//     it (key order, "1.0" doubles), not through encoding/json.
//   - UseFloatWithTrailingZero off: it only affects JSON, which the option above
//     renders anyway.
func ConfigureDecoding(cfg *replication.BinlogSyncerConfig) {
	cfg.ParseTime = false
	cfg.TimestampStringLocation = time.UTC
	cfg.UseDecimal = false
	cfg.UseFloatWithTrailingZero = false
	cfg.RenderJSONAsMySQLText = true
}

// Column describes one column of a table as the binlog carries it, with what
// rendering needs on top (names, signedness, character set, ENUM/SET labels).
// ResolveColumns builds them.
type Column struct {
	// Name is the column name.
	Name string
	// Type is the binlog type from the table map (mysql.MYSQL_TYPE_*). ENUM, SET,
	// CHAR and BINARY are all MYSQL_TYPE_STRING here; Meta tells them apart.
	Type byte
	// Meta is the table map's metadata for the column (length, precision,
	// fractional digits, real type of MYSQL_TYPE_STRING).
	Meta uint16
	// Unsigned is set for UNSIGNED integer columns.
	Unsigned bool
	// Charset is the character set of a text column ("utf8mb4", "utf8mb3",
	// "latin1", "ascii"), "binary" for BINARY/VARBINARY/BLOB, and empty for
	// columns that hold no characters.
	Charset string
	// EnumValues and SetValues are the labels of an ENUM or SET column, in UTF-8.
	EnumValues, SetValues []string
	// ZeroFill is the width a ZEROFILL integer or DECIMAL column is padded to with leading zeros (from the schema;
	// the binlog does not say), and 0 for other columns.
	ZeroFill int
	// TextType is "uuid", "inet4" or "inet6" for MariaDB's columns of those types (from the schema: the binlog
	// carries them as BINARY), whose SELECT prints their text form; empty for other columns.
	TextType string
	// Generated is "VIRTUAL" or "STORED" for a generated column when the schema
	// was consulted, and empty otherwise. Both kinds are logged with their
	// values in FULL row images (MariaDB and MySQL), so they render like any
	// other column.
	Generated string
}

// RealType is the column's type with MYSQL_TYPE_STRING resolved into
// MYSQL_TYPE_ENUM or MYSQL_TYPE_SET where the metadata says so.
func (c *Column) RealType() byte {
	if c.Type != mysql.MYSQL_TYPE_STRING {
		return c.Type
	}
	t, _ := stringTypeLength(c.Meta)
	return t
}

// stringTypeLength decodes the metadata of a MYSQL_TYPE_STRING column into
// its real type and its maximum length in bytes (as go-mysql's decodeValue).
func stringTypeLength(meta uint16) (byte, int) {
	if meta < 256 {
		return mysql.MYSQL_TYPE_STRING, int(meta)
	}
	b0, b1 := byte(meta>>8), byte(meta)
	if b0&0x30 != 0x30 {
		return b0 | 0x30, int(uint16(b1) | uint16((b0&0x30)^0x30)<<4)
	}
	return b0, int(b1)
}

// fsp is the number of fractional second digits of a temporal column.
func (c *Column) fsp() int {
	switch c.Type {
	case mysql.MYSQL_TYPE_TIME2, mysql.MYSQL_TYPE_DATETIME2, mysql.MYSQL_TYPE_TIMESTAMP2:
		if c.Meta <= 6 {
			return int(c.Meta)
		}
	}
	return 0
}

// AppendValue appends to dst the text the server returns for SELECT of this
// column over the text protocol, with time_zone '+00:00' and a utf8mb4
// connection (SPEC section 2), given v, the value go-mysql decoded from a row
// image with the options of ConfigureDecoding. A NULL value appends nothing and
// reports null. The documented exceptions: BIT prints as an unsigned decimal
// integer; FLOAT and DOUBLE print the shortest decimal that parses back to the
// same float32/float64, in the server's layout (plain decimal for exponents
// -15..14, else 1.5e-16 / 1e15); MySQL JSON prints as mysqld prints it.
//
// It does not allocate when dst has room, except for error values.
func (c *Column) AppendValue(dst []byte, v any) (out []byte, null bool, err error) {
	if v == nil {
		return dst, true, nil
	}
	if c.ZeroFill != 0 || c.TextType != "" {
		return c.appendSpecial(dst, v)
	}
	return c.appendValue(dst, v)
}

// appendValue is AppendValue of a column without ZEROFILL or a text type.
func (c *Column) appendValue(dst []byte, v any) (out []byte, null bool, err error) {
	switch c.Type {
	case mysql.MYSQL_TYPE_TINY, mysql.MYSQL_TYPE_SHORT, mysql.MYSQL_TYPE_INT24,
		mysql.MYSQL_TYPE_LONG, mysql.MYSQL_TYPE_LONGLONG:
		return c.appendInt(dst, v)
	case mysql.MYSQL_TYPE_YEAR:
		if y, ok := v.(int); ok {
			if y == 0 {
				return append(dst, "0000"...), false, nil
			}
			return strconv.AppendInt(dst, int64(y), 10), false, nil
		}
	case mysql.MYSQL_TYPE_NEWDECIMAL, mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE:
		if s, ok := v.(string); ok {
			return append(dst, s...), false, nil
		}
	case mysql.MYSQL_TYPE_FLOAT:
		if f, ok := v.(float32); ok {
			return appendFloat(dst, float64(f), 32), false, nil
		}
	case mysql.MYSQL_TYPE_DOUBLE:
		if f, ok := v.(float64); ok {
			return appendFloat(dst, f, 64), false, nil
		}
	case mysql.MYSQL_TYPE_BIT:
		if b, ok := v.(int64); ok {
			return strconv.AppendUint(dst, uint64(b), 10), false, nil
		}
	case mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATETIME2,
		mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_TIMESTAMP2:
		switch t := v.(type) {
		case string:
			if c.Type == mysql.MYSQL_TYPE_TIMESTAMP2 {
				return appendTimestamp(dst, t), false, nil
			}
			return append(dst, t...), false, nil
		case time.Time: // ParseTime on: DATETIME is UTC already, TIMESTAMP local
			return t.UTC().AppendFormat(dst, dateTimeLayouts[c.fsp()]), false, nil
		}
	case mysql.MYSQL_TYPE_TIME, mysql.MYSQL_TYPE_TIME2:
		if s, ok := v.(string); ok {
			return appendTime(dst, s, c.fsp()), false, nil
		}
	case mysql.MYSQL_TYPE_STRING:
		return c.appendString(dst, v)
	case mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING:
		if s, ok := v.(string); ok {
			return appendChars(c, dst, s)
		}
	case mysql.MYSQL_TYPE_BLOB:
		if b, ok := v.([]byte); ok {
			return appendChars(c, dst, b)
		}
	case mysql.MYSQL_TYPE_JSON:
		switch j := v.(type) {
		case string:
			return append(dst, j...), false, nil
		case []byte:
			if len(j) == 0 { // an empty document is JSON null (see go-mysql decodeValue)
				return append(dst, "null"...), false, nil
			}
			return append(dst, j...), false, nil
		case *replication.JsonDiff:
			return dst, false, fmt.Errorf("rendering column %s: partial JSON updates cannot be rendered; set binlog_row_value_options='' on the server", c.Name)
		}
	case mysql.MYSQL_TYPE_GEOMETRY, mysql.MYSQL_TYPE_VECTOR:
		if b, ok := v.([]byte); ok {
			return append(dst, b...), false, nil
		}
	case mysql.MYSQL_TYPE_ENUM:
		return c.appendEnum(dst, v)
	case mysql.MYSQL_TYPE_SET:
		return c.appendSet(dst, v)
	default:
		return dst, false, fmt.Errorf("rendering column %s: unsupported binlog type %d", c.Name, c.Type)
	}
	return dst, false, c.unexpected(v)
}

func (c *Column) unexpected(v any) error {
	return fmt.Errorf("rendering column %s (binlog type %d): unexpected decoded value of type %T (was ConfigureDecoding applied?)", c.Name, c.Type, v)
}

// appendInt renders an integer. go-mysql decodes UNSIGNED columns into signed
// Go integers when the table map carries no signedness, so the bits are
// reinterpreted here according to c.Unsigned and the column width.
func (c *Column) appendInt(dst []byte, v any) ([]byte, bool, error) {
	var i int64
	switch n := v.(type) {
	case int8:
		if c.Unsigned {
			return strconv.AppendUint(dst, uint64(uint8(n)), 10), false, nil
		}
		i = int64(n)
	case int16:
		if c.Unsigned {
			return strconv.AppendUint(dst, uint64(uint16(n)), 10), false, nil
		}
		i = int64(n)
	case int32:
		if c.Unsigned {
			u := uint32(n)
			if c.Type == mysql.MYSQL_TYPE_INT24 {
				u &= 0xFFFFFF
			}
			return strconv.AppendUint(dst, uint64(u), 10), false, nil
		}
		i = int64(n)
	case int64:
		if c.Unsigned {
			return strconv.AppendUint(dst, uint64(n), 10), false, nil
		}
		i = n
	case uint8:
		return strconv.AppendUint(dst, uint64(n), 10), false, nil
	case uint16:
		return strconv.AppendUint(dst, uint64(n), 10), false, nil
	case uint32:
		return strconv.AppendUint(dst, uint64(n), 10), false, nil
	case uint64:
		return strconv.AppendUint(dst, n, 10), false, nil
	default:
		return dst, false, c.unexpected(v)
	}
	return strconv.AppendInt(dst, i, 10), false, nil
}

// appendString renders MYSQL_TYPE_STRING: CHAR, BINARY, ENUM or SET.
func (c *Column) appendString(dst []byte, v any) ([]byte, bool, error) {
	rt, length := stringTypeLength(c.Meta)
	switch rt {
	case mysql.MYSQL_TYPE_ENUM:
		return c.appendEnum(dst, v)
	case mysql.MYSQL_TYPE_SET:
		return c.appendSet(dst, v)
	}
	s, ok := v.(string)
	if !ok {
		return dst, false, c.unexpected(v)
	}
	if c.Charset == "binary" {
		// The binlog drops BINARY's trailing zero bytes; SELECT returns them.
		dst = append(dst, s...)
		for n := len(s); n < length; n++ {
			dst = append(dst, 0)
		}
		return dst, false, nil
	}
	// SELECT strips the trailing spaces of CHAR (unless PAD_CHAR_TO_FULL_LENGTH).
	if wideCharset(c.Charset) {
		from := len(dst)
		dst, _, err := appendChars(c, dst, s)
		return trimSpaces(dst, from), false, err
	}
	end := len(s)
	for end > 0 && s[end-1] == ' ' {
		end--
	}
	return appendChars(c, dst, s[:end])
}

// appendChars appends a character or byte string converted to UTF-8.
func appendChars[T string | []byte](c *Column, dst []byte, s T) ([]byte, bool, error) {
	switch c.Charset {
	case "utf8mb4", "utf8mb3", "ascii", "binary":
		return append(dst, s...), false, nil
	case "latin1":
		return appendLatin1(dst, s), false, nil
	}
	if out, ok := appendConverted(dst, s, c.Charset); ok {
		return out, false, nil
	}
	return dst, false, fmt.Errorf("rendering column %s: unsupported character set %q", c.Name, c.Charset)
}

// appendEnum renders an ENUM index as its label; index 0 is the empty string
// the server stores for an invalid value.
func (c *Column) appendEnum(dst []byte, v any) ([]byte, bool, error) {
	i, ok := v.(int64)
	if !ok {
		return dst, false, c.unexpected(v)
	}
	if i == 0 {
		return dst, false, nil
	}
	if i < 0 || i > int64(len(c.EnumValues)) {
		return dst, false, fmt.Errorf("rendering column %s: ENUM index %d out of range (%d labels known)", c.Name, i, len(c.EnumValues))
	}
	return append(dst, c.EnumValues[i-1]...), false, nil
}

// appendSet renders a SET bitmap as its labels joined with commas, in
// definition order.
func (c *Column) appendSet(dst []byte, v any) ([]byte, bool, error) {
	i, ok := v.(int64)
	if !ok {
		return dst, false, c.unexpected(v)
	}
	bits := uint64(i)
	if len(c.SetValues) < 64 && bits>>uint(len(c.SetValues)) != 0 {
		return dst, false, fmt.Errorf("rendering column %s: SET value %#x has bits beyond its %d labels", c.Name, bits, len(c.SetValues))
	}
	first := true
	for k := 0; bits != 0; k++ {
		if bits&1 != 0 {
			if !first {
				dst = append(dst, ',')
			}
			dst = append(dst, c.SetValues[k]...)
			first = false
		}
		bits >>= 1
	}
	return dst, false, nil
}
