package source

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// bareTableMap is a table map of db.t without optional metadata: INT,
// VARCHAR(40), DECIMAL(10,2).
func bareTableMap() *replication.TableMapEvent {
	return &replication.TableMapEvent{
		Schema: []byte("db"), Table: []byte("t"), ColumnCount: 3,
		ColumnType: []byte{mysql.MYSQL_TYPE_LONG, mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_NEWDECIMAL},
		ColumnMeta: []uint16{0, 160, 10<<8 | 2},
	}
}

func matchingSchema() *TableSchema {
	return &TableSchema{Schema: "db", Table: "t", PK: []int{0}, Columns: []SchemaColumn{
		{Name: "id", DataType: "int", ColumnType: "int(10) unsigned", Unsigned: true},
		{Name: "name", DataType: "varchar", ColumnType: "varchar(40)", Charset: "latin1"},
		{Name: "price", DataType: "decimal", ColumnType: "decimal(10,2)", Precision: 10, Scale: 2},
	}}
}

func TestResolveColumnsFromSchema(t *testing.T) {
	cols, pk, err := ResolveColumns(bareTableMap(), matchingSchema())
	if err != nil {
		t.Fatal(err)
	}
	want := []Column{
		{Name: "id", Type: mysql.MYSQL_TYPE_LONG, Unsigned: true},
		{Name: "name", Type: mysql.MYSQL_TYPE_VARCHAR, Meta: 160, Charset: "latin1"},
		{Name: "price", Type: mysql.MYSQL_TYPE_NEWDECIMAL, Meta: 10<<8 | 2},
	}
	if !reflect.DeepEqual(cols, want) || !reflect.DeepEqual(pk, []int{0}) {
		t.Fatalf("got %+v pk %v, want %+v pk [0]", cols, pk, want)
	}
}

func TestResolveColumnsRefusesMisalignedSchema(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(*TableSchema)
		want string
	}{
		"no schema": {nil, "the table map carries no column names and no schema was given; set binlog_row_metadata=FULL"},
		"column added": {func(s *TableSchema) {
			s.Columns = append(s.Columns, SchemaColumn{Name: "extra", DataType: "int"})
		}, "cannot determine column names of db.t: the table map has 3 columns but the schema has 4; set binlog_row_metadata=FULL on the server"},
		"columns swapped": {func(s *TableSchema) {
			s.Columns[0], s.Columns[1] = s.Columns[1], s.Columns[0]
		}, "cannot determine column names of db.t: column 1 (name)"},
		"scale changed": {func(s *TableSchema) {
			s.Columns[2].Scale, s.Columns[2].ColumnType = 3, "decimal(10,3)"
		}, "column 3 (price): the schema says decimal(10,3) but the table map has decimal(10,2)"},
		"unknown type": {func(s *TableSchema) {
			s.Columns[0].DataType = "vector2"
		}, "unsupported data type vector2"},
		"unsupported charset": {func(s *TableSchema) {
			s.Columns[1].Charset = "big5"
		}, "column name has character set big5"},
	} {
		t.Run(name, func(t *testing.T) {
			var s *TableSchema
			if c.edit != nil {
				s = matchingSchema()
				c.edit(s)
			}
			cols, _, err := ResolveColumns(bareTableMap(), s)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", cols, err, c.want)
			}
		})
	}
}

