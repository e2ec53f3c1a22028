package source

import (
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	tmysql "github.com/pingcap/tidb/pkg/parser/mysql"
	_ "github.com/pingcap/tidb/pkg/parser/test_driver" // the parser's value expressions (column defaults)
)

// schemaTracker keeps the schemas of the tables whose table maps carry no column names
// (binlog_row_metadata=MINIMAL or NO_LOG) across DDL: a table's schema is read from information_schema when the
// stream first meets it, and from then on each ALTER TABLE, RENAME TABLE and DROP TABLE in the binlog is applied
// to it. information_schema describes the table as it is now, which is not the shape of the rows the stream reads
// when DDL ran since (the stream behind, or several DDL statements in a row): reading it again after each DDL, as
// the source did before, named the columns of older rows after a later schema.
//
// A start at the server's current position reads every replicated table from information_schema at once (the
// schemas there are those of the start position), and CREATE TABLE starts tracking a new table from the
// statement, so a table the stream first meets after later DDL is still named as it was. A statement the tracker
// cannot parse or apply (MariaDB-only syntax, CONVERT TO a character set, CREATE TABLE ... SELECT) makes it
// forget the tables concerned, or every table when it cannot tell which; they are read from information_schema
// again when next met, and the table map check (ResolveColumns) still refuses a schema whose columns do not
// match the rows.
//
// It lives in the Source, across reconnects. A reconnect resumes at the last boundary handed out, which may lie
// before DDL statements already applied: rewind restores the schemas as they were there, and the statements are
// applied again as they are read.
//
// Across restarts it keeps each table's schemas by the position from which they hold (hist), saved beside the
// checkpoint (SchemaStore): a restart takes the schemas as they were at its start position, and the DDL
// statements after it, read again, are applied again. Saving is best effort: a version lost in a crash is one a
// restart does not need (its statement comes again after the checkpoint) or, for a table met for the first time,
// is read from information_schema again.
type schemaTracker struct {
	flavor string
	// fold says table names compare in lower case (lower_case_table_names 1 or 2); with 0 (Linux's default)
	// Users and users are two tables.
	fold bool
	// tables are the tracked schemas by "db.table" (lower case); a schema is never changed once tracked (alter
	// works on a clone), so snapshots share them.
	tables map[string]*TableSchema
	// applied is the position (file sequence, end offset) of the newest DDL statement applied.
	appliedFile uint32
	appliedPos  uint32
	// undo holds the tables as they were before each of the last DDL statements applied, oldest first;
	// evictedFile/evictedPos is the newest statement whose snapshot was dropped for maxUndo.
	undo                    []trackerSnapshot
	evictedFile, evictedPos uint32
	parser                  *parser.Parser
	// all says every replicated table is tracked (from a snapshot at a start at the server's current position,
	// or restored schemas), so the statements are applied even while no table is: a new table is tracked from
	// its CREATE TABLE.
	all bool
	// include says whether a table is replicated (Config.Tables): a CREATE TABLE of another is not tracked.
	include func(db, table string) bool
	// dbCharset returns a database's default character set ("" when unknown), for the columns of a CREATE TABLE
	// that name none.
	dbCharset func(db string) string
	// hist holds each table's schemas by the position from which they hold (nil: not known from there on), for
	// restarts; dirty says it changed since it was last saved.
	hist  map[string][]schemaVersion
	dirty bool
}

// schemaVersion is a table's schema from a position on (a transaction boundary: file sequence and offset).
type schemaVersion struct {
	File   uint32       `json:"file"`
	Pos    uint32       `json:"pos"`
	Schema *TableSchema `json:"schema"` // nil: not known from here on (read information_schema)
}

// savedSchemas is the stored form of hist. Epoch is the version epoch of the positions: after a failover they do
// not compare, and the saved schemas are not used.
type savedSchemas struct {
	Epoch  uint16                     `json:"epoch"`
	All    bool                       `json:"all,omitempty"` // schemaTracker.all
	Tables map[string][]schemaVersion `json:"tables"`
}

// maxVersions bounds the versions kept per table: a restart needs the one at its checkpoint, which is recent.
const maxVersions = 16

