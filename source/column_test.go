package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// renderColumns is the table of TestIntegrationRender*: every type SPEC
// section 2 covers. Each entry is a column definition.
func renderColumns() []string {
	cols := []string{
		"id INT NOT NULL PRIMARY KEY",
		"c_year YEAR", // before the unsigned columns: checks the signedness bitmap's alignment
		"c_tiny TINYINT", "c_utiny TINYINT UNSIGNED",
		"c_small SMALLINT", "c_usmall SMALLINT UNSIGNED",
		"c_medium MEDIUMINT", "c_umedium MEDIUMINT UNSIGNED",
		"c_int INT", "c_uint INT UNSIGNED",
		"c_big BIGINT", "c_ubig BIGINT UNSIGNED",
		"c_dec DECIMAL(10,2)", "c_dec_max DECIMAL(65,30)", "c_dec0 DECIMAL(5,0)", "c_udec DECIMAL(10,3) UNSIGNED",
		"c_float FLOAT", "c_double DOUBLE",
		"c_date DATE",
	}
	for fsp := 0; fsp <= 6; fsp++ {
		cols = append(cols,
			fmt.Sprintf("c_dt%d DATETIME(%d)", fsp, fsp),
			fmt.Sprintf("c_ts%d TIMESTAMP(%d) NULL DEFAULT NULL", fsp, fsp),
			fmt.Sprintf("c_time%d TIME(%d)", fsp, fsp))
	}
	cols = append(cols,
		"c_char CHAR(10) CHARACTER SET utf8mb4",
		"c_char_l CHAR(10) CHARACTER SET latin1",
		"c_char_big CHAR(255) CHARACTER SET utf8mb4",
		"c_varchar VARCHAR(100) CHARACTER SET utf8mb4",
		"c_varchar_l VARCHAR(300) CHARACTER SET latin1",
		"c_ascii VARCHAR(10) CHARACTER SET ascii",
		"c_utf8mb3 VARCHAR(10) CHARACTER SET utf8mb3",
		"c_text TEXT CHARACTER SET utf8mb4",
		"c_text_l TEXT CHARACTER SET latin1",
		"c_longtext LONGTEXT CHARACTER SET utf8mb4",
		"c_binary BINARY(4)",
		"c_varbinary VARBINARY(20)",
		"c_tinyblob TINYBLOB",
		"c_blob BLOB",
		"c_longblob LONGBLOB",
		"c_enum ENUM('a','b c','é','x''y','back\\\\slash')",
		"c_enum_l ENUM('é','€','plain') CHARACTER SET latin1",
		"c_enum_big ENUM("+labels("e", 300)+")",
		"c_set SET('a','b','é','d')",
		"c_set_l SET('é','€') CHARACTER SET latin1",
		"c_set64 SET("+labels("s", 64)+")",
		"c_bit1 BIT(1)", "c_bit8 BIT(8)", "c_bit64 BIT(64)",
		"c_json JSON",
		"c_geom GEOMETRY",
		"c_gen_v BIGINT AS (c_int * 2) VIRTUAL",
		"c_gen_s VARCHAR(120) AS (CONCAT(c_varchar, '!')) STORED",
	)
	return cols
}

func labels(prefix string, n int) string {
	l := make([]string, n)
	for i := range l {
		l[i] = fmt.Sprintf("'%s%d'", prefix, i+1)
	}
	return strings.Join(l, ",")
}

