package reconcile

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/sink"
	"github.com/binlogsync/binlogsync/source"
)

// ErrUnsupported marks a table the reconciler cannot compare (no primary key, or a primary-key column of a type
// whose SQL ordering the reconciler cannot bound ranges with). The pass reports it and goes on with other tables.
var ErrUnsupported = errors.New("table not supported by the reconciler")

// kind is how a column's value is read and rendered (SPEC section 2).
type kind uint8

const (
	kindPlain  kind = iota // SELECT col prints the stored bytes; CAST(col AS BINARY) gives the same
	kindText               // characters in some charset: converted to utf8mb4, as the connection does
	kindBit                // BIT: col+0
	kindFloat              // FLOAT: the shortest decimal of the float32; digested as CAST(col AS DOUBLE)
	kindDouble             // DOUBLE: the server's text is the renderer's text
)

// pkKind is how a primary-key value is written as an SQL literal.
type pkKind uint8

const (
	pkNumber   pkKind = iota // integers, DECIMAL, YEAR: the text itself
	pkBinary                 // BINARY/VARBINARY: X'hex'
	pkText                   // character strings: _utf8mb4 X'hex', which takes the column's collation
	pkTemporal               // DATE, TIME, DATETIME, TIMESTAMP: a quoted string
)

// column is one output column of a table.
type column struct {
	name  string // MySQL column name
	field string // Redis field name
	kind  kind
	pk    pkKind // meaningful for primary-key columns
	isInt bool   // an integer type (orphan probing between integer keys)
	// numeric is set for the types whose text never holds a ',' (numbers, BIT, YEAR, temporal types): the row
	// hash serializes them without a length prefix.
	numeric bool
	// utf8 is set for character columns whose stored bytes are already UTF-8 (utf8mb4, utf8mb3, ascii): the row
	// hash reads them without a conversion.
	utf8 bool
}

// table is what the reconciler knows of one table.
type table struct {
	t    *change.Table
	cols []column // parallel to t.Columns
	opts TableOptions
	// quoted is `db`.`table`.
	quoted string
	// intPK is set for a single-column integer primary key: orphan keys between rows can then be probed.
	intPK bool
	// keyCost is the measured Redis time per key of the digest script (ns), 0 before the first call: it sizes the
	// calls and pipelines of rows of any size (redisSide.rangeDigest).
	keyCost atomic.Int64
	// sig signs the column list in cached row hashes and fieldIndex maps Redis field names to columns (rowSig).
	sigOnce    sync.Once
	sig        string
	fieldIndex map[string]int
	fieldNames []string // the field name of each column
}

// name is "db.table".
func (tb *table) name() string { return tb.t.FullName() }

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// loadTable reads the schema of db.name and applies the table's column rule, the way the source does.
func loadTable(ctx context.Context, sdb *sql.DB, db, name string, opts TableOptions) (*table, error) {
	ts, err := source.LoadTableSchema(ctx, sdb, db, name)
	if err != nil {
		return nil, err
	}
	if len(ts.PK) == 0 {
		if opts.Columns == nil || len(opts.Columns.KeyColumns) == 0 {
			return nil, fmt.Errorf("%w: %s.%s has no primary key (the stream skips it too; "+
				"tables.rules[].key_columns names a unique key to use instead)", ErrUnsupported, db, name)
		}
		for _, k := range opts.Columns.KeyColumns {
			i := slices.IndexFunc(ts.Columns, func(c source.SchemaColumn) bool { return c.Name == k })
			if i < 0 {
				return nil, fmt.Errorf("tables.rules[].key_columns of %s.%s names %q, which the table does not have", db, name, k)
			}
			ts.PK = append(ts.PK, i)
		}
	}
	tb := &table{t: &change.Table{DB: db, Name: name}, opts: opts, quoted: quoteIdent(db) + "." + quoteIdent(name)}
	rule := opts.Columns
	included := func(string) bool { return true }
	if rule != nil {
		inc, exc := toSet(rule.Include), toSet(rule.Exclude)
		included = func(c string) bool { return (len(inc) == 0 || inc[c]) && !exc[c] }
	}
	out := map[int]int{}
	seen := map[string]bool{}
	for i, sc := range ts.Columns {
		if !included(sc.Name) {
			continue
		}
		field := sc.Name
		if rule != nil && rule.Rename[sc.Name] != "" {
			field = rule.Rename[sc.Name]
		}
		if strings.HasPrefix(field, "_") {
			return nil, fmt.Errorf("column %s.%s.%s: field name %q starts with '_', which SPEC reserves for metadata; "+
				"rename it with tables.rules[].columns.rename", db, name, sc.Name, field)
		}
		if seen[field] {
			return nil, fmt.Errorf("two columns of %s.%s map to field %q; fix tables.rules[].columns.rename", db, name, field)
		}
		seen[field] = true
		out[i] = len(tb.cols)
		tb.t.Columns = append(tb.t.Columns, field)
		tb.cols = append(tb.cols, describe(sc, field))
	}
	for _, p := range ts.PK {
		o, ok := out[p]
		if !ok {
			return nil, fmt.Errorf("the column rules of %s.%s remove primary-key column %s; keep it in tables.rules[].columns",
				db, name, ts.Columns[p].Name)
		}
		if err := checkPKType(&ts.Columns[p]); err != nil {
			return nil, fmt.Errorf("%w: %s.%s: %v", ErrUnsupported, db, name, err)
		}
		tb.t.PK = append(tb.t.PK, o)
	}
	tb.intPK = len(tb.t.PK) == 1 && tb.cols[tb.t.PK[0]].isInt
	return tb, nil
}

