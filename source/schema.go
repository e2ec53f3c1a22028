package source

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// ErrNoPrimaryKey is returned (wrapped) by ResolveColumns for a table without
// a primary key: its rows have no Redis key.
var ErrNoPrimaryKey = errors.New("table has no primary key")

// TableSchema is a table's shape as information_schema describes it. It is the
// fallback for table maps that carry no column names
// (binlog_row_metadata=MINIMAL, or servers older than MySQL 8.0.1 / MariaDB 10.5).
type TableSchema struct {
	Schema, Table string
	Columns       []SchemaColumn
	// PK holds the indexes into Columns of the primary key, in key order.
	PK []int
	// DefaultCharset is the table's default character set (of TABLE_COLLATION), which a column added without
	// one takes.
	DefaultCharset string
}

// SchemaColumn is one row of information_schema.COLUMNS.
type SchemaColumn struct {
	Name string
	// DataType is DATA_TYPE in lower case ("int", "varchar", "longtext", ...).
	DataType string
	// ColumnType is COLUMN_TYPE ("int(10) unsigned", "enum('a','b')", ...).
	ColumnType string
	// Charset is CHARACTER_SET_NAME, "binary" for binary strings and empty for
	// columns without characters.
	Charset string
	// Unsigned is set when COLUMN_TYPE says unsigned.
	Unsigned bool
	// Scale is NUMERIC_SCALE of DECIMAL columns, Precision NUMERIC_PRECISION.
	Precision, Scale int
	// FSP is DATETIME_PRECISION of TIME, DATETIME and TIMESTAMP columns.
	FSP int
	// EnumValues and SetValues are parsed from COLUMN_TYPE.
	EnumValues, SetValues []string
	// Generated is "VIRTUAL", "STORED" or empty, from EXTRA.
	Generated string
}

// LoadTableSchema reads the columns and primary key of schema.table from
// information_schema.
func LoadTableSchema(ctx context.Context, db *sql.DB, schema, table string) (*TableSchema, error) {
	rows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME,
		NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, EXTRA
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("loading columns of %s.%s: %w", schema, table, err)
	}
	defer rows.Close()
	ts := &TableSchema{Schema: schema, Table: table}
	for rows.Next() {
		var (
			c                   SchemaColumn
			charset             sql.NullString
			prec, scale, dtPrec sql.NullInt64
			extra               string
		)
		if err := rows.Scan(&c.Name, &c.DataType, &c.ColumnType, &charset, &prec, &scale, &dtPrec, &extra); err != nil {
			return nil, fmt.Errorf("loading columns of %s.%s: %w", schema, table, err)
		}
		c.DataType = strings.ToLower(c.DataType)
		ct := strings.ToLower(c.ColumnType)
		c.Unsigned = strings.Contains(ct, "unsigned")
		c.Precision, c.Scale, c.FSP = int(prec.Int64), int(scale.Int64), int(dtPrec.Int64)
		c.Charset = normalizeCharset(charset.String)
		switch c.DataType {
		case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
			"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
			"geometrycollection", "geomcollection":
			c.Charset = "binary"
		case "enum":
			c.EnumValues, err = parseLabels(c.ColumnType)
		case "set":
			c.SetValues, err = parseLabels(c.ColumnType)
		}
		if err != nil {
			return nil, fmt.Errorf("loading columns of %s.%s: column %s: %w", schema, table, c.Name, err)
		}
		switch x := strings.ToUpper(extra); {
		case strings.Contains(x, "VIRTUAL"):
			c.Generated = "VIRTUAL"
		case strings.Contains(x, "STORED"), strings.Contains(x, "PERSISTENT"):
			c.Generated = "STORED"
		}
		ts.Columns = append(ts.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("loading columns of %s.%s: %w", schema, table, err)
	}
	if len(ts.Columns) == 0 {
		return nil, fmt.Errorf("loading columns of %s.%s: table not found in information_schema", schema, table)
	}
	var coll sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT TABLE_COLLATION FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, schema, table).Scan(&coll); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("loading the collation of %s.%s: %w", schema, table, err)
	}
	ts.DefaultCharset = normalizeCharset(collationCharsetName(coll.String))

	pkRows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("loading primary key of %s.%s: %w", schema, table, err)
	}
	defer pkRows.Close()
	for pkRows.Next() {
		var name string
		if err := pkRows.Scan(&name); err != nil {
			return nil, fmt.Errorf("loading primary key of %s.%s: %w", schema, table, err)
		}
		idx := -1
		for i, c := range ts.Columns {
			if strings.EqualFold(c.Name, name) {
				idx = i
				break
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("loading primary key of %s.%s: key column %s is not among the columns (concurrent DDL?)", schema, table, name)
		}
		ts.PK = append(ts.PK, idx)
	}
	if err := pkRows.Err(); err != nil {
		return nil, fmt.Errorf("loading primary key of %s.%s: %w", schema, table, err)
	}
	return ts, nil
}