type trackerSnapshot struct {
	file, pos uint32 // the statement's end
	tables    map[string]*TableSchema
}

// maxUndo bounds the snapshots kept for rewinds: a reconnect resumes at most a queue's length of batches back,
// and DDL statements are rare.
const maxUndo = 256

func newSchemaTracker(flavor string) *schemaTracker {
	return &schemaTracker{flavor: flavor, tables: map[string]*TableSchema{}, hist: map[string][]schemaVersion{}}
}

// record notes that key's schema is ts (nil: unknown) from file:pos on. Versions at or after that position are
// dropped: they were recorded before a rewind, and are recorded again as their statements are read again.
func (t *schemaTracker) record(key string, file, pos uint32, ts *TableSchema) {
	vs := t.hist[key]
	i := len(vs)
	for i > 0 && (vs[i-1].File > file || vs[i-1].File == file && vs[i-1].Pos >= pos) {
		i--
	}
	vs = append(vs[:i], schemaVersion{File: file, Pos: pos, Schema: ts})
	if len(vs) > maxVersions {
		vs = vs[len(vs)-maxVersions:]
	}
	t.hist[key] = vs
	t.dirty = true
}

// marshal renders hist for saving.
func (t *schemaTracker) marshal(epoch uint16) ([]byte, error) {
	return json.Marshal(savedSchemas{Epoch: epoch, All: t.all, Tables: t.hist})
}

// restore loads saved schemas and tracks, of each table, the version that holds at file:pos (the start position).
// Schemas saved under another epoch are not used.
func (t *schemaTracker) restore(b []byte, epoch uint16, file, pos uint32) (int, error) {
	var saved savedSchemas
	if err := json.Unmarshal(b, &saved); err != nil {
		return 0, err
	}
	if saved.Epoch != epoch || saved.Tables == nil {
		return 0, nil
	}
	t.hist, t.all = saved.Tables, saved.All
	n := 0
	for key, vs := range saved.Tables {
		for i := len(vs) - 1; i >= 0; i-- {
			v := vs[i]
			if v.File < file || v.File == file && v.Pos <= pos {
				if v.Schema != nil {
					t.tables[key] = v.Schema
					n++
				}
				break
			}
		}
	}
	return n, nil
}

// key is the tracking key of db.table.
func (t *schemaTracker) key(db, table string) string {
	if t.fold {
		return strings.ToLower(db) + "." + strings.ToLower(table)
	}
	return db + "." + table
}

// get returns the tracked schema of db.table, nil when there is none.
func (t *schemaTracker) get(db, table string) *TableSchema { return t.tables[t.key(db, table)] }

// put tracks ts (read from information_schema).
func (t *schemaTracker) put(ts *TableSchema) { t.tables[t.key(ts.Schema, ts.Table)] = ts }

// putAt tracks ts, read for the transaction that starts at file:pos, and records it from there on.
func (t *schemaTracker) putAt(ts *TableSchema, file, pos uint32) {
	t.put(ts)
	t.record(t.key(ts.Schema, ts.Table), file, pos, ts)
}

// forget stops tracking db.table.
func (t *schemaTracker) forget(db, table string) { delete(t.tables, t.key(db, table)) }

// seen reports whether the DDL statement ending at file:pos was applied already, and otherwise records it, with
// the tables as they are before it (for rewind).
func (t *schemaTracker) seen(file, pos uint32) bool {
	if file < t.appliedFile || file == t.appliedFile && pos <= t.appliedPos {
		return true
	}
	t.appliedFile, t.appliedPos = file, pos
	if len(t.undo) == maxUndo {
		t.evictedFile, t.evictedPos = t.undo[0].file, t.undo[0].pos
		t.undo = slices.Delete(t.undo, 0, 1)
	}
	t.undo = append(t.undo, trackerSnapshot{file: file, pos: pos, tables: maps.Clone(t.tables)})
	return false
}