func toSet(l []string) map[string]bool {
	m := make(map[string]bool, len(l))
	for _, s := range l {
		m[s] = true
	}
	return m
}

// describe classifies a column.
func describe(sc source.SchemaColumn, field string) column {
	c := column{name: sc.Name, field: field}
	switch sc.DataType {
	case "bit":
		c.kind = kindBit
	case "float":
		c.kind = kindFloat
	case "double", "real", "double precision":
		c.kind = kindDouble
	case "uuid", "inet4", "inet6": // MariaDB's types: SELECT prints text, CAST(col AS BINARY) the stored bytes
		c.kind = kindText
	default:
		if sc.Charset != "" && sc.Charset != "binary" {
			c.kind = kindText
			c.utf8 = sc.Charset == "utf8mb4" || sc.Charset == "utf8mb3" || sc.Charset == "ascii"
		}
	}
	switch sc.DataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "float", "double",
		"real", "double precision", "bit", "year", "date", "time", "datetime", "timestamp":
		c.numeric = true
	}
	switch sc.DataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		c.isInt = true
		c.pk = pkNumber
	case "decimal", "numeric", "year":
		c.pk = pkNumber
	case "date", "time", "datetime", "timestamp":
		c.pk = pkTemporal
	default:
		if sc.Charset == "binary" {
			c.pk = pkBinary
		} else {
			c.pk = pkText
		}
	}
	return c
}

// checkPKType accepts the primary-key column types whose order a literal bound reproduces.
func checkPKType(sc *source.SchemaColumn) error {
	switch sc.DataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "year",
		"date", "time", "datetime", "timestamp", "char", "varchar", "binary", "varbinary",
		"uuid", "inet4", "inet6": // MariaDB's types compare with their text form, which bounds carry
		return nil
	}
	return fmt.Errorf("primary-key column %s has type %s; supported are integers, DECIMAL, YEAR, temporal types, "+
		"CHAR/VARCHAR/BINARY/VARBINARY and MariaDB's UUID/INET4/INET6", sc.Name, sc.DataType)
}

// valueExpr is the SQL expression whose text-protocol value is what the row stores in Redis, modulo the
// FLOAT/DOUBLE re-rendering (see render).
func (c *column) valueExpr() string {
	q := quoteIdent(c.name)
	switch c.kind {
	case kindBit:
		return q + "+0"
	case kindFloat:
		return "CAST(" + q + " AS DOUBLE)"
	}
	return q
}

// digestExpr is a binary string SQL expression with the column's canonical bytes: what Redis stores, except
// FLOAT, whose canonical form is the shortest decimal of the float32 widened to a double (the digest script
// computes the same from the stored value).
func (c *column) digestExpr() string {
	q := quoteIdent(c.name)
	switch c.kind {
	case kindText:
		return "CAST(CONVERT(" + q + " USING utf8mb4) AS BINARY)"
	case kindBit:
		return "CAST(" + q + "+0 AS BINARY)"
	case kindFloat:
		return "CAST(CAST(" + q + " AS DOUBLE) AS BINARY)"
	}
	return "CAST(" + q + " AS BINARY)"
}

