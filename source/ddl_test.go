package source

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// comparable is what the source uses of a schema column, as information_schema and the tracker both give it.
type comparableColumn struct {
	Name, DataType, Charset string
	Unsigned                bool
	Precision, Scale, FSP   int
	Enum, Set               []string
	Generated               string
}

func comparableSchema(ts *TableSchema) (cols []comparableColumn, pk []string, charset string) {
	for _, c := range ts.Columns {
		cc := comparableColumn{Name: c.Name, DataType: c.DataType, Charset: c.Charset, Unsigned: c.Unsigned,
			Enum: c.EnumValues, Set: c.SetValues, Generated: c.Generated}
		switch c.DataType {
		case "decimal":
			cc.Precision, cc.Scale = c.Precision, c.Scale
		case "time", "datetime", "timestamp":
			cc.FSP = c.FSP
		}
		cols = append(cols, cc)
	}
	for _, k := range ts.PK {
		pk = append(pk, ts.Columns[k].Name)
	}
	return cols, pk, ts.DefaultCharset
}

// TestSchemaTrackerMatchesServer runs DDL statements on the real server and applies them to a tracked schema:
// after each one the tracked schema is what information_schema says (golden values from the server, not typed
// by hand). Statements the tracker does not understand make it forget the table.
func TestSchemaTrackerMatchesServer(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	db := m.NewDatabase(t)
	sdb := m.Root(t, db)
	ctx := context.Background()
	m.Exec(t, "CREATE TABLE "+db+".t (id INT NOT NULL PRIMARY KEY, a VARCHAR(10), b INT) DEFAULT CHARSET=utf8mb4")
	tr := newSchemaTracker("mariadb")
	ts, err := LoadTableSchema(ctx, sdb, db, "t")
	if err != nil {
		t.Fatal(err)
	}
	tr.put(ts)
	table := "t"
	for n, step := range []struct {
		ddl   string
		table string // the table's name after the statement, when it changes
	}{
		{ddl: "ALTER TABLE t ADD COLUMN c VARCHAR(10) DEFAULT 'cdef'"},
		{ddl: "ALTER TABLE t ADD COLUMN d DECIMAL(12,3) UNSIGNED FIRST, ADD COLUMN e DATETIME(4) AFTER a"},
		{ddl: "ALTER TABLE t DROP COLUMN a"},
		{ddl: "ALTER TABLE t RENAME COLUMN b TO bb"},
		{ddl: "ALTER TABLE t CHANGE COLUMN bb b2 BIGINT UNSIGNED NOT NULL"},
		{ddl: "ALTER TABLE t MODIFY b2 TEXT CHARACTER SET latin1 AFTER id"},
		{ddl: "ALTER TABLE t ADD COLUMN en ENUM('x','y''z') COLLATE utf8mb4_bin, ADD COLUMN st SET('p','q'), " +
			"ADD COLUMN bl BLOB, ADD COLUMN vb VARBINARY(8), ADD COLUMN g INT AS (id * 2) VIRTUAL, ADD COLUMN js JSON, " +
			"ADD COLUMN tm TIME(2), ADD COLUMN ts TIMESTAMP(6) NULL, ADD COLUMN yr YEAR, ADD COLUMN bt BIT(5), " +
			"ADD COLUMN fl FLOAT, ADD COLUMN db DOUBLE, ADD COLUMN ch CHAR(3) CHARACTER SET ascii, ADD COLUMN bn BINARY(4), " +
			"ADD COLUMN tt TINYTEXT, ADD COLUMN mb MEDIUMBLOB, ADD COLUMN gs INT AS (id + 1) STORED"},
		{ddl: "ALTER TABLE t DEFAULT CHARSET = latin1"},
		{ddl: "ALTER TABLE t ADD COLUMN l VARCHAR(5) NOT NULL DEFAULT ''"},
		{ddl: "ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (id, l)"},
		{ddl: "ALTER TABLE t ADD INDEX ix (c), ALGORITHM=INPLACE"},
		{ddl: "ALTER TABLE t MODIFY COLUMN l VARCHAR(8) NOT NULL FIRST"},
		{ddl: "ALTER TABLE t CHANGE l l2 VARCHAR(8) NOT NULL"},
		{ddl: "RENAME TABLE t TO t2", table: "t2"},
		{ddl: "ALTER TABLE t2 RENAME TO t3, ADD COLUMN z SMALLINT", table: "t3"},
		{ddl: "ALTER TABLE t3 DROP COLUMN IF EXISTS nosuch, ADD COLUMN IF NOT EXISTS z INT"},
		{ddl: "ALTER TABLE t3 ALTER COLUMN c SET DEFAULT 'x', DROP INDEX ix"},
		{ddl: "TRUNCATE TABLE t3"},
	} {
		if _, err := sdb.Exec(step.ddl); err != nil {
			t.Fatalf("%s: %v", step.ddl, err)
		}
		if forgot := tr.apply(db, step.ddl, 1, uint32(100*(n+1))); forgot != nil {
			t.Fatalf("%s: the tracker forgot %v", step.ddl, forgot)
		}
		if step.table != "" {
			if tr.get(db, table) != nil {
				t.Fatalf("%s: %s is still tracked", step.ddl, table)
			}
			table = step.table
		}
		server, err := LoadTableSchema(ctx, sdb, db, table)
		if err != nil {
			t.Fatal(err)
		}
		got := tr.get(db, table)
		if got == nil {
			t.Fatalf("%s: %s is not tracked", step.ddl, table)
		}
		gc, gpk, gcs := comparableSchema(got)
		wc, wpk, wcs := comparableSchema(server)
		if !reflect.DeepEqual(gc, wc) || !reflect.DeepEqual(gpk, wpk) || gcs != wcs {
			t.Fatalf("after %s:\ntracked %+v key %v charset %s\nserver  %+v key %v charset %s", step.ddl, gc, gpk, gcs,
				wc, wpk, wcs)
		}
	}

	// What it does not understand, it forgets.
	for _, c := range []struct{ ddl, forgot string }{
		{"ALTER TABLE t3 CONVERT TO CHARACTER SET utf8mb4", db + ".t3"},
		{"ALTER TABLE t3 ADD COLUMN u UUID", "*"}, // MariaDB-only syntax: the parser refuses it
	} {
		ts, err := LoadTableSchema(ctx, sdb, db, "t3")
		if err != nil {
			t.Fatal(err)
		}
		tr.put(ts)
		if _, err := sdb.Exec(c.ddl); err != nil {
			t.Fatalf("%s: %v", c.ddl, err)
		}
		if forgot := tr.apply(db, c.ddl, 2, 100); fmt.Sprint(forgot) != "["+c.forgot+"]" || tr.get(db, "t3") != nil {
			t.Errorf("%s: forgot %v, want [%s] and no schema of t3", c.ddl, forgot, c.forgot)
		}
	}
	ts, _ = LoadTableSchema(ctx, sdb, db, "t3")
	tr.put(ts)
	if _, err := sdb.Exec("DROP TABLE t3"); err != nil {
		t.Fatal(err)
	}
	if tr.apply(db, "DROP TABLE t3", 3, 100); tr.get(db, "t3") != nil {
		t.Error("a dropped table is still tracked")
	}
}