// rewind restores the schemas as they were at a boundary at file:pos (the stream resumes there): the DDL
// statements after it are undone, to be applied again when read. file 0 (unknown) forgets every schema.
func (t *schemaTracker) rewind(file, pos uint32) (lost bool) {
	for len(t.undo) > 0 {
		last := t.undo[len(t.undo)-1]
		if file != 0 && (last.file < file || last.file == file && last.pos <= pos) {
			break
		}
		t.tables = last.tables
		t.undo = t.undo[:len(t.undo)-1]
	}
	if file == 0 || file < t.evictedFile || file == t.evictedFile && pos < t.evictedPos {
		// Unknown, or before a statement whose snapshot was dropped: the schemas there are lost.
		lost = len(t.tables) > 0
		clear(t.tables)
		t.undo = nil
		t.evictedFile, t.evictedPos = 0, 0
	}
	t.appliedFile, t.appliedPos = 0, 0
	if len(t.undo) > 0 {
		t.appliedFile, t.appliedPos = t.undo[len(t.undo)-1].file, t.undo[len(t.undo)-1].pos
	}
	return lost
}

// apply applies a DDL query run with db as the current database, which ends at file:pos, to the tracked schemas,
// and records the schemas it changed from there on. It returns the tables it forgot (nil when every statement
// was understood); "*" means all of them.
func (t *schemaTracker) apply(db, query string, file, pos uint32) []string {
	if len(t.tables) == 0 && !t.all {
		return nil
	}
	before := maps.Clone(t.tables)
	defer func() {
		for k, v := range before {
			if now := t.tables[k]; now != v {
				t.record(k, file, pos, now)
			}
		}
		for k, v := range t.tables {
			if before[k] == nil {
				t.record(k, file, pos, v)
			}
		}
	}()
	if !columnStatement(query) {
		return nil
	}
	if t.parser == nil {
		t.parser = parser.New()
	}
	stmts, _, err := t.parser.Parse(mariadbToParser(query), "", "")
	if err != nil {
		clear(t.tables)
		return []string{"*"}
	}
	var forgot []string
	for _, s := range stmts {
		forgot = append(forgot, t.applyStmt(db, s)...)
	}
	return forgot
}

func (t *schemaTracker) applyStmt(db string, s ast.StmtNode) []string {
	name := func(tn *ast.TableName) (string, string) {
		if tn.Schema.O != "" {
			return tn.Schema.O, tn.Name.O
		}
		return db, tn.Name.O
	}
	switch s := s.(type) {
	case *ast.AlterTableStmt:
		d, n := name(s.Table)
		ts := t.get(d, n)
		if ts == nil {
			return nil
		}
		next := ts.clone()
		newName, ok := t.alter(next, s.Specs)
		if !ok {
			t.forget(d, n)
			return []string{d + "." + n}
		}
		t.forget(d, n)
		if newName != nil {
			next.Schema, next.Table = name(newName)
		}
		t.put(next)
	case *ast.RenameTableStmt:
		for _, tt := range s.TableToTables {
			od, on := name(tt.OldTable)
			if ts := t.get(od, on); ts != nil {
				t.forget(od, on)
				ts = ts.clone()
				ts.Schema, ts.Table = name(tt.NewTable)
				t.put(ts)
			}
		}
	case *ast.DropTableStmt:
		if s.TemporaryKeyword != ast.TemporaryNone {
			return nil // a temporary table hides the real one only in its session
		}
		for _, tn := range s.Tables {
			t.forget(name(tn))
		}
	case *ast.CreateTableStmt:
		d, n := name(s.Table)
		if s.TemporaryKeyword != ast.TemporaryNone || s.IfNotExists && t.get(d, n) != nil {
			return nil // a temporary table, or one that exists already: the tracked table is unchanged
		}
		t.forget(d, n)
		if t.include != nil && !t.include(d, n) {
			return nil
		}
		if ts := t.create(d, n, s, name); ts != nil {
			t.put(ts)
			return nil
		}
		// Read from information_schema when first met.
		return []string{d + "." + n}
	case *ast.DropIndexStmt:
		if strings.EqualFold(s.IndexName, "PRIMARY") {
			d, n := name(s.Table)
			if ts := t.get(d, n); ts != nil {
				next := ts.clone()
				next.PK = nil
				t.put(next)
			}
		}
	case *ast.DropDatabaseStmt:
		prefix := t.key(s.Name.O, "")
		for k := range t.tables {
			if strings.HasPrefix(k, prefix) {
				delete(t.tables, k)
			}
		}
	}
	// Other statements (indexes, TRUNCATE, users, views, databases, ...) do not change the columns of a table.
	return nil
}