func TestResolveColumnsNoPrimaryKey(t *testing.T) {
	s := matchingSchema()
	s.PK = nil
	if _, _, err := ResolveColumns(bareTableMap(), s); !errors.Is(err, ErrNoPrimaryKey) {
		t.Errorf("schema without a key: %v, want ErrNoPrimaryKey", err)
	}
	tm := bareTableMap()
	tm.ColumnName = [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	tm.DefaultCharset = []uint64{45}
	// The table map is authoritative once it carries names, even with a schema that has a key.
	if _, _, err := ResolveColumns(tm, matchingSchema()); !errors.Is(err, ErrNoPrimaryKey) {
		t.Errorf("full table map without a key: %v, want ErrNoPrimaryKey", err)
	}
}

func TestResolveColumnsFromFullTableMap(t *testing.T) {
	tm := &replication.TableMapEvent{
		Schema: []byte("db"), Table: []byte("t"), ColumnCount: 4,
		ColumnType: []byte{mysql.MYSQL_TYPE_LONG, mysql.MYSQL_TYPE_STRING, mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_LONG},
		ColumnMeta: []uint16{0, uint16(mysql.MYSQL_TYPE_ENUM)<<8 | 1, 40, 0},
		ColumnName: [][]byte{[]byte("a"), []byte("e"), []byte("v"), []byte("b")},
		// a unsigned, b signed (only numeric columns take a bit)
		SignednessBitmap: []byte{0x80},
		// default latin1 (8); the first character column (v) is utf8mb4 (45)
		DefaultCharset:        []uint64{8, 0, 45},
		EnumSetDefaultCharset: []uint64{8},
		EnumStrValue:          [][][]byte{{[]byte("caf\xe9"), []byte("\x80")}},
		PrimaryKey:            []uint64{3, 0},
	}
	// A stale schema with another column count is ignored: the table map has everything.
	stale := &TableSchema{Columns: []SchemaColumn{{Name: "x", DataType: "int"}}}
	cols, pk, err := ResolveColumns(tm, stale)
	if err != nil {
		t.Fatal(err)
	}
	want := []Column{
		{Name: "a", Type: mysql.MYSQL_TYPE_LONG, Unsigned: true},
		{Name: "e", Type: mysql.MYSQL_TYPE_STRING, Meta: tm.ColumnMeta[1], Charset: "latin1", EnumValues: []string{"café", "€"}},
		{Name: "v", Type: mysql.MYSQL_TYPE_VARCHAR, Meta: 40, Charset: "utf8mb4"},
		{Name: "b", Type: mysql.MYSQL_TYPE_LONG},
	}
	if !reflect.DeepEqual(cols, want) || !reflect.DeepEqual(pk, []int{3, 0}) {
		t.Fatalf("got %+v pk %v\nwant %+v pk [3 0]", cols, pk, want)
	}

	tm.DefaultCharset = []uint64{45, 0, 35} // v is ucs2_general_ci
	if cols, _, err := ResolveColumns(tm, nil); err != nil || cols[2].Charset != "ucs2" {
		t.Errorf("ucs2 column: %v, %+v", err, cols)
	}
	tm.DefaultCharset = []uint64{45, 0, 28} // v is gbk_chinese_ci
	if _, _, err := ResolveColumns(tm, nil); err == nil || !strings.Contains(err.Error(), "character set gbk") ||
		!strings.Contains(err.Error(), "CONVERT TO CHARACTER SET utf8mb4") {
		t.Errorf("gbk column: %v, want an error naming gbk and the fix", err)
	}
	tm.DefaultCharset = []uint64{45, 0, 4000}
	if _, _, err := ResolveColumns(tm, nil); err == nil || !strings.Contains(err.Error(), "collation id 4000") {
		t.Errorf("unknown collation: %v, want an error naming collation id 4000", err)
	}
}

func TestParseLabels(t *testing.T) {
	for in, want := range map[string][]string{
		"enum('a','b')":                      {"a", "b"},
		"enum('a''b','c\\\\d','x,y','')":     {"a'b", `c\d`, "x,y", ""},
		"set('é','€ ','\\n')":                {"é", "€ ", "\n"},
		"enum('it''s ''quoted''','(paren)')": {"it's 'quoted'", "(paren)"},
	} {
		got, err := parseLabels(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseLabels(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"enum", "enum('a'", "enum('a' 'b')", "enum(a)"} {
		if got, err := parseLabels(bad); err == nil {
			t.Errorf("parseLabels(%q) = %q, want an error", bad, got)
		}
	}
}

func TestCollationCharsetCoversServer(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	db := m.Root(t, "")
	rows, err := db.Query(`SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY
		WHERE CHARACTER_SET_NAME IN ('utf8mb4', 'utf8mb3', 'latin1', 'ascii', 'binary')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id uint64
		var cs string
		if err := rows.Scan(&id, &cs); err != nil {
			t.Fatal(err)
		}
		if got := collationCharset(id); got != cs {
			t.Errorf("collation %d: %q, want %q", id, got, cs)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 50 {
		t.Fatalf("only %d collations checked", n)
	}
}

func TestIntegrationLoadTableSchema(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	dbName := m.NewDatabase(t)
	db := m.Root(t, dbName)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mustExec(t, ctx, db, `CREATE TABLE s (
		a INT UNSIGNED NOT NULL,
		b VARCHAR(10) CHARACTER SET latin1 NOT NULL,
		e ENUM('a''b','c\\d','x,y','nl
x','é') CHARACTER SET utf8mb4,
		st SET('p','q''r'),
		vb VARBINARY(8), bl BLOB, tx TEXT CHARACTER SET ascii,
		d DECIMAL(12,4), dt DATETIME(3), j JSON,
		gv INT AS (a + 1) VIRTUAL, gs INT AS (a + 2) STORED,
		PRIMARY KEY (b, a))`)
	ts, err := LoadTableSchema(ctx, db, dbName, "s")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ts.PK, []int{1, 0}) {
		t.Errorf("PK %v, want [1 0] (b, a)", ts.PK)
	}
	byName := map[string]SchemaColumn{}
	for _, c := range ts.Columns {
		byName[c.Name] = c
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	check("a unsigned", byName["a"].Unsigned, true)
	check("b charset", byName["b"].Charset, "latin1")
	check("vb charset", byName["vb"].Charset, "binary")
	check("bl charset", byName["bl"].Charset, "binary")
	check("tx charset", byName["tx"].Charset, "ascii")
	check("d precision/scale", [2]int{byName["d"].Precision, byName["d"].Scale}, [2]int{12, 4})
	check("dt fsp", byName["dt"].FSP, 3)
	check("j type", byName["j"].DataType, "longtext") // MariaDB's JSON is LONGTEXT
	check("gv", byName["gv"].Generated, "VIRTUAL")
	check("gs", byName["gs"].Generated, "STORED")
	check("a generated", byName["a"].Generated, "")

	// The labels must be what the server prints for each index.
	labels := byName["e"].EnumValues
	if len(labels) != 5 {
		t.Fatalf("enum labels %q", labels)
	}
	for i, want := range labels {
		mustExec(t, ctx, db, fmt.Sprintf("INSERT INTO s (a, b, e) VALUES (%d, 'e', %d)", 100+i, i+1))
		var got string
		if err := db.QueryRowContext(ctx, "SELECT e FROM s WHERE a = ?", 100+i).Scan(&got); err != nil {
			t.Fatal(err)
		}
		check("enum label", want, got)
	}
	mustExec(t, ctx, db, "INSERT INTO s (a, b, st) VALUES (1, 'x', 3)")
	var set string
	if err := db.QueryRowContext(ctx, "SELECT st FROM s WHERE a = 1").Scan(&set); err != nil {
		t.Fatal(err)
	}
	check("set labels", strings.Join(byName["st"].SetValues, ","), set)

	if _, err := LoadTableSchema(ctx, db, dbName, "missing"); err == nil {
		t.Error("missing table: no error")
	}
}

// TestResolveColumnsSchemaFillsGapsOnlyWhenItAgrees: a complete table map
// without charset metadata takes the charset from a schema describing the same
// columns, and ignores a schema describing other ones.
func TestResolveColumnsSchemaFillsGapsOnlyWhenItAgrees(t *testing.T) {
	tm := bareTableMap()
	tm.ColumnName = [][]byte{[]byte("id"), []byte("name"), []byte("price")}
	tm.PrimaryKey = []uint64{0}
	cols, _, err := ResolveColumns(tm, matchingSchema())
	if err != nil || cols[1].Charset != "latin1" {
		t.Fatalf("matching schema: %+v, %v; want name in latin1", cols, err)
	}
	other := matchingSchema()
	other.Columns[1].Name = "renamed"
	if cols, _, err := ResolveColumns(tm, other); err == nil || !strings.Contains(err.Error(), "character set of column name is unknown") {
		t.Fatalf("disagreeing schema: %+v, %v; want the charset to stay unknown", cols, err)
	}
}

// TestProject checks the column rules: include, exclude and rename pick and name the fields, and the rules that
// would lose the key or clash with metadata or each other are errors naming the fix.
func TestProject(t *testing.T) {
	cols := []Column{{Name: "id"}, {Name: "a"}, {Name: "b"}, {Name: "c"}}
	pk := []int{0}
	tb, keep, err := project("d", "t", cols, pk, &ColumnRule{Include: []string{"id", "b", "c"}, Exclude: []string{"c"},
		Rename: map[string]string{"b": "bee"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tb.Columns, []string{"id", "bee"}) || !slices.Equal(keep, []int{0, 2}) || !slices.Equal(tb.PK, []int{0}) {
		t.Fatalf("fields %v from columns %v, key %v", tb.Columns, keep, tb.PK)
	}
	tb, _, err = project("d", "t", cols, []int{2}, &ColumnRule{Exclude: []string{"a"}})
	if err != nil || !slices.Equal(tb.Columns, []string{"id", "b", "c"}) || !slices.Equal(tb.PK, []int{1}) {
		t.Fatalf("exclude: fields %v, key %v, %v", tb.Columns, tb.PK, err)
	}
	for _, c := range []struct {
		rule *ColumnRule
		want string
	}{
		{&ColumnRule{Include: []string{"a", "b"}}, "remove primary-key column id"},
		{&ColumnRule{Exclude: []string{"id"}}, "remove primary-key column id"},
		{&ColumnRule{Rename: map[string]string{"a": "_a"}}, "starts with '_'"},
		{&ColumnRule{Rename: map[string]string{"a": "b"}}, "both map to field \"b\""},
	} {
		if _, _, err := project("d", "t", cols, pk, c.rule); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("rule %+v: %v, want an error with %q", c.rule, err, c.want)
		}
	}
}