// TestSchemaTrackerCreateTable: a table created in the binlog is tracked from its CREATE TABLE as the server
// describes it (golden values from the server), including columns that take the database's character set; what
// the statement cannot tell (CREATE TABLE ... SELECT, LIKE an untracked table) is left to information_schema.
func TestSchemaTrackerCreateTable(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	db := m.NewDatabase(t)
	sdb := m.Root(t, db)
	ctx := context.Background()
	if _, err := sdb.Exec("ALTER DATABASE " + db + " CHARACTER SET latin1"); err != nil {
		t.Fatal(err)
	}
	tr := newSchemaTracker("mariadb")
	tr.all = true
	tr.include = func(_, table string) bool { return table != "skipped" }
	tr.dbCharset = func(d string) string {
		var cs string
		if err := sdb.QueryRow("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", d).Scan(&cs); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	for n, c := range []struct{ table, ddl string }{
		{"c1", "CREATE TABLE c1 (id INT PRIMARY KEY, a VARCHAR(10), b TEXT CHARACTER SET utf8mb4, e ENUM('x','y'))"},
		{"c2", "CREATE TABLE IF NOT EXISTS c2 (k1 BIGINT UNSIGNED NOT NULL, k2 VARCHAR(20) NOT NULL, d DECIMAL(65,30), " +
			"ts TIMESTAMP(3) NULL, js JSON, bn BINARY(4), g INT AS (k1 + 1) PERSISTENT, INDEX (d), " +
			"PRIMARY KEY (k2, k1)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"},
		{"c3", "CREATE TABLE c3 (id INT NOT NULL, s SET('p','q') COLLATE utf8mb4_bin, CONSTRAINT pk PRIMARY KEY (id)) CHARSET latin1"},
		{"c4", "CREATE TABLE c4 LIKE c2"},
		{"c5", "CREATE OR REPLACE TABLE c5 (id INT PRIMARY KEY, v VARCHAR(3) CHARACTER SET ascii)"},
	} {
		if _, err := sdb.Exec(c.ddl); err != nil {
			t.Fatalf("%s: %v", c.ddl, err)
		}
		if forgot := tr.apply(db, c.ddl, 1, uint32(100*(n+1))); forgot != nil {
			t.Fatalf("%s: the tracker forgot %v", c.ddl, forgot)
		}
		got := tr.get(db, c.table)
		if got == nil {
			t.Fatalf("%s: %s is not tracked", c.ddl, c.table)
		}
		server, err := LoadTableSchema(ctx, sdb, db, c.table)
		if err != nil {
			t.Fatal(err)
		}
		gc, gpk, gcs := comparableSchema(got)
		wc, wpk, wcs := comparableSchema(server)
		if !reflect.DeepEqual(gc, wc) || !reflect.DeepEqual(gpk, wpk) || gcs != wcs {
			t.Fatalf("after %s:\ntracked %+v key %v charset %s\nserver  %+v key %v charset %s", c.ddl, gc, gpk, gcs,
				wc, wpk, wcs)
		}
	}
	for _, c := range []struct{ ddl, table, forgot string }{
		{"CREATE TABLE c6 AS SELECT id, a FROM c1", "c6", "[" + db + ".c6]"},
		{"CREATE TABLE skipped (id INT PRIMARY KEY)", "skipped", "[]"}, // not replicated: not tracked, no warning
	} {
		if _, err := sdb.Exec(c.ddl); err != nil {
			t.Fatalf("%s: %v", c.ddl, err)
		}
		if forgot := tr.apply(db, c.ddl, 2, 100); fmt.Sprint(forgot) != c.forgot || tr.get(db, c.table) != nil {
			t.Errorf("%s: forgot %v (want %s), tracked %v", c.ddl, forgot, c.forgot, tr.get(db, c.table))
		}
	}
	// A tracked table is not replaced by a CREATE TABLE IF NOT EXISTS.
	before := tr.get(db, "c1")
	tr.apply(db, "CREATE TABLE IF NOT EXISTS c1 (other INT PRIMARY KEY)", 3, 100)
	if tr.get(db, "c1") != before {
		t.Error("CREATE TABLE IF NOT EXISTS of a tracked table changed it")
	}
}

// TestSchemaTrackerReplay: a DDL statement read again after a reconnect is recognised by its position.
func TestSchemaTrackerReplay(t *testing.T) {
	tr := newSchemaTracker("mariadb")
	if tr.seen(3, 100) || !tr.seen(3, 100) || !tr.seen(2, 900) || tr.seen(3, 101) || tr.seen(4, 4) || !tr.seen(3, 5000) {
		t.Fatal("positions of applied statements are not remembered in binlog order")
	}
}

// TestSchemaTrackerRewind: a reconnect that resumes before DDL statements already applied gets the schemas as
// they were there, and the statements apply again when read.
func TestSchemaTrackerRewind(t *testing.T) {
	tr := newSchemaTracker("mysql")
	tr.put(&TableSchema{Schema: "d", Table: "t", DefaultCharset: "utf8mb4",
		Columns: []SchemaColumn{{Name: "id", DataType: "int"}}, PK: []int{0}})
	step := func(file, pos uint32, ddl string) {
		t.Helper()
		if tr.seen(file, pos) {
			t.Fatalf("%s at %d:%d taken for a replay", ddl, file, pos)
		}
		if forgot := tr.apply("d", ddl, file, pos); forgot != nil {
			t.Fatalf("%s: forgot %v", ddl, forgot)
		}
	}
	names := func() []string {
		var out []string
		for _, c := range tr.get("d", "t").Columns {
			out = append(out, c.Name)
		}
		return out
	}
	step(1, 100, "ALTER TABLE t ADD COLUMN a INT")
	step(1, 200, "ALTER TABLE t ADD COLUMN b INT")
	step(2, 50, "ALTER TABLE t DROP COLUMN a")
	if got := fmt.Sprint(names()); got != "[id b]" {
		t.Fatalf("columns %s", got)
	}
	tr.rewind(1, 150) // resume between the first two statements
	if got := fmt.Sprint(names()); got != "[id a]" {
		t.Fatalf("after the rewind: columns %s, want [id a]", got)
	}
	if !tr.seen(1, 100) { // applied before the resume point, and not read again
		t.Fatal("the statement before the resume point was forgotten")
	}
	step(1, 200, "ALTER TABLE t ADD COLUMN b INT") // read again: applied again
	if got := fmt.Sprint(names()); got != "[id a b]" {
		t.Fatalf("after the statement again: columns %s", got)
	}
	tr.rewind(0, 0) // unknown position: forget all
	if tr.get("d", "t") != nil {
		t.Fatal("a rewind to an unknown position kept a schema")
	}
}

// TestSchemaTrackerRestore: the schemas saved with their positions come back as they were at a restart's start
// position; a statement after it, read again, applies to them; another epoch's are not used.
func TestSchemaTrackerRestore(t *testing.T) {
	tr := newSchemaTracker("mysql")
	tr.putAt(&TableSchema{Schema: "d", Table: "t", DefaultCharset: "utf8mb4",
		Columns: []SchemaColumn{{Name: "id", DataType: "int"}}, PK: []int{0}}, 1, 50)
	for i, ddl := range []string{"ALTER TABLE t ADD COLUMN a INT", "ALTER TABLE t RENAME COLUMN a TO b",
		"RENAME TABLE t TO u"} {
		pos := uint32(100 * (i + 1))
		tr.seen(1, pos)
		if forgot := tr.apply("d", ddl, 1, pos); forgot != nil {
			t.Fatalf("%s: forgot %v", ddl, forgot)
		}
	}
	saved, err := tr.marshal(3)
	if err != nil {
		t.Fatal(err)
	}
	columns := func(tr *schemaTracker, table string) string {
		ts := tr.get("d", table)
		if ts == nil {
			return "untracked"
		}
		var names []string
		for _, c := range ts.Columns {
			names = append(names, c.Name)
		}
		return fmt.Sprint(names)
	}
	for _, c := range []struct {
		pos  uint32
		t, u string
	}{
		{40, "untracked", "untracked"}, // before the table was met
		{50, "[id]", "untracked"},
		{150, "[id a]", "untracked"},
		{200, "[id b]", "untracked"},
		{300, "untracked", "[id b]"},
	} {
		r := newSchemaTracker("mysql")
		if _, err := r.restore(saved, 3, 1, c.pos); err != nil {
			t.Fatal(err)
		}
		if got, gotU := columns(r, "t"), columns(r, "u"); got != c.t || gotU != c.u {
			t.Errorf("restored at 1:%d: t %s, u %s; want %s, %s", c.pos, got, gotU, c.t, c.u)
		}
	}
	// A restart at 150 reads the rename again: it applies, and is recorded again.
	r := newSchemaTracker("mysql")
	r.restore(saved, 3, 1, 150)
	r.seen(1, 200)
	r.apply("d", "ALTER TABLE t RENAME COLUMN a TO b", 1, 200)
	if got := columns(r, "t"); got != "[id b]" {
		t.Errorf("after the rename read again: %s", got)
	}
	if n := len(r.hist["d.t"]); n != 3 || r.hist["d.t"][2].Pos != 200 {
		t.Errorf("versions of t after the replay: %+v, want 50, 100 and 200 once each", r.hist["d.t"])
	}
	if n, _ := newSchemaTracker("mysql").restore(saved, 4, 1, 300); n != 0 {
		t.Error("schemas of another epoch were restored")
	}
}

// TestSchemaTrackerStatements: statements that leave a tracked table's columns alone keep it tracked (XA,
// routines, temporary tables, CREATE TABLE IF NOT EXISTS of an existing table, partitions), MariaDB-only forms are
// understood, dropping the index PRIMARY drops the key, and table names compare as lower_case_table_names says.
func TestSchemaTrackerStatements(t *testing.T) {
	base := func() *TableSchema {
		return &TableSchema{Schema: "d", Table: "t", DefaultCharset: "utf8mb4",
			Columns: []SchemaColumn{{Name: "id", DataType: "int"}, {Name: "a", DataType: "int"}}, PK: []int{0}}
	}
	for _, q := range []string{
		"XA START X'31',X'',1", "XA COMMIT X'31',X'',1", "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @x = 1",
		"CREATE DEFINER=`root`@`%` PROCEDURE p() SELECT 1", "GRANT SELECT ON *.* TO u", "REPAIR TABLE t",
		"DROP TEMPORARY TABLE IF EXISTS t", "CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY)",
		"CREATE TEMPORARY TABLE t (x INT)", "ALTER TABLE t TRUNCATE PARTITION p0", "CREATE INDEX ix ON t (a)",
		"/* comment */ ALTER ONLINE TABLE t ADD INDEX (a), ALGORITHM=NOCOPY",
	} {
		tr := newSchemaTracker("mariadb")
		tr.put(base())
		if forgot := tr.apply("d", q, 1, 100); forgot != nil || tr.get("d", "t") == nil ||
			len(tr.get("d", "t").Columns) != 2 {
			t.Errorf("%s: forgot %v, tracked %+v; want t kept as it was", q, forgot, tr.get("d", "t"))
		}
	}
	for _, c := range []struct{ q, want string }{
		{"ALTER ONLINE TABLE t ADD COLUMN g INT AS (id + 1) PERSISTENT", "[id a g]"},
		{"CREATE OR REPLACE TABLE t (id INT)", "[id]"}, // the new table, from the statement
		{"CREATE OR REPLACE TABLE t SELECT 1 AS x", "untracked"},
	} {
		tr := newSchemaTracker("mariadb")
		tr.put(base())
		tr.apply("d", c.q, 1, 100)
		got := "untracked"
		if ts := tr.get("d", "t"); ts != nil {
			var names []string
			for _, col := range ts.Columns {
				names = append(names, col.Name)
			}
			got = fmt.Sprint(names)
		}
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.q, got, c.want)
		}
	}
	for _, q := range []string{"ALTER TABLE t DROP INDEX `PRIMARY`", "DROP INDEX `PRIMARY` ON t"} {
		tr := newSchemaTracker("mariadb")
		tr.put(base())
		if tr.apply("d", q, 1, 100); tr.get("d", "t") == nil || len(tr.get("d", "t").PK) != 0 {
			t.Errorf("%s: key %v, want none", q, tr.get("d", "t"))
		}
	}

	// lower_case_table_names=0: Users and users are two tables.
	tr := newSchemaTracker("mariadb")
	tr.put(base())
	upper := base()
	upper.Table = "T"
	tr.put(upper)
	tr.apply("d", "DROP TABLE t", 1, 100)
	if tr.get("d", "T") == nil || tr.get("d", "t") != nil {
		t.Error("dropping t forgot T (case-sensitive names)")
	}
	// lower_case_table_names=1: one table, however written.
	tr = newSchemaTracker("mariadb")
	tr.fold = true
	tr.put(base())
	tr.apply("d", "ALTER TABLE T ADD COLUMN b INT", 1, 100)
	if ts := tr.get("d", "t"); ts == nil || len(ts.Columns) != 3 {
		t.Errorf("ALTER TABLE T did not change t with folded names: %+v", ts)
	}
}

// TestSchemaTrackerRewindPastUndo: a rewind to before a statement whose snapshot was dropped (more than maxUndo
// statements since) forgets the schemas instead of applying that statement twice.
func TestSchemaTrackerRewindPastUndo(t *testing.T) {
	tr := newSchemaTracker("mysql")
	tr.put(&TableSchema{Schema: "d", Table: "t", Columns: []SchemaColumn{{Name: "id", DataType: "int"}}, PK: []int{0}})
	for i := range maxUndo + 5 {
		pos := uint32(100 * (i + 1))
		tr.seen(1, pos)
		tr.apply("d", fmt.Sprintf("ALTER TABLE t ADD COLUMN c%d INT", i), 1, pos)
	}
	tr.rewind(1, 100*(maxUndo+2)+50) // within the snapshots kept
	if ts := tr.get("d", "t"); ts == nil || len(ts.Columns) != 1+maxUndo+2 {
		t.Fatalf("after a rewind within the undo: %d columns", len(tr.get("d", "t").Columns))
	}
	tr.rewind(1, 150) // before dropped snapshots
	if tr.get("d", "t") != nil {
		t.Fatal("a rewind past the kept snapshots kept a schema")
	}
}