// parseLabels parses the labels of COLUMN_TYPE "enum('a','b”c')": quotes are
// doubled and backslashes escaped.
func parseLabels(columnType string) ([]string, error) {
	open := strings.IndexByte(columnType, '(')
	if open < 0 || !strings.HasSuffix(columnType, ")") {
		return nil, fmt.Errorf("parsing labels of %q: no parenthesised list", columnType)
	}
	s := columnType[open+1 : len(columnType)-1]
	labels := []string{}
	for i := 0; i < len(s); {
		if s[i] != '\'' {
			return nil, fmt.Errorf("parsing labels of %q: expected a quote at offset %d", columnType, open+1+i)
		}
		i++
		var b strings.Builder
		closed := false
		for i < len(s) && !closed {
			ch := s[i]
			switch {
			case ch == '\'' && i+1 < len(s) && s[i+1] == '\'':
				b.WriteByte('\'')
				i += 2
			case ch == '\'':
				closed = true
				i++
			case ch == '\\' && i+1 < len(s):
				b.WriteByte(unescape(s[i+1]))
				i += 2
			default:
				b.WriteByte(ch)
				i++
			}
		}
		if !closed {
			return nil, fmt.Errorf("parsing labels of %q: unterminated label", columnType)
		}
		labels = append(labels, b.String())
		if i < len(s) {
			if s[i] != ',' {
				return nil, fmt.Errorf("parsing labels of %q: expected a comma at offset %d", columnType, open+1+i)
			}
			i++
		}
	}
	return labels, nil
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case '0':
		return 0
	case 'Z':
		return 0x1A
	case 'b':
		return '\b'
	}
	return c
}