// create returns the schema a CREATE TABLE statement gives the table db.table, nil when the tracker cannot tell
// (CREATE TABLE ... SELECT, LIKE a table it does not track, a column type it does not know, a character set it
// cannot find). A column without a character set takes the table's, else the database's (dbCharset: what the
// server says now, which an ALTER DATABASE since would make wrong; the table map check catches a mismatch).
func (t *schemaTracker) create(db, table string, s *ast.CreateTableStmt, name func(*ast.TableName) (string, string)) *TableSchema {
	if s.ReferTable != nil {
		ref := t.get(name(s.ReferTable))
		if ref == nil {
			return nil
		}
		ts := ref.clone()
		ts.Schema, ts.Table = db, table
		return ts
	}
	if s.Select != nil {
		return nil // the columns come from the query
	}
	ts := &TableSchema{Schema: db, Table: table}
	for _, o := range s.Options {
		switch o.Tp {
		case ast.TableOptionCharset:
			ts.DefaultCharset = normalizeCharset(o.StrValue)
		case ast.TableOptionCollate:
			if ts.DefaultCharset == "" {
				ts.DefaultCharset = normalizeCharset(collationCharsetName(o.StrValue))
			}
		}
	}
	if ts.DefaultCharset == "" && t.dbCharset != nil {
		ts.DefaultCharset = normalizeCharset(t.dbCharset(db))
	}
	specs := []*ast.AlterTableSpec{{Tp: ast.AlterTableAddColumns, NewColumns: s.Cols}}
	for _, c := range s.Constraints {
		specs = append(specs, &ast.AlterTableSpec{Tp: ast.AlterTableAddConstraint, Constraint: c})
	}
	if _, ok := t.alter(ts, specs); !ok || len(ts.Columns) == 0 {
		return nil
	}
	return ts
}