// rowHashExpr is the SQL expression of a row's 16-hex-digit hash: SHA1 over the columns in order, joined with
// ',', each "-" when NULL, else its text for numeric columns and "<length>:<bytes>" for the others (see the
// package documentation). A numeric column is converted to text once: converting DOUBLE, DECIMAL or DATETIME
// twice (for a length and a value) would double the cost of the query. Every argument of CONCAT_WS is non-NULL,
// so it joins them all; it costs less than CONCAT with the separators as arguments. A character column already
// in UTF-8 is only cast to binary (its bytes), without CONVERT: 13 % less MariaDB time for the digest queries
// of a 10-column table with three VARCHARs. (Binary, not the column itself: CONCAT of columns of different
// collations would be an error.)
func (tb *table) rowHashExpr() string {
	var b strings.Builder
	b.WriteString("LEFT(SHA1(CONCAT_WS(',', ")
	for i := range tb.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		c := &tb.cols[i]
		if c.numeric {
			fmt.Fprintf(&b, "IFNULL(%s, '-')", c.valueExpr())
			continue
		}
		e := c.digestExpr()
		if c.utf8 {
			e = "CAST(" + quoteIdent(c.name) + " AS BINARY)"
		}
		fmt.Fprintf(&b, "IFNULL(CONCAT(LENGTH(%s), ':', %s), '-')", e, e)
	}
	b.WriteString(")), 16)")
	return b.String()
}

// pkOrder is the ORDER BY list of the primary key.
func (tb *table) pkOrder() string {
	parts := make([]string, len(tb.t.PK))
	for i, c := range tb.t.PK {
		parts[i] = quoteIdent(tb.cols[c].name)
	}
	return strings.Join(parts, ", ")
}

// pkSelect is the select list of the primary-key columns' rendered values.
func (tb *table) pkSelect() string {
	parts := make([]string, len(tb.t.PK))
	for i, c := range tb.t.PK {
		parts[i] = tb.cols[c].valueExpr()
	}
	return strings.Join(parts, ", ")
}

// rowSelect is the select list of every column's rendered value.
func (tb *table) rowSelect() string {
	parts := make([]string, len(tb.cols))
	for i := range tb.cols {
		parts[i] = tb.cols[i].valueExpr()
	}
	return strings.Join(parts, ", ")
}