// renderRows are the inserted rows, column name -> SQL literal; the rest is NULL.
func renderRows() []map[string]string {
	nines := func(n int) string { return strings.Repeat("9", n) }
	temporal := func(row map[string]string, dt, ts, tm string) {
		for fsp := 0; fsp <= 6; fsp++ {
			row[fmt.Sprintf("c_dt%d", fsp)] = dt
			row[fmt.Sprintf("c_ts%d", fsp)] = ts
			row[fmt.Sprintf("c_time%d", fsp)] = tm
		}
	}
	minRow := map[string]string{
		"id": "1", "c_year": "1901",
		"c_tiny": "-128", "c_utiny": "0", "c_small": "-32768", "c_usmall": "0",
		"c_medium": "-8388608", "c_umedium": "0", "c_int": "-2147483648", "c_uint": "0",
		"c_big": "-9223372036854775808", "c_ubig": "0",
		"c_dec": "-99999999.99", "c_dec_max": "-" + nines(35) + "." + nines(30), "c_dec0": "-99999", "c_udec": "0",
		"c_float": "-3.40282e38", "c_double": "-1.7976931348623157e308",
		"c_date": "'1000-01-01'",
		"c_char": "'a  '", "c_char_l": "'é  '", "c_varchar": "'trailing  '", "c_binary": "'a'",
		"c_enum": "'a'", "c_set": "'a'", "c_bit1": "b'0'", "c_bit8": "b'0'", "c_bit64": "0",
		"c_json": `'{"a": 1}'`, "c_geom": "ST_GeomFromText('POINT(1 2)')",
	}
	temporal(minRow, "'1000-01-01 00:00:00'", "'1970-01-01 05:30:01'", "'-838:59:59.000000'")
	maxRow := map[string]string{
		"id": "2", "c_year": "2155",
		"c_tiny": "127", "c_utiny": "255", "c_small": "32767", "c_usmall": "65535",
		"c_medium": "8388607", "c_umedium": "16777215", "c_int": "2147483647", "c_uint": "4294967295",
		"c_big": "9223372036854775807", "c_ubig": "18446744073709551615",
		"c_dec": "99999999.99", "c_dec_max": nines(35) + "." + nines(30), "c_dec0": "99999", "c_udec": "9999999.999",
		"c_float": "3.40282e38", "c_double": "1.7976931348623157e308",
		"c_date": "'9999-12-31'",
		"c_char": "'" + strings.Repeat("x", 10) + "'", "c_char_big": "'" + strings.Repeat("😀", 255) + "'",
		"c_binary": "'abcd'", "c_varbinary": "X'FF00FF00'",
		"c_enum": "'back\\\\slash'", "c_enum_big": "'e300'", "c_set": "'a,b,é,d'",
		"c_set64": "'" + strings.ReplaceAll(labels("s", 64), "'", "") + "'",
		"c_bit1":  "b'1'", "c_bit8": "b'11111111'", "c_bit64": "18446744073709551615",
		"c_json": `'[1, 2.50, "x", null, true, {"k": []}]'`,
	}
	temporal(maxRow, "'9999-12-31 23:59:59.999999'", "'2038-01-19 08:44:07.999999'", "'838:59:59.999999'")
	zeroRow := map[string]string{
		"id": "3", "c_year": "0",
		"c_tiny": "0", "c_utiny": "0", "c_int": "0", "c_big": "0", "c_ubig": "0",
		"c_dec": "0", "c_dec_max": "0", "c_dec0": "0", "c_udec": "0", "c_float": "0", "c_double": "0",
		"c_date": "'0000-00-00'",
		"c_char": "''", "c_char_l": "''", "c_varchar": "''", "c_varchar_l": "''", "c_ascii": "''",
		"c_text": "''", "c_text_l": "''", "c_longtext": "''", "c_binary": "''", "c_varbinary": "''",
		"c_tinyblob": "''", "c_blob": "''", "c_longblob": "''",
		"c_enum": "''", "c_set": "''", "c_set_l": "''", "c_bit1": "0", "c_bit8": "0", "c_bit64": "0",
		"c_json": "'{}'",
	}
	temporal(zeroRow, "'0000-00-00 00:00:00'", "'0000-00-00 00:00:00'", "'00:00:00'")
	textRow := map[string]string{
		"id": "5", "c_year": "2024", "c_tiny": "-1", "c_utiny": "200", "c_medium": "-1", "c_umedium": "8388608",
		"c_int": "42", "c_uint": "2147483648", "c_big": "-1", "c_ubig": "9223372036854775808",
		"c_dec": "-0.50", "c_dec_max": "-0.000000000000000000000000000001", "c_dec0": "-1", "c_udec": "12.5",
		"c_float": "0.1", "c_double": "0.1",
		"c_date": "'2020-02-29'",
		"c_char": "'é€😀  '", "c_char_l": "'é€ x '", "c_char_big": "'  lead and trail  '",
		"c_varchar": "'é€😀 \t\n'", "c_varchar_l": "'é€ƒ‰Œ trailing  '", "c_ascii": "'plain  '",
		"c_utf8mb3": "'ümlaut'", "c_text": "'emoji 😀👍🏽 and NUL-free text'", "c_text_l": "'latin1 text é € Ÿ'",
		"c_longtext": "REPEAT('ab', 40000)",
		"c_binary":   "X'00FF'", "c_varbinary": "X'0000'", "c_tinyblob": "X'FF'", "c_blob": "X'00FF00FF'",
		"c_longblob": "CONCAT(X'00', REPEAT(X'FF', 70000), X'00')",
		"c_enum":     "'é'", "c_enum_l": "'€'", "c_enum_big": "'e1'", "c_set": "'é,a'", "c_set_l": "'€,é'",
		"c_set64": "'s64'", "c_bit1": "1", "c_bit8": "b'1010'", "c_bit64": "9223372036854775808",
		"c_json": `'{"k": "é😀\\u00e9", "a" : [1,2.5e0,"x"], "n": null, "esc": "q\\"b\\\\s"}'`,
		"c_geom": "ST_GeomFromText('LINESTRING(0 0, 1.5 2.25)')",
	}
	temporal(textRow, "'2020-02-29 12:34:56.123456'", "'2020-01-01 00:00:00.5'", "'-00:00:00.5'")
	oddRow := map[string]string{
		"id": "6", "c_year": "70", "c_dec": "12.5", "c_dec_max": "0.5", "c_dec0": "12345", "c_udec": "0.001",
		"c_float": "1e-20", "c_double": "123456789012345.6", "c_date": "'2020-00-15'",
		"c_varchar_l": "X'" + latin1AllBytes() + "'", "c_text_l": "X'" + latin1AllBytes() + "'",
		"c_enum": "'x''y'", "c_enum_l": "'é'", "c_set": "'d'", "c_json": `'"just a string"'`,
	}
	temporal(oddRow, "'2020-00-00 00:00:00'", "'1999-12-31 23:59:59.999'", "'100:00:00.25'")
	more := map[string]string{
		"id": "7", "c_float": "16777217", "c_double": "1e15", "c_json": "'3.0'", "c_int": "7",
		"c_varchar": "'generated'",
	}
	temporal(more, "'2001-02-03 04:05:06.7'", "'2001-02-03 04:05:06.000007'", "'-12:00:00'")
	more2 := map[string]string{
		"id": "8", "c_float": "-0.000015", "c_double": "2.2250738585072014e-308", "c_json": "'[]'",
	}
	temporal(more2, "'1970-01-01 00:00:00'", "'1970-01-01 05:30:00.000001'", "'-00:00:01'")
	nullRow := map[string]string{"id": "4"}
	return []map[string]string{minRow, maxRow, zeroRow, nullRow, textRow, oddRow, more, more2}
}