// alter applies the specs of an ALTER TABLE to ts. It returns the table's new name when the statement renames
// it, and false when a spec cannot be applied. The primary key is followed by column name while the columns
// move, and turned back into indexes at the end.
func (t *schemaTracker) alter(ts *TableSchema, specs []*ast.AlterTableSpec) (*ast.TableName, bool) {
	var renamed *ast.TableName
	pk := make([]string, len(ts.PK))
	for i, k := range ts.PK {
		pk[i] = ts.Columns[k].Name
	}
	renamePK := func(old, name string) {
		for i, k := range pk {
			if strings.EqualFold(k, old) {
				pk[i] = name
			}
		}
	}
	setPK := func(cons []*ast.Constraint) bool {
		for _, c := range cons {
			if c == nil || c.Tp != ast.ConstraintPrimaryKey {
				continue // other constraints leave the columns alone
			}
			var names []string
			for _, k := range c.Keys {
				if k.Column == nil {
					return false // an expression
				}
				names = append(names, k.Column.Name.O)
			}
			pk = names
		}
		return true
	}
	columnPK := func(cd *ast.ColumnDef) {
		for _, o := range cd.Options {
			if o.Tp == ast.ColumnOptionPrimaryKey {
				pk = []string{cd.Name.Name.O}
			}
		}
	}
	for _, sp := range specs {
		switch sp.Tp {
		case ast.AlterTableAddColumns:
			for i, cd := range sp.NewColumns {
				if sp.IfNotExists && ts.index(cd.Name.Name.O) >= 0 {
					continue
				}
				c, ok := t.column(ts, cd)
				if !ok || ts.index(c.Name) >= 0 {
					return nil, false
				}
				pos := sp.Position
				if len(sp.NewColumns) > 1 || i > 0 {
					pos = nil
				}
				if !ts.insert(c, pos) {
					return nil, false
				}
				columnPK(cd)
			}
			if !setPK(sp.NewConstraints) {
				return nil, false
			}
		case ast.AlterTableDropColumn:
			i := ts.index(sp.OldColumnName.Name.O)
			if i < 0 {
				if sp.IfExists {
					continue
				}
				return nil, false
			}
			ts.Columns = slices.Delete(ts.Columns, i, i+1)
		case ast.AlterTableModifyColumn, ast.AlterTableChangeColumn:
			if len(sp.NewColumns) != 1 {
				return nil, false
			}
			cd := sp.NewColumns[0]
			old := cd.Name.Name.O
			if sp.Tp == ast.AlterTableChangeColumn {
				old = sp.OldColumnName.Name.O
			}
			i := ts.index(old)
			if i < 0 {
				if sp.IfExists {
					continue
				}
				return nil, false
			}
			c, ok := t.column(ts, cd)
			if !ok {
				return nil, false
			}
			if j := ts.index(c.Name); j >= 0 && j != i {
				return nil, false
			}
			if sp.Position == nil || sp.Position.Tp == ast.ColumnPositionNone {
				ts.Columns[i] = c // in place
			} else {
				ts.Columns = slices.Delete(ts.Columns, i, i+1)
				if !ts.insert(c, sp.Position) {
					return nil, false
				}
			}
			renamePK(old, c.Name)
			columnPK(cd)
		case ast.AlterTableRenameColumn:
			i := ts.index(sp.OldColumnName.Name.O)
			if i < 0 || ts.index(sp.NewColumnName.Name.O) >= 0 {
				return nil, false
			}
			ts.Columns[i].Name = sp.NewColumnName.Name.O
			renamePK(sp.OldColumnName.Name.O, sp.NewColumnName.Name.O)
		case ast.AlterTableAddConstraint:
			if !setPK([]*ast.Constraint{sp.Constraint}) {
				return nil, false
			}
		case ast.AlterTableDropPrimaryKey:
			pk = nil
		case ast.AlterTableRenameTable:
			renamed = sp.NewTable
		case ast.AlterTableOption:
			for _, o := range sp.Options {
				switch o.Tp {
				case ast.TableOptionCharset, ast.TableOptionCollate:
					if o.UintValue == ast.TableOptionCharsetWithConvertTo {
						return nil, false // every character column changes: read the table again
					}
					cs := o.StrValue
					if o.Tp == ast.TableOptionCollate {
						cs = collationCharsetName(cs)
					}
					ts.DefaultCharset = normalizeCharset(cs)
				}
			}
		case ast.AlterTableDropIndex:
			if strings.EqualFold(sp.Name, "PRIMARY") {
				pk = nil
			}
		case ast.AlterTableDropForeignKey, ast.AlterTableAlterColumn, ast.AlterTableLock,
			ast.AlterTableAlgorithm, ast.AlterTableRenameIndex, ast.AlterTableForce, ast.AlterTableIndexInvisible,
			ast.AlterTableAlterCheck, ast.AlterTableDropCheck, ast.AlterTableEnableKeys, ast.AlterTableDisableKeys,
			ast.AlterTableWithValidation, ast.AlterTableWithoutValidation,
			ast.AlterTableAddPartitions, ast.AlterTableCoalescePartitions, ast.AlterTableDropPartition,
			ast.AlterTableTruncatePartition, ast.AlterTablePartition, ast.AlterTableRemovePartitioning,
			ast.AlterTableRebuildPartition, ast.AlterTableReorganizePartition, ast.AlterTableCheckPartitions,
			ast.AlterTableExchangePartition, ast.AlterTableOptimizePartition, ast.AlterTableRepairPartition,
			ast.AlterTablePartitionOptions, ast.AlterTablePartitionAttributes, ast.AlterTableAttributes:
			// No column changes.
		default:
			return nil, false
		}
	}
	// A key column dropped leaves the key, as the server does.
	ts.PK = ts.PK[:0]
	for _, name := range pk {
		if i := ts.index(name); i >= 0 {
			ts.PK = append(ts.PK, i)
		}
	}
	return renamed, true
}