// ResolveColumns returns the columns of the table that tm maps, and the
// indexes of its primary key in key order.
//
// Names, signedness, character sets, ENUM/SET labels and the primary key come
// from the table map when it carries them (binlog_row_metadata=FULL), and
// otherwise from fallback, which may be nil when the table map is complete.
// Fallback columns are only used after checking that their number and types
// agree with the table map, so names are never misaligned. A table without a
// primary key yields its columns and an error wrapping ErrNoPrimaryKey.
func ResolveColumns(tm *replication.TableMapEvent, fallback *TableSchema) (cols []Column, pk []int, err error) {
	name := string(tm.Schema) + "." + string(tm.Table)
	n := int(tm.ColumnCount)
	hasNames := len(tm.ColumnName) == n
	if fallback != nil && len(fallback.Columns) != n {
		if !hasNames {
			return nil, nil, fmt.Errorf("cannot determine column names of %s: the table map has %d columns but the schema has %d; set binlog_row_metadata=FULL on the server", name, n, len(fallback.Columns))
		}
		fallback = nil // stale; the table map has all it takes
	}
	if hasNames && fallback != nil {
		// The schema only fills gaps of a complete table map if it describes
		// the same columns.
		for i := range fallback.Columns {
			sc := &fallback.Columns[i]
			c := Column{Type: tm.ColumnType[i], Meta: tm.ColumnMeta[i]}
			if !strings.EqualFold(sc.Name, string(tm.ColumnName[i])) || checkCompatible(&c, sc) != nil {
				fallback = nil
				break
			}
		}
	}
	if !hasNames && fallback == nil {
		return nil, nil, fmt.Errorf("cannot determine column names of %s: the table map carries no column names and no schema was given; set binlog_row_metadata=FULL on the server", name)
	}

	cols = make([]Column, n)
	unsigned := tm.UnsignedMap()
	collations := tm.CollationMap()
	enumSetCollations := tm.EnumSetCollationMap()
	enums := tm.EnumStrValueMap()
	sets := tm.SetStrValueMap()
	for i := range cols {
		c := &cols[i]
		c.Type, c.Meta = tm.ColumnType[i], tm.ColumnMeta[i]
		var sc *SchemaColumn
		if fallback != nil {
			sc = &fallback.Columns[i]
			if err := checkCompatible(c, sc); err != nil {
				return nil, nil, fmt.Errorf("cannot determine column names of %s: column %d (%s): %w; the schema no longer matches the binlog, set binlog_row_metadata=FULL on the server", name, i+1, sc.Name, err)
			}
			c.Generated = sc.Generated
			c.ZeroFill = zeroFillWidth(sc)
			switch sc.DataType {
			case "uuid", "inet4", "inet6":
				c.TextType = sc.DataType
			}
		}
		if hasNames {
			c.Name = string(tm.ColumnName[i])
		} else {
			c.Name = sc.Name
		}
		rt := c.RealType()

		switch {
		case rt == mysql.MYSQL_TYPE_YEAR: // MariaDB flags YEAR unsigned, information_schema does not
		case unsigned != nil:
			c.Unsigned = unsigned[i]
		case sc != nil:
			c.Unsigned = sc.Unsigned
		}

		var coll uint64
		var hasColl bool
		if tm.IsCharacterColumn(i) {
			coll, hasColl = collations[i]
		} else if rt == mysql.MYSQL_TYPE_ENUM || rt == mysql.MYSQL_TYPE_SET {
			coll, hasColl = enumSetCollations[i]
		}
		if hasColl {
			c.Charset = collationCharset(coll)
		}
		if c.Charset == "" && sc != nil {
			c.Charset = sc.Charset
		}
		needsCharset := tm.IsCharacterColumn(i) || rt == mysql.MYSQL_TYPE_ENUM || rt == mysql.MYSQL_TYPE_SET
		if needsCharset && rt != mysql.MYSQL_TYPE_GEOMETRY {
			if c.Charset == "" {
				if hasColl {
					return nil, nil, fmt.Errorf("resolving columns of %s: column %s has collation id %d, which is not of a supported character set", name, c.Name, coll)
				}
				return nil, nil, fmt.Errorf("resolving columns of %s: the character set of column %s is unknown; set binlog_row_metadata=FULL on the server", name, c.Name)
			}
			if !supportedCharset(c.Charset) {
				return nil, nil, fmt.Errorf("resolving columns of %s: column %s has character set %s, which binlogsync cannot convert to UTF-8 (the multi-byte Asian sets); convert the column to utf8mb4 (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4) or leave the table out with tables.exclude", name, c.Name, c.Charset)
			}
		}

		switch rt {
		case mysql.MYSQL_TYPE_ENUM:
			if labels, ok := enums[i]; ok {
				c.EnumValues = labelsToUTF8(labels, c.Charset)
			} else if sc != nil {
				c.EnumValues = sc.EnumValues
			} else {
				return nil, nil, fmt.Errorf("resolving columns of %s: the labels of ENUM column %s are unknown; set binlog_row_metadata=FULL on the server", name, c.Name)
			}
		case mysql.MYSQL_TYPE_SET:
			if labels, ok := sets[i]; ok {
				c.SetValues = labelsToUTF8(labels, c.Charset)
			} else if sc != nil {
				c.SetValues = sc.SetValues
			} else {
				return nil, nil, fmt.Errorf("resolving columns of %s: the labels of SET column %s are unknown; set binlog_row_metadata=FULL on the server", name, c.Name)
			}
		}
	}

	switch {
	case hasNames: // the table map is authoritative, even about having no key
		for _, k := range tm.PrimaryKey {
			if k >= uint64(n) {
				return nil, nil, fmt.Errorf("resolving columns of %s: primary key column %d out of range", name, k)
			}
			pk = append(pk, int(k))
		}
	case fallback != nil:
		pk = append(pk, fallback.PK...)
	}
	if len(pk) == 0 {
		return cols, nil, fmt.Errorf("resolving columns of %s: %w", name, ErrNoPrimaryKey)
	}
	return cols, pk, nil
}

func labelsToUTF8(labels []string, charset string) []string {
	out := make([]string, len(labels))
	for i, l := range labels {
		b, ok := appendConverted(nil, l, charset)
		if !ok {
			return labels // UTF-8, or a set reported when the column is resolved
		}
		out[i] = string(b)
	}
	return out
}