// latin1AllBytes is every byte value except those MariaDB cannot convert, in hex.
func latin1AllBytes() string {
	var b strings.Builder
	for i := 0; i < 256; i++ {
		fmt.Fprintf(&b, "%02X", i)
	}
	return b.String()
}

// renderStatements are run after the inserts: an update whose after image
// changes a virtual and a stored generated column.
var renderUpdates = []string{
	"UPDATE render SET c_int = c_int + 1, c_varchar = CONCAT(c_varchar, 'u') WHERE id = 7",
}

var syncerIDs atomic.Uint32

func init() { syncerIDs.Store(rand.Uint32N(1<<20) + 1<<20) }

// nextServerID is a replica server_id no other binlog reader of this process uses.
func nextServerID() uint32 { return syncerIDs.Add(1) }

// renderedRow is a row image rendered by AppendValue: column name -> value (nil = NULL).
type renderedRow map[string][]byte

// checkRenderAgainstServer creates the render table on m, writes the rows from
// a +05:30 session, renders the binlog rows and compares them with SELECT.
// It returns the server's output as golden text.
func checkRenderAgainstServer(t *testing.T, m *testenv.MariaDB, wantMetadata bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dbName := m.NewDatabase(t)
	db := m.Root(t, dbName)
	db.SetMaxOpenConns(4)

	file, pos := masterStatus(t, db)
	colDefs := renderColumns()
	mustExec(t, ctx, db, "CREATE TABLE render ("+strings.Join(colDefs, ",\n")+") CHARACTER SET utf8mb4")

	writer, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	mustExec(t, ctx, writer, "SET time_zone = '+05:30', sql_mode = '', NAMES utf8mb4")
	for _, row := range renderRows() {
		var names, vals []string
		for k, v := range row {
			names = append(names, "`"+k+"`")
			vals = append(vals, v)
		}
		mustExec(t, ctx, writer, "INSERT INTO render ("+strings.Join(names, ",")+") VALUES ("+strings.Join(vals, ",")+")")
	}
	for _, s := range renderUpdates {
		mustExec(t, ctx, writer, s)
	}
	endFile, endPos := masterStatus(t, db)

	var schema *TableSchema
	if !wantMetadata {
		schema, err = LoadTableSchema(ctx, db, dbName, "render")
		if err != nil {
			t.Fatal(err)
		}
	}
	got, cols := readRenderedRows(t, ctx, m, dbName, file, pos, endFile, endPos, wantMetadata, schema)
	if len(got) != len(renderRows()) {
		t.Fatalf("binlog gave %d rows, want %d", len(got), len(renderRows()))
	}

	server, golden := selectServerRows(t, m, dbName, cols)
	compared := map[string]int{}
	for id, want := range server {
		row, ok := got[id]
		if !ok {
			t.Errorf("row %s: not in the binlog", id)
			continue
		}
		for _, c := range cols {
			g, w := row[c.Name], want[c.Name]
			rt := c.RealType()
			switch {
			case w == nil || g == nil:
				if (w == nil) != (g == nil) {
					t.Errorf("row %s column %s: rendered %s, server %s", id, c.Name, show(g), show(w))
				}
				continue
			case rt == mysql.MYSQL_TYPE_BIT:
				w = want[c.Name+"+0"]
			case rt == mysql.MYSQL_TYPE_FLOAT:
				// Our text must parse to the same float32 as the server's
				// exact value (CAST to DOUBLE prints it in full).
				gf, err1 := strconv.ParseFloat(string(g), 32)
				wf, err2 := strconv.ParseFloat(string(want[c.Name+" AS DOUBLE"]), 64)
				if err1 != nil || err2 != nil || float32(gf) != float32(wf) {
					t.Errorf("row %s column %s: rendered %s, server %s (as double %s)", id, c.Name, show(g), show(w), show(want[c.Name+" AS DOUBLE"]))
				}
				compared[c.Name]++
				continue
			case rt == mysql.MYSQL_TYPE_DOUBLE:
				gf, err1 := strconv.ParseFloat(string(g), 64)
				wf, err2 := strconv.ParseFloat(string(w), 64)
				if err1 != nil || err2 != nil || gf != wf {
					t.Errorf("row %s column %s: rendered %s, server %s", id, c.Name, show(g), show(w))
				}
				// MariaDB prints a DOUBLE the way appendFloat does; hold it to that too.
			}
			if !bytes.Equal(g, w) {
				t.Errorf("row %s column %s: rendered %s, server %s", id, c.Name, show(g), show(w))
			}
			compared[c.Name]++
		}
	}
	for _, c := range cols {
		if compared[c.Name] == 0 {
			t.Errorf("column %s: no non-NULL value was compared", c.Name)
		}
	}
	return golden
}