// column describes a column definition as information_schema would, for the flavor: the data type, character
// set (the column's, else the table's default), signedness, precision and scale, fractional digits, labels and
// generation. ok is false for a type the tracker does not know.
func (t *schemaTracker) column(ts *TableSchema, cd *ast.ColumnDef) (c SchemaColumn, ok bool) {
	tp := cd.Tp
	c.Name = cd.Name.Name.O
	c.Unsigned = tmysql.HasUnsignedFlag(tp.GetFlag())
	binary := tp.GetCharset() == "binary"
	text := func(kind string) string {
		if binary {
			return strings.Replace(kind, "text", "blob", 1)
		}
		return kind
	}
	switch tp.GetType() {
	case tmysql.TypeTiny:
		c.DataType = "tinyint"
	case tmysql.TypeShort:
		c.DataType = "smallint"
	case tmysql.TypeInt24:
		c.DataType = "mediumint"
	case tmysql.TypeLong:
		c.DataType = "int"
	case tmysql.TypeLonglong:
		c.DataType = "bigint"
	case tmysql.TypeNewDecimal:
		c.DataType = "decimal"
		c.Precision, c.Scale = tp.GetFlen(), tp.GetDecimal()
		if c.Precision < 0 {
			c.Precision = 10
		}
		if c.Scale < 0 {
			c.Scale = 0
		}
	case tmysql.TypeFloat:
		c.DataType = "float"
	case tmysql.TypeDouble:
		c.DataType = "double"
	case tmysql.TypeBit:
		c.DataType = "bit"
	case tmysql.TypeYear:
		c.DataType = "year"
	case tmysql.TypeDate:
		c.DataType = "date"
	case tmysql.TypeDuration, tmysql.TypeDatetime, tmysql.TypeTimestamp:
		c.DataType = map[byte]string{tmysql.TypeDuration: "time", tmysql.TypeDatetime: "datetime",
			tmysql.TypeTimestamp: "timestamp"}[tp.GetType()]
		c.FSP = max(tp.GetDecimal(), 0)
	case tmysql.TypeString:
		c.DataType = "char"
		if binary {
			c.DataType = "binary"
		}
	case tmysql.TypeVarchar, tmysql.TypeVarString:
		c.DataType = "varchar"
		if binary {
			c.DataType = "varbinary"
		}
	case tmysql.TypeTinyBlob:
		c.DataType = text("tinytext")
	case tmysql.TypeBlob:
		c.DataType = text("text")
	case tmysql.TypeMediumBlob:
		c.DataType = text("mediumtext")
	case tmysql.TypeLongBlob:
		c.DataType = text("longtext")
	case tmysql.TypeJSON:
		if t.flavor == "mariadb" { // an alias of LONGTEXT COLLATE utf8mb4_bin
			c.DataType, binary = "longtext", false
			tp = tp.Clone()
			tp.SetCharset("utf8mb4")
		} else {
			c.DataType = "json"
		}
	case tmysql.TypeEnum:
		c.DataType, c.EnumValues = "enum", slices.Clone(tp.GetElems())
	case tmysql.TypeSet:
		c.DataType, c.SetValues = "set", slices.Clone(tp.GetElems())
	case tmysql.TypeGeometry:
		c.DataType, c.Charset = "geometry", "binary"
	default:
		return c, false
	}
	c.ColumnType = strings.ToLower(tp.String())
	switch c.DataType {
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set":
		if binary {
			c.Charset = "binary"
			break
		}
		cs := tp.GetCharset()
		if cs == "" && tp.GetCollate() != "" {
			cs = collationCharsetName(tp.GetCollate())
		}
		for _, o := range cd.Options {
			if o.Tp == ast.ColumnOptionCollate && cs == "" {
				cs = collationCharsetName(o.StrValue)
			}
		}
		if cs == "" {
			cs = ts.DefaultCharset
		}
		if cs == "" {
			return c, false
		}
		c.Charset = normalizeCharset(cs)
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		c.Charset = "binary"
	}
	for _, o := range cd.Options {
		if o.Tp == ast.ColumnOptionGenerated {
			c.Generated = "VIRTUAL"
			if o.Stored {
				c.Generated = "STORED"
			}
		}
	}
	return c, true
}