// pkKeyExpr is the expression whose text encodes a row's primary key in a GROUP_CONCAT list: numbers as text,
// everything else in hex, the columns joined with ':'.
func (tb *table) pkKeyExpr() string {
	parts := make([]string, len(tb.t.PK))
	for i, c := range tb.t.PK {
		col := &tb.cols[c]
		if col.pk == pkNumber {
			parts[i] = quoteIdent(col.name)
		} else {
			parts[i] = "HEX(" + col.digestExpr() + ")"
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "CONCAT_WS(':', " + strings.Join(parts, ", ") + ")"
}

// decodePKList decodes a GROUP_CONCAT list of pkKeyExpr values. The values of numbers are slices of s, which
// the caller must not change; the key slices of all rows share one array (a full pass decodes a million keys).
func (tb *table) decodePKList(s []byte) ([][][]byte, error) {
	if len(s) == 0 {
		return nil, nil
	}
	nk := len(tb.t.PK)
	items := bytes.Count(s, []byte{','}) + 1
	out := make([][][]byte, items)
	vals := make([][]byte, items*nk)
	for i := range out {
		it := s
		if c := bytes.IndexByte(s, ','); c >= 0 {
			it, s = s[:c], s[c+1:]
		}
		if n := bytes.Count(it, []byte{':'}) + 1; n != nk {
			return nil, fmt.Errorf("decoding the key list of %s: %q has %d values, the key %d columns", tb.name(), it, n, nk)
		}
		pk := vals[i*nk : (i+1)*nk : (i+1)*nk]
		for j := range pk {
			v := it
			if c := bytes.IndexByte(it, ':'); c >= 0 {
				v, it = it[:c], it[c+1:]
			}
			if tb.cols[tb.t.PK[j]].pk == pkNumber {
				pk[j] = v[:len(v):len(v)]
				continue
			}
			b := make([]byte, hex.DecodedLen(len(v)))
			if _, err := hex.Decode(b, v); err != nil {
				return nil, fmt.Errorf("decoding the key list of %s: %w", tb.name(), err)
			}
			pk[j] = b
		}
		out[i] = pk
	}
	return out, nil
}

// literal renders a primary-key value as an SQL literal of its column.
func (c *column) literal(v []byte) (string, error) {
	switch c.pk {
	case pkNumber:
		for _, ch := range v {
			if (ch < '0' || ch > '9') && ch != '-' && ch != '.' {
				return "", fmt.Errorf("value %q of column %s is not a number", v, c.name)
			}
		}
		if len(v) == 0 {
			return "", fmt.Errorf("empty value of numeric column %s", c.name)
		}
		return string(v), nil
	case pkTemporal:
		for _, ch := range v {
			if (ch < '0' || ch > '9') && ch != '-' && ch != ':' && ch != ' ' && ch != '.' {
				return "", fmt.Errorf("value %q of column %s is not a date or time", v, c.name)
			}
		}
		return "'" + string(v) + "'", nil
	case pkBinary:
		return "X'" + hex.EncodeToString(v) + "'", nil
	}
	return "_utf8mb4 X'" + hex.EncodeToString(v) + "'", nil
}

// after renders the condition "primary key > pk" (pk == nil: no condition). Composite keys expand into
// (a > x OR (a = x AND (b > y ...))) with a leading a >= x for the range optimizer.
func (tb *table) after(pk [][]byte) (string, error) { return tb.bound(pk, ">", ">") }

// upTo renders "primary key <= pk".
func (tb *table) upTo(pk [][]byte) (string, error) { return tb.bound(pk, "<", "<=") }

func (tb *table) bound(pk [][]byte, strict, last string) (string, error) {
	if pk == nil {
		return "TRUE", nil
	}
	lits := make([]string, len(pk))
	for i, v := range pk {
		l, err := tb.cols[tb.t.PK[i]].literal(v)
		if err != nil {
			return "", err
		}
		lits[i] = l
	}
	name := func(i int) string { return quoteIdent(tb.cols[tb.t.PK[i]].name) }
	n := len(pk)
	expr := name(n-1) + " " + last + " " + lits[n-1]
	for i := n - 2; i >= 0; i-- {
		expr = name(i) + " " + strict + " " + lits[i] + " OR (" + name(i) + " = " + lits[i] + " AND (" + expr + "))"
	}
	if n == 1 {
		return expr, nil
	}
	op := ">="
	if strict == "<" {
		op = "<="
	}
	return name(0) + " " + op + " " + lits[0] + " AND (" + expr + ")", nil
}

// in renders "primary key IN (pks)".
func (tb *table) in(pks [][][]byte) (string, error) {
	if len(pks) == 0 {
		return "FALSE", nil
	}
	var b strings.Builder
	if len(tb.t.PK) == 1 {
		b.WriteString(quoteIdent(tb.cols[tb.t.PK[0]].name) + " IN (")
		for i, pk := range pks {
			l, err := tb.cols[tb.t.PK[0]].literal(pk[0])
			if err != nil {
				return "", err
			}
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(l)
		}
		b.WriteByte(')')
		return b.String(), nil
	}
	for i, pk := range pks {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteByte('(')
		for j, v := range pk {
			l, err := tb.cols[tb.t.PK[j]].literal(v)
			if err != nil {
				return "", err
			}
			if j > 0 {
				b.WriteString(" AND ")
			}
			b.WriteString(quoteIdent(tb.cols[tb.t.PK[j]].name) + " = " + l)
		}
		b.WriteByte(')')
	}
	return b.String(), nil
}

// key renders the Redis key of a primary key.
func (tb *table) key(s *sink.Sink, pk [][]byte) (string, error) {
	k, err := tb.keys(s, [][][]byte{pk})
	if err != nil {
		return "", err
	}
	return k[0], nil
}

// keys renders the Redis keys of primary keys.
func (tb *table) keys(s *sink.Sink, pks [][][]byte) ([]string, error) {
	key, err := s.KeyFunc(tb.t)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(pks))
	row := make(change.Row, len(tb.t.Columns)) // scratch: only the primary-key values are set
	for i, pk := range pks {
		for j, c := range tb.t.PK {
			row[c] = pk[j]
		}
		if out[i], err = key(row); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// pkOf returns the primary-key values of a full row.
func (tb *table) pkOf(row change.Row) [][]byte { return tb.t.PKValues(row) }