func show(b []byte) string {
	if b == nil {
		return "NULL"
	}
	if len(b) > 80 {
		return strconv.Quote(string(b[:80])) + fmt.Sprintf("...(%d bytes)", len(b))
	}
	return strconv.Quote(string(b))
}

// goldenValue is v Go-quoted, or for long values its length and SHA-256.
func goldenValue(v []byte) string {
	if len(v) > 1000 {
		return fmt.Sprintf("%d bytes, sha256 %x", len(v), sha256.Sum256(v))
	}
	return show(v)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func mustExec(t *testing.T, ctx context.Context, db execer, q string) {
	t.Helper()
	if _, err := db.ExecContext(ctx, q); err != nil {
		t.Fatalf("exec %.300s: %v", q, err)
	}
}

func masterStatus(t *testing.T, db *sql.DB) (string, uint32) {
	t.Helper()
	rows, err := db.Query("SHOW MASTER STATUS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		t.Fatal("SHOW MASTER STATUS: no row (binlog off?)")
	}
	vals := make([]any, len(cols))
	var file string
	var pos uint32
	vals[0], vals[1] = &file, &pos
	for i := 2; i < len(vals); i++ {
		vals[i] = new(sql.RawBytes)
	}
	if err := rows.Scan(vals...); err != nil {
		t.Fatal(err)
	}
	return file, pos
}

// readRenderedRows reads the binlog from file:pos to endFile:endPos and renders
// the row images of dbName.render (the last image of each id wins).
func readRenderedRows(t *testing.T, ctx context.Context, m *testenv.MariaDB, dbName, file string, pos uint32,
	endFile string, endPos uint32, wantMetadata bool, schema *TableSchema,
) (map[string]renderedRow, []Column) {
	t.Helper()
	cfg := replication.BinlogSyncerConfig{
		ServerID: nextServerID(), Flavor: "mariadb", Host: "127.0.0.1", Port: uint16(m.Port),
		User: "root", Password: m.RootPassword, Logger: slog.New(slog.DiscardHandler),
	}
	ConfigureDecoding(&cfg)
	syncer := replication.NewBinlogSyncer(cfg)
	defer syncer.Close()
	streamer, err := syncer.StartSync(mysql.Position{Name: file, Pos: pos})
	if err != nil {
		t.Fatalf("starting binlog sync: %v", err)
	}
	got := map[string]renderedRow{}
	var cols []Column
	var idIdx int
	cur := file
	for {
		ev, err := streamer.GetEvent(ctx)
		if err != nil {
			t.Fatalf("reading binlog (reached %s:%d, want %s:%d): %v", cur, 0, endFile, endPos, err)
		}
		switch e := ev.Event.(type) {
		case *replication.RotateEvent:
			cur = string(e.NextLogName)
		case *replication.TableMapEvent:
			if string(e.Schema) != dbName {
				continue
			}
			if wantMetadata != (len(e.ColumnName) > 0) {
				t.Fatalf("table map carries names=%v, want %v", len(e.ColumnName) > 0, wantMetadata)
			}
			var pk []int
			cols, pk, err = ResolveColumns(e, schema)
			if err != nil {
				t.Fatalf("ResolveColumns: %v", err)
			}
			if len(pk) != 1 || cols[pk[0]].Name != "id" {
				t.Fatalf("primary key %v, want [id]", pk)
			}
			idIdx = pk[0]
			if wantMetadata {
				checkFallbackAgrees(t, ctx, m, dbName, e, cols, pk)
			}
		case *replication.RowsEvent:
			if string(e.Table.Schema) != dbName {
				continue
			}
			step := 1
			switch ev.Header.EventType {
			case replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2:
				step = 2
			}
			for i := step - 1; i < len(e.Rows); i += step {
				if len(e.SkippedColumns[i]) > 0 {
					t.Fatalf("row image skips columns %v", e.SkippedColumns[i])
				}
				row := renderedRow{}
				for j, v := range e.Rows[i] {
					out, null, err := cols[j].AppendValue(nil, v)
					if err != nil {
						t.Fatalf("AppendValue(%s, %T %v): %v", cols[j].Name, v, v, err)
					}
					if !null {
						row[cols[j].Name] = append([]byte{}, out...) // non-nil even when empty
					}
				}
				got[string(row[cols[idIdx].Name])] = row
			}
		}
		if cur == endFile && ev.Header.LogPos >= endPos {
			return got, cols
		}
	}
}

// checkFallbackAgrees resolves the columns again from information_schema
// alone (a table map stripped of its optional metadata) and expects the
// same result as from the table map.
func checkFallbackAgrees(t *testing.T, ctx context.Context, m *testenv.MariaDB, dbName string,
	e *replication.TableMapEvent, cols []Column, pk []int,
) {
	t.Helper()
	schema, err := LoadTableSchema(ctx, m.Root(t, dbName), dbName, string(e.Table))
	if err != nil {
		t.Fatal(err)
	}
	bare := &replication.TableMapEvent{
		Schema: e.Schema, Table: e.Table, ColumnCount: e.ColumnCount,
		ColumnType: e.ColumnType, ColumnMeta: e.ColumnMeta, NullBitmap: e.NullBitmap,
	}
	fcols, fpk, err := ResolveColumns(bare, schema)
	if err != nil {
		t.Fatalf("ResolveColumns from the schema: %v", err)
	}
	for i := range fcols {
		fcols[i].Generated = ""
	}
	if !reflect.DeepEqual(fcols, cols) || !reflect.DeepEqual(fpk, pk) {
		for i := range cols {
			if !reflect.DeepEqual(fcols[i], cols[i]) {
				t.Errorf("column %d: from the schema %+v, from the table map %+v", i, fcols[i], cols[i])
			}
		}
		t.Fatalf("ResolveColumns from the schema disagrees with the table map (pk %v vs %v)", fpk, pk)
	}
}

// selectServerRows reads the render table over the text protocol with
// time_zone '+00:00' and utf8mb4: id -> expression -> bytes, plus the same as
// golden text. It uses go-mysql's client and reads the raw row packets:
// go-sql-driver (v1.8+) parses integer, YEAR, FLOAT and DOUBLE columns of text
// results into Go numbers, so its sql.RawBytes are not the server's bytes
// (YEAR 0000 arrives as "0", DOUBLE 1e15 as "1e+15").
func selectServerRows(t *testing.T, m *testenv.MariaDB, dbName string, cols []Column) (map[string]renderedRow, string) {
	t.Helper()
	conn, err := client.Connect(m.Addr(), "root", m.RootPassword, dbName)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"SET time_zone = '+00:00'", "SET NAMES utf8mb4"} {
		if _, err := conn.Execute(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var exprs, names []string
	for _, c := range cols {
		q := "`" + c.Name + "`"
		exprs, names = append(exprs, q), append(names, c.Name)
		switch c.RealType() {
		case mysql.MYSQL_TYPE_BIT:
			exprs, names = append(exprs, q+"+0"), append(names, c.Name+"+0")
		case mysql.MYSQL_TYPE_FLOAT, mysql.MYSQL_TYPE_DOUBLE:
			exprs, names = append(exprs, "CAST("+q+" AS DOUBLE)"), append(names, c.Name+" AS DOUBLE")
		}
	}
	res, err := conn.Execute("SELECT " + strings.Join(exprs, ", ") + " FROM render ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out := map[string]renderedRow{}
	var golden strings.Builder
	golden.WriteString("# Server output of SELECT over the text protocol (time_zone '+00:00', utf8mb4), generated by\n")
	golden.WriteString("# go test ./source -run TestIntegrationRender -update. Columns: id, expression, Go-quoted bytes.\n")
	for _, packet := range res.RowDatas {
		row := renderedRow{}
		p := []byte(packet)
		for _, n := range names {
			v, isNull, size, err := mysql.LengthEncodedString(p)
			if err != nil {
				t.Fatalf("parsing a text row: %v", err)
			}
			p = p[size:]
			if !isNull {
				row[n] = append([]byte{}, v...)
			}
		}
		id := string(row["id"])
		out[id] = row
		for _, n := range names {
			fmt.Fprintf(&golden, "%s\t%s\t%s\n", id, n, goldenValue(row[n]))
		}
	}
	return out, golden.String()
}

const renderGolden = "testdata/render_golden.txt"

func checkGolden(t *testing.T, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(renderGolden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(renderGolden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(renderGolden)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if string(want) != got {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("the server's output differs from %s at line %d:\nserver: %s\ngolden: %s", renderGolden, i+1, g, w)
			}
		}
	}
}

// TestIntegrationRenderFullMetadata checks every type against the shared
// server, which logs FULL row metadata (names, labels, charsets, key).
func TestIntegrationRenderFullMetadata(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	golden := checkRenderAgainstServer(t, m, true)
	checkGolden(t, golden)
}

// TestIntegrationRenderMinimalMetadata checks the information_schema fallback
// on a server that logs MINIMAL row metadata and runs in +03:00.
func TestIntegrationRenderMinimalMetadata(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server of its own")
	}
	m := testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{
		"--binlog-row-metadata=MINIMAL", "--default-time-zone=+03:00",
	}})
	golden := checkRenderAgainstServer(t, m, false)
	if !*update {
		checkGolden(t, golden)
	}
}