// collationCharsetName is the character set of a collation name: its first word ("utf8mb4_bin" → utf8mb4).
func collationCharsetName(coll string) string {
	coll = strings.ToLower(coll)
	if coll == "binary" {
		return "binary"
	}
	if i := strings.IndexByte(coll, '_'); i > 0 {
		return coll[:i]
	}
	return ""
}

func (ts *TableSchema) clone() *TableSchema {
	c := *ts
	c.Columns = slices.Clone(ts.Columns)
	c.PK = slices.Clone(ts.PK)
	return &c
}

// index is the position of the column named name (case-insensitive), -1 when there is none.
func (ts *TableSchema) index(name string) int {
	return slices.IndexFunc(ts.Columns, func(c SchemaColumn) bool { return strings.EqualFold(c.Name, name) })
}

// insert adds c where pos says (nil or none: last). It reports false for an AFTER column that does not exist.
func (ts *TableSchema) insert(c SchemaColumn, pos *ast.ColumnPosition) bool {
	at := len(ts.Columns)
	if pos != nil {
		switch pos.Tp {
		case ast.ColumnPositionFirst:
			at = 0
		case ast.ColumnPositionAfter:
			i := ts.index(pos.RelativeColumn.Name.O)
			if i < 0 {
				return false
			}
			at = i + 1
		}
	}
	ts.Columns = slices.Insert(ts.Columns, at, c)
	return true
}

// columnStatement reports whether a DDL statement may change the columns or key of a table: ALTER, RENAME, DROP
// and CREATE of tables, DROP INDEX (of PRIMARY), DROP DATABASE, and what it cannot tell (SET STATEMENT ... FOR).
// The others (users, grants, routines, triggers, views, XA, maintenance) are not parsed: a statement the parser
// does not know makes the tracker forget every table.
func columnStatement(q string) bool {
	w := strings.Fields(strings.ToUpper(stripComments(q)))
	if len(w) < 2 {
		return false
	}
	switch w[0] {
	case "ALTER":
		return w[1] == "TABLE" || w[1] == "ONLINE" || w[1] == "IGNORE"
	case "RENAME":
		return w[1] == "TABLE" || w[1] == "TABLES"
	case "DROP":
		switch w[1] {
		case "TABLE", "TABLES", "DATABASE", "SCHEMA", "INDEX":
			return true
		}
		return false
	case "CREATE":
		for _, x := range w[1:min(len(w), 5)] {
			switch x {
			case "TABLE":
				return true
			case "INDEX", "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT", "USER", "ROLE", "DATABASE",
				"SCHEMA", "SEQUENCE", "SERVER":
				return false
			}
		}
		return false
	case "SET":
		return true
	}
	return false
}

// stripComments drops leading whitespace and /* ... */ comments (the server writes some before statements).
func stripComments(q string) string {
	for {
		q = strings.TrimSpace(q)
		if !strings.HasPrefix(q, "/*") {
			return q
		}
		end := strings.Index(q, "*/")
		if end < 0 {
			return ""
		}
		q = q[end+2:]
	}
}

// mariadbSyntax rewrites MariaDB-only forms the parser does not know into equivalents that it does.
var mariadbSyntax = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(?is)^(\s*(?:/\*.*?\*/\s*)*ALTER\s+)ONLINE\s+`), "$1"},
	{regexp.MustCompile(`(?is)^(\s*(?:/\*.*?\*/\s*)*CREATE\s+)OR\s+REPLACE\s+(TABLE\b)`), "$1$2"},
	{regexp.MustCompile(`(?i)\)(\s*)PERSISTENT\b`), ")${1}STORED"},
	{regexp.MustCompile(`(?i)\bALGORITHM(\s*=\s*)NOCOPY\b`), "ALGORITHM${1}INPLACE"},
}

func mariadbToParser(q string) string {
	for _, m := range mariadbSyntax {
		q = m.re.ReplaceAllString(q, m.with)
	}
	return q
}