// checkCompatible reports whether a binlog column can be the schema column:
// same type family, and the same scale or fractional digits where the table
// map carries them.
func checkCompatible(c *Column, sc *SchemaColumn) error {
	rt := c.RealType()
	var want []byte
	switch sc.DataType {
	case "tinyint", "bool", "boolean":
		want = []byte{mysql.MYSQL_TYPE_TINY}
	case "smallint":
		want = []byte{mysql.MYSQL_TYPE_SHORT}
	case "mediumint":
		want = []byte{mysql.MYSQL_TYPE_INT24}
	case "int", "integer":
		want = []byte{mysql.MYSQL_TYPE_LONG}
	case "bigint":
		want = []byte{mysql.MYSQL_TYPE_LONGLONG}
	case "decimal", "numeric":
		want = []byte{mysql.MYSQL_TYPE_NEWDECIMAL}
	case "float":
		want = []byte{mysql.MYSQL_TYPE_FLOAT}
	case "double", "real", "double precision":
		want = []byte{mysql.MYSQL_TYPE_DOUBLE}
	case "bit":
		want = []byte{mysql.MYSQL_TYPE_BIT}
	case "year":
		want = []byte{mysql.MYSQL_TYPE_YEAR}
	case "date":
		want = []byte{mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE}
	case "time":
		want = []byte{mysql.MYSQL_TYPE_TIME, mysql.MYSQL_TYPE_TIME2}
	case "datetime":
		want = []byte{mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATETIME2}
	case "timestamp":
		want = []byte{mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_TIMESTAMP2}
	case "char", "binary", "uuid", "inet4", "inet6":
		want = []byte{mysql.MYSQL_TYPE_STRING}
	case "enum":
		want = []byte{mysql.MYSQL_TYPE_ENUM}
	case "set":
		want = []byte{mysql.MYSQL_TYPE_SET}
	case "varchar", "varbinary":
		want = []byte{mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING}
	case "tinytext", "text", "mediumtext", "longtext", "tinyblob", "blob", "mediumblob", "longblob":
		want = []byte{mysql.MYSQL_TYPE_BLOB}
	case "json":
		want = []byte{mysql.MYSQL_TYPE_JSON, mysql.MYSQL_TYPE_BLOB}
	case "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
		"geometrycollection", "geomcollection":
		want = []byte{mysql.MYSQL_TYPE_GEOMETRY}
	case "vector":
		want = []byte{mysql.MYSQL_TYPE_VECTOR}
	default:
		return fmt.Errorf("unsupported data type %s", sc.DataType)
	}
	ok := false
	for _, w := range want {
		ok = ok || w == rt
	}
	if !ok {
		return fmt.Errorf("the schema says %s but the table map has binlog type %d", sc.ColumnType, rt)
	}
	switch rt {
	case mysql.MYSQL_TYPE_NEWDECIMAL:
		if p, s := int(c.Meta>>8), int(c.Meta&0xFF); p != sc.Precision || s != sc.Scale {
			return fmt.Errorf("the schema says %s but the table map has decimal(%d,%d)", sc.ColumnType, p, s)
		}
	case mysql.MYSQL_TYPE_TIME2, mysql.MYSQL_TYPE_DATETIME2, mysql.MYSQL_TYPE_TIMESTAMP2:
		if c.fsp() != sc.FSP {
			return fmt.Errorf("the schema says %s but the table map has %d fractional digits", sc.ColumnType, c.fsp())
		}
	}
	return nil
}

func normalizeCharset(cs string) string {
	cs = strings.ToLower(cs)
	if cs == "utf8" {
		return "utf8mb3"
	}
	return cs
}

// collationCharset maps a collation id of MySQL 5.7/8.x or MariaDB 10.x/11.x
// to its character set; unknown ids give "".
func collationCharset(id uint64) string {
	switch {
	case id == 63:
		return "binary"
	case id == 11 || id == 65 || id == 1035 || id == 1089:
		return "ascii"
	case id == 5 || id == 8 || id == 15 || id == 31 || id == 47 || id == 48 || id == 49 || id == 94 ||
		id == 1032 || id == 1071:
		return "latin1"
	case id == 33 || id == 76 || id == 83 || (id >= 192 && id <= 215) || id == 223 ||
		(id >= 576 && id <= 578) || id == 1057 || id == 1107 || (id >= 1216 && id <= 1247) ||
		(id >= 2048 && id <= 2303):
		return "utf8mb3"
	case id == 45 || id == 46 || (id >= 224 && id <= 247) || (id >= 255 && id <= 323) ||
		(id >= 608 && id <= 610) || id == 1069 || id == 1070 || (id >= 1248 && id <= 1279) ||
		(id >= 2304 && id <= 2559):
		return "utf8mb4"
	}
	if id <= 0xFFFF {
		return otherCollations[uint16(id)]
	}
	return ""
}