// BenchmarkAppendValue renders an INT, a VARCHAR and a DATETIME(6) value as
// go-mysql decodes them.
func BenchmarkAppendValue(b *testing.B) {
	cases := []struct {
		name string
		col  Column
		v    any
	}{
		{"int", Column{Name: "i", Type: mysql.MYSQL_TYPE_LONG}, any(int32(-1234567))},
		{"varchar", Column{Name: "s", Type: mysql.MYSQL_TYPE_VARCHAR, Meta: 400, Charset: "utf8mb4"}, any("a short varchar value")},
		{"datetime", Column{Name: "d", Type: mysql.MYSQL_TYPE_DATETIME2, Meta: 6}, any("2024-05-06 07:08:09.123456")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 64)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				buf, _, err = c.col.AppendValue(buf[:0], c.v)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestAppendValueDoesNotAllocate(t *testing.T) {
	cols := []struct {
		col Column
		v   any
	}{
		{Column{Type: mysql.MYSQL_TYPE_LONG}, any(int32(-7))},
		{Column{Type: mysql.MYSQL_TYPE_LONGLONG, Unsigned: true}, any(int64(-1))},
		{Column{Type: mysql.MYSQL_TYPE_VARCHAR, Charset: "utf8mb4"}, any("text")},
		{Column{Type: mysql.MYSQL_TYPE_VARCHAR, Charset: "latin1"}, any("caf\xe9")},
		{Column{Type: mysql.MYSQL_TYPE_BLOB, Charset: "binary"}, any([]byte{0, 0xFF})},
		{Column{Type: mysql.MYSQL_TYPE_DATETIME2, Meta: 3}, any("2024-05-06 07:08:09.123")},
		{Column{Type: mysql.MYSQL_TYPE_TIME2, Meta: 3}, any("-12:00:00")},
		{Column{Type: mysql.MYSQL_TYPE_DOUBLE}, any(0.1)},
	}
	buf := make([]byte, 0, 128)
	for _, c := range cols {
		allocs := testing.AllocsPerRun(100, func() {
			buf, _, _ = c.col.AppendValue(buf[:0], c.v)
		})
		if allocs != 0 {
			t.Errorf("AppendValue(%+v, %T) allocates %.1f times", c.col, c.v, allocs)
		}
	}
}
