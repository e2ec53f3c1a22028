package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"

	"github.com/binlogsync/binlogsync/change"
)

// The checks in this file run at start-up, before the binlog stream opens, so
// that bad credentials or server settings stop the program with one line that
// names the setting and the fix (SPEC section 6).

// Problem is one thing wrong with the server's settings or the connected
// user's privileges. A fatal problem stops the program at start; the others
// are warnings.
type Problem struct {
	// Setting is the server variable or configuration key at fault.
	Setting string
	// Found is what the server has.
	Found string
	// Fix says what binlogsync needs and how to get it.
	Fix   string
	Fatal bool
}

// Error is the one-line message: "<setting> is <found>; <fix>".
func (p Problem) Error() string {
	return p.Setting + " is " + p.Found + "; " + p.Fix
}

// PreflightOptions say what Preflight checks against.
type PreflightOptions struct {
	// Flavor is "mysql" or "mariadb" (see DetectFlavor).
	Flavor string
	// ServerID is mysql.server_id, the id binlogsync registers with.
	ServerID uint32
	// User is mysql.user, for messages.
	User string
	// Tables are the tables.include globs ("db.table", path.Match syntax) that
	// the connected user needs SELECT on. Empty means every table ("*.*").
	Tables []string
	// Selected reports whether db.table is replicated; with it, Preflight
	// checks the selected tables that have no primary key against KeyColumns
	// (nil: no configured key columns).
	Selected   func(db, table string) bool
	KeyColumns func(db, table string) []string
	// Columns returns the column rules of db.table (nil: none).
	Columns func(db, table string) *ColumnRule
	// KeyTemplate, when set, checks db.table's key template against the fields the table is replicated with and
	// its key fields (a subset of fields, in key order); an error is fatal.
	KeyTemplate func(db, table string, fields, key []string) error
}

// DetectFlavor tells MySQL from MariaDB by VERSION() and @@version_comment.
func DetectFlavor(ctx context.Context, db *sql.DB) (string, error) {
	var version, comment string
	if err := db.QueryRowContext(ctx, "SELECT VERSION(), @@version_comment").Scan(&version, &comment); err != nil {
		return "", fmt.Errorf("reading the server version: %w", err)
	}
	if strings.Contains(strings.ToLower(version+" "+comment), "mariadb") {
		return "mariadb", nil
	}
	return "mysql", nil
}

// Preflight checks the server's binlog settings, the connected user's
// privileges and mysql.server_id. It returns every problem found; the error is
// only for failing to run the checks at all.
//
// The least privilege binlogsync needs is
//
//	GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'binlogsync'@'%'
//
// REPLICATION SLAVE reads the binlog stream; REPLICATION CLIENT (called
// BINLOG MONITOR on MariaDB 10.5 and later) runs SHOW MASTER STATUS and SHOW
// BINARY LOGS; SELECT lets the schema loader and the reconciler read the
// replicated tables (SELECT on just those tables or their databases is
// enough). With this grant MariaDB does not let the user run SHOW SLAVE HOSTS
// (that needs REPLICATION MASTER ADMIN), so Preflight then only warns that it
// could not check whether another replica already uses mysql.server_id.
func Preflight(ctx context.Context, db *sql.DB, opts PreflightOptions) ([]Problem, error) {
	if opts.Flavor != "mysql" && opts.Flavor != "mariadb" {
		f, err := DetectFlavor(ctx, db)
		if err != nil {
			return nil, err
		}
		opts.Flavor = f
	}
	vars, err := globalVariables(ctx, db, "log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata",
		"binlog_row_value_options", "binlog_checksum", "gtid_mode", "server_id")
	if err != nil {
		return nil, err
	}
	problems := checkVariables(vars, opts.Flavor)

	grants, err := queryRows(ctx, db, "SHOW GRANTS")
	if err != nil {
		return nil, fmt.Errorf("reading the privileges of mysql.user %q: %w", opts.User, err)
	}
	var current string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&current); err != nil {
		return nil, fmt.Errorf("reading CURRENT_USER(): %w", err)
	}
	var lines []string
	for _, r := range grants {
		for _, v := range r {
			lines = append(lines, v)
		}
	}
	problems = append(problems, checkGrants(lines, quoteAccount(current), opts.Tables)...)

	p, err := checkServerID(ctx, db, opts, vars["server_id"])
	if err != nil {
		return nil, err
	}
	problems = append(problems, p...)
	if opts.Selected != nil {
		problems = append(problems, checkKeys(ctx, db, opts)...)
		problems = append(problems, checkColumns(ctx, db, opts)...)
	}
	return problems, nil
}

// checkColumns checks the columns of the selected tables as the stream will meet them: a character set it cannot
// convert to UTF-8 (a warning: the stream stops at the table's first change), a field name starting with "_"
// (reserved for metadata; fatal), and column rules naming columns the table does not have, or tables.include
// patterns matching no table (warnings: a typo leaves a column unfiltered or a table unreplicated).
func checkColumns(ctx context.Context, db *sql.DB, opts PreflightOptions) []Problem {
	rows, err := queryStrings(ctx, db, `SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, IFNULL(CHARACTER_SET_NAME, '')
		FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2, ORDINAL_POSITION`)
	if err != nil {
		return nil // the stream reports what it cannot handle when it meets it
	}
	var out []Problem
	primary := map[string][]string{}
	if opts.KeyTemplate != nil {
		pks, err := queryStrings(ctx, db, `SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS
			WHERE INDEX_NAME = 'PRIMARY' AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
			ORDER BY 1, 2, SEQ_IN_INDEX`)
		if err == nil {
			for _, r := range pks {
				primary[r[0]+"."+r[1]] = append(primary[r[0]+"."+r[1]], r[2])
			}
		}
	}
	matched := make([]bool, len(opts.Tables))
	checkTable := func(schema, table string, cols [][]string) {
		for i, g := range opts.Tables {
			if ok, _ := path.Match(g, schema+"."+table); ok {
				matched[i] = true
			}
		}
		if !opts.Selected(schema, table) {
			return
		}
		var rule *ColumnRule
		if opts.Columns != nil {
			rule = opts.Columns(schema, table)
		}
		have := map[string]bool{}
		for _, c := range cols {
			have[c[2]] = true
		}
		fieldOf := map[string]string{}
		var fields []string
		for _, c := range cols {
			name, cs := c[2], normalizeCharset(c[3])
			if rule != nil && (slices.Contains(rule.Exclude, name) || len(rule.Include) > 0 && !slices.Contains(rule.Include, name)) {
				continue
			}
			field := name
			if rule != nil && rule.Rename[name] != "" {
				field = rule.Rename[name]
			}
			fieldOf[name] = field
			fields = append(fields, field)
			if strings.HasPrefix(field, "_") {
				out = append(out, Problem{Setting: "column " + schema + "." + table + "." + name,
					Found: fmt.Sprintf("replicated as field %q, which starts with '_'", field),
					Fix:   "SPEC reserves such names for metadata such as _v; rename it with tables.rules[].columns.rename or leave it out with columns.exclude",
					Fatal: true})
			}
			if cs != "" && !supportedCharset(cs) {
				out = append(out, Problem{Setting: "column " + schema + "." + table + "." + name,
					Found: "in character set " + cs + ", which binlogsync cannot convert to UTF-8",
					Fix: "the stream stops at the table's first change; convert the column to utf8mb4 " +
						"(ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4) or leave the table out with tables.exclude"})
			}
		}
		if opts.KeyTemplate != nil {
			keyCols := primary[schema+"."+table]
			if len(keyCols) == 0 && rule != nil { // key_columns stand in for a missing primary key only, as in the stream
				keyCols = rule.KeyColumns
			}
			var key []string
			for _, k := range keyCols {
				if f, ok := fieldOf[k]; ok {
					key = append(key, f)
				}
			}
			if len(key) > 0 && len(key) == len(keyCols) {
				if err := opts.KeyTemplate(schema, table, fields, key); err != nil {
					out = append(out, Problem{Setting: "tables.rules[].key for " + schema + "." + table,
						Found: err.Error(), Fix: "name every key column in the template, or use ${pk}", Fatal: true})
				}
			}
		}
		if rule == nil {
			return
		}
		named := append(append(slices.Clone(rule.Include), rule.Exclude...), slices.Sorted(maps.Keys(rule.Rename))...)
		for _, n := range named {
			if !have[n] {
				out = append(out, Problem{Setting: "tables.rules[].columns for " + schema + "." + table,
					Found: fmt.Sprintf("naming %q, which the table does not have", n),
					Fix:   "check the column name (the rule has no effect on it)"})
			}
		}
	}
	for i := 0; i < len(rows); {
		j := i
		for j < len(rows) && rows[j][0] == rows[i][0] && rows[j][1] == rows[i][1] {
			j++
		}
		checkTable(rows[i][0], rows[i][1], rows[i:j])
		i = j
	}
	for i, g := range opts.Tables {
		if !matched[i] {
			out = append(out, Problem{Setting: "tables.include pattern " + strconv.Quote(g),
				Found: "matching no table now",
				Fix:   "check the name; a table created later that matches it is replicated from then on"})
		}
	}
	return out
}

// checkKeys finds the selected tables without a primary key (from STATISTICS, as the stream reads keys:
// MariaDB shows TABLE_CONSTRAINTS to a user with only SELECT empty). Without configured key columns such a table is
// skipped (a warning); configured key columns must be exactly the columns of a unique key, all NOT NULL, or two
// rows could share a Redis key (fatal).
func checkKeys(ctx context.Context, db *sql.DB, opts PreflightOptions) []Problem {
	rows, err := queryStrings(ctx, db, `SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t
		WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
		AND NOT EXISTS (SELECT 1 FROM information_schema.STATISTICS s WHERE s.TABLE_SCHEMA = t.TABLE_SCHEMA
			AND s.TABLE_NAME = t.TABLE_NAME AND s.INDEX_NAME = 'PRIMARY')
		ORDER BY 1, 2`)
	if err != nil {
		return []Problem{{Setting: "the primary-key check", Found: "not possible (" + err.Error() + ")",
			Fix: "tables without a primary key will be skipped when their changes arrive"}}
	}
	var out []Problem
	for _, r := range rows {
		schema, table := r[0], r[1]
		if !opts.Selected(schema, table) {
			continue
		}
		name := schema + "." + table
		var keys []string
		if opts.KeyColumns != nil {
			keys = opts.KeyColumns(schema, table)
		}
		if len(keys) == 0 {
			out = append(out, Problem{Setting: "table " + name, Found: "without a primary key",
				Fix: "its changes are skipped; to replicate it set tables.rules[].key_columns to the columns of a " +
					"NOT NULL unique key, or leave it out with tables.exclude"})
			continue
		}
		if msg := checkUniqueKey(ctx, db, schema, table, keys); msg != "" {
			out = append(out, Problem{Setting: "tables.rules[].key_columns of " + name, Found: fmt.Sprintf("%q", keys),
				Fix: msg, Fatal: true})
		}
	}
	return out
}

// checkUniqueKey returns what is wrong with keys as the row identity of schema.table, or "".
func checkUniqueKey(ctx context.Context, db *sql.DB, schema, table string, keys []string) string {
	cols, err := queryStrings(ctx, db, `SELECT COLUMN_NAME, IS_NULLABLE FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, schema, table)
	if err != nil {
		return "reading the table's columns failed: " + err.Error()
	}
	nullable := map[string]bool{}
	for _, c := range cols {
		nullable[c[0]] = c[1] == "YES"
	}
	for _, k := range keys {
		n, ok := nullable[k]
		switch {
		case !ok:
			return fmt.Sprintf("the table has no column %q; name the columns of a NOT NULL unique key", k)
		case n:
			return fmt.Sprintf("column %q allows NULL, and a row with NULL there has no key; make it NOT NULL "+
				"or name other columns", k)
		}
	}
	idx, err := queryStrings(ctx, db, `SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY COLUMN_NAME SEPARATOR ',')
		FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
		AND NON_UNIQUE = 0 AND SUB_PART IS NULL GROUP BY INDEX_NAME`, schema, table)
	if err != nil {
		return "reading the table's indexes failed: " + err.Error()
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	for _, r := range idx {
		if r[1] == strings.Join(want, ",") {
			return ""
		}
	}
	return "no unique index covers exactly these columns, so two rows could share a Redis key; " +
		"add one (ALTER TABLE ... ADD UNIQUE KEY (...)) or name the columns of an existing one"
}

// queryStrings runs q and returns its rows as text (NULL as "").
func queryStrings(ctx context.Context, db *sql.DB, q string, args ...any) ([][]string, error) {
	_, out, err := queryTable(ctx, db, q, args...)
	return out, err
}

// queryTable runs q and returns its column names and its rows as text (NULL as "").
func queryTable(ctx context.Context, db *sql.DB, q string, args ...any) ([]string, [][]string, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, nil, err
	}
	var out [][]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, err
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = v.String
		}
		out = append(out, row)
	}
	return cols, out, rows.Err()
}

// globalVariables reads the named global variables; those the server does not
// have are absent from the map.
func globalVariables(ctx context.Context, db *sql.DB, names ...string) (map[string]string, error) {
	q := "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('" + strings.Join(names, "','") + "')"
	rows, err := queryRows(ctx, db, q)
	if err != nil {
		return nil, fmt.Errorf("reading the server's variables: %w", err)
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		out[strings.ToLower(r["variable_name"])] = r["value"]
	}
	return out, nil
}

// checkVariables checks the binlog settings read by globalVariables.
func checkVariables(v map[string]string, flavor string) []Problem {
	var out []Problem
	need := func(name, want string, fatal bool, how string) {
		got, ok := v[name]
		if !ok {
			got = "not supported by this server version"
		} else if strings.EqualFold(got, want) {
			return
		}
		if got == "" {
			got = "empty"
		}
		out = append(out, Problem{Setting: name, Found: got, Fatal: fatal,
			Fix: "binlogsync needs " + want + ": " + how})
	}
	setBoth := func(name, value string) string {
		return "SET GLOBAL " + name + "=" + value + " and " + name + "=" + value + " in my.cnf"
	}
	need("log_bin", "ON", true, "start the server with log_bin (log-bin=mysql-bin and a server_id in my.cnf) "+
		"and restart it")
	need("binlog_format", "ROW", true, setBoth("binlog_format", "ROW"))
	need("binlog_row_image", "FULL", true, setBoth("binlog_row_image", "FULL"))
	need("binlog_row_metadata", "FULL", false, setBoth("binlog_row_metadata", "FULL")+
		" (until then column names come from the schema, which is wrong while a DDL is in flight)")
	if c, ok := v["binlog_checksum"]; ok && !strings.EqualFold(c, "CRC32") && !strings.EqualFold(c, "NONE") {
		out = append(out, Problem{Setting: "binlog_checksum", Found: c, Fatal: true,
			Fix: "binlogsync reads CRC32 or NONE: " + setBoth("binlog_checksum", "CRC32")})
	}
	if flavor != "mysql" {
		return out
	}
	if o := v["binlog_row_value_options"]; strings.Contains(strings.ToUpper(o), "PARTIAL_JSON") {
		out = append(out, Problem{Setting: "binlog_row_value_options", Found: o, Fatal: true,
			Fix: "binlogsync needs whole JSON values, not partial updates: SET GLOBAL binlog_row_value_options='' " +
				"and binlog_row_value_options='' in my.cnf"})
	}
	if g, ok := v["gtid_mode"]; ok && !strings.EqualFold(g, "ON") {
		out = append(out, Problem{Setting: "gtid_mode", Found: g,
			Fix: "checkpoints hold only binlog file and offset, so after a failover Redis must be reloaded; " +
				"for GTID positions set enforce_gtid_consistency=ON and step gtid_mode through OFF_PERMISSIVE, " +
				"ON_PERMISSIVE to ON"})
	}
	return out
}

// grant is one parsed SHOW GRANTS line of the form GRANT privs ON db.table TO.
type grant struct {
	privs     []string // upper case; column-level privileges left out
	db, table string   // unquoted; "*" for a wildcard
}

// checkGrants checks the connected user's privileges: REPLICATION SLAVE and
// REPLICATION CLIENT on *.*, SELECT on every include glob. account is the
// user as a GRANT names it ('user'@'host').
func checkGrants(lines []string, account string, include []string) []Problem {
	var grants []grant
	roles := false
	for _, l := range lines {
		g, ok, isRole := parseGrant(l)
		roles = roles || isRole
		if ok {
			grants = append(grants, g)
		}
	}
	has := func(db, table string, names ...string) bool {
		for _, g := range grants {
			if g.db != db || g.table != table {
				continue
			}
			for _, p := range g.privs {
				if p == "ALL" || p == "ALL PRIVILEGES" || slices.Contains(names, p) {
					return true
				}
			}
		}
		return false
	}
	var missing []string
	if !has("*", "*", "REPLICATION SLAVE", "REPLICATION REPLICA") {
		missing = append(missing, "REPLICATION SLAVE")
	}
	if !has("*", "*", "REPLICATION CLIENT", "BINLOG MONITOR") {
		missing = append(missing, "REPLICATION CLIENT")
	}
	var out []Problem
	roleNote := ""
	if roles {
		// MySQL's SHOW GRANTS does not expand granted roles.
		roleNote = " (privileges held through roles were not checked)"
	}
	if len(missing) > 0 {
		list := strings.Join(missing, ", ")
		out = append(out, Problem{Setting: "mysql.user", Found: account + " without " + list + roleNote,
			Fatal: !roles, Fix: "binlogsync needs them on *.*: GRANT " + list + " ON *.* TO " + account})
	}

	if len(include) == 0 {
		include = []string{"*.*"}
	}
	if has("*", "*", "SELECT") {
		return out
	}
	var noSelect []string
	for _, glob := range include {
		if !selectCovers(grants, glob) {
			noSelect = append(noSelect, glob)
		}
	}
	if len(noSelect) > 0 {
		on := "*.*"
		if len(noSelect) == 1 && !strings.ContainsAny(noSelect[0], `*?[\`) {
			d, t, _ := strings.Cut(noSelect[0], ".")
			on = "`" + d + "`.`" + t + "`"
		}
		out = append(out, Problem{Setting: "mysql.user", Found: account + " without SELECT on " +
			strings.Join(noSelect, ", ") + " (tables.include)" + roleNote, Fatal: !roles,
			Fix: "binlogsync reads the replicated tables: GRANT SELECT ON " + on + " TO " + account})
	}
	return out
}

// selectCovers reports whether a SELECT grant provably covers every table the
// db.table glob can match: a database-level grant whose pattern matches the
// glob's literal database, or a table-level grant on the exact table.
func selectCovers(grants []grant, glob string) bool {
	db, table, ok := strings.Cut(glob, ".")
	if !ok || strings.ContainsAny(db, `*?[\`) {
		return false
	}
	literalTable := !strings.ContainsAny(table, `*?[\`)
	for _, g := range grants {
		if !slices.Contains(g.privs, "SELECT") && !slices.Contains(g.privs, "ALL PRIVILEGES") &&
			!slices.Contains(g.privs, "ALL") {
			continue
		}
		switch {
		case g.db == "*": // *.* was checked before; "*.t" does not exist
		case g.table == "*" && likeMatch(g.db, db):
			return true
		case literalTable && g.db == db && g.table == table:
			return true
		}
	}
	return false
}

// likeMatch matches s against a database name pattern of a GRANT: % is any
// run, _ any one character, \ escapes.
func likeMatch(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case '%':
		for i := 0; i <= len(s); i++ {
			if likeMatch(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	case '_':
		return s != "" && likeMatch(pattern[1:], s[1:])
	case '\\':
		if len(pattern) > 1 {
			pattern = pattern[1:]
		}
	}
	return s != "" && s[0] == pattern[0] && likeMatch(pattern[1:], s[1:])
}

// parseGrant parses "GRANT <privs> ON <db>.<table> TO ...". ok is false for
// other lines (roles, PROXY, routines); role is true for "GRANT <role> TO".
func parseGrant(line string) (g grant, ok, role bool) {
	rest, found := strings.CutPrefix(line, "GRANT ")
	if !found {
		return g, false, false
	}
	// The privilege list ends at " ON " or, for a role grant, " TO ", outside
	// quotes and parentheses.
	depth, quote := 0, byte(0)
	end, isRole := -1, false
	for i := 0; i < len(rest) && end < 0; i++ {
		c := rest[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '`' || c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && strings.HasPrefix(rest[i:], " ON "):
			end = i
		case depth == 0 && strings.HasPrefix(rest[i:], " TO "):
			end, isRole = i, true
		}
	}
	if end < 0 || isRole {
		return g, false, isRole
	}
	for _, p := range splitTopLevel(rest[:end]) {
		p = strings.ToUpper(strings.TrimSpace(p))
		if strings.Contains(p, "(") { // column-level: not the whole table
			continue
		}
		g.privs = append(g.privs, p)
	}
	obj := rest[end+len(" ON "):]
	obj = strings.TrimPrefix(obj, "TABLE ")
	var okDB, okTable bool
	g.db, obj, okDB = cutIdent(obj)
	if !okDB || !strings.HasPrefix(obj, ".") {
		return g, false, false // PROXY ON ''@'%', PROCEDURE ..., etc.
	}
	g.table, _, okTable = cutIdent(obj[1:])
	return g, okTable, false
}

// splitTopLevel splits s at commas outside parentheses and quotes.
func splitTopLevel(s string) []string {
	var out []string
	depth, quote, start := 0, byte(0), 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '`' || c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ',' && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// cutIdent reads one identifier (`quoted`, *, or bare) from the front of s.
func cutIdent(s string) (ident, rest string, ok bool) {
	if strings.HasPrefix(s, "*") {
		return "*", s[1:], true
	}
	if strings.HasPrefix(s, "`") {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] != '`' {
				b.WriteByte(s[i])
				continue
			}
			if i+1 < len(s) && s[i+1] == '`' { // `` is an escaped backtick
				b.WriteByte('`')
				i++
				continue
			}
			return b.String(), s[i+1:], true
		}
		return "", s, false
	}
	i := strings.IndexAny(s, ". ")
	if i <= 0 {
		return s, "", s != ""
	}
	return s[:i], s[i:], true
}

// quoteAccount turns CURRENT_USER()'s user@host into 'user'@'host'.
func quoteAccount(current string) string {
	i := strings.LastIndexByte(current, '@')
	if i < 0 {
		return "'" + current + "'"
	}
	return "'" + current[:i] + "'@'" + current[i+1:] + "'"
}

// checkServerID checks that mysql.server_id is set, is not the server's own
// and is not registered by another replica.
func checkServerID(ctx context.Context, db *sql.DB, opts PreflightOptions, own string) ([]Problem, error) {
	id := strconv.FormatUint(uint64(opts.ServerID), 10)
	const fix = "a replica needs an id of its own: set mysql.server_id to an unused value"
	if opts.ServerID == 0 {
		return []Problem{{Setting: "mysql.server_id", Found: "0", Fatal: true, Fix: fix}}, nil
	}
	if id == own {
		return []Problem{{Setting: "mysql.server_id", Found: id + ", the server's own @@server_id", Fatal: true,
			Fix: fix}}, nil
	}
	var rows []map[string]string
	var err error
	if opts.Flavor == "mysql" {
		rows, err = queryRows(ctx, db, "SHOW REPLICAS")
		if isParseError(err) { // before MySQL 8.0.22
			rows, err = queryRows(ctx, db, "SHOW SLAVE HOSTS")
		}
	} else {
		rows, err = queryRows(ctx, db, "SHOW SLAVE HOSTS")
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && (me.Number == 1227 || me.Number == 1142) { // access denied
		return []Problem{{Setting: "mysql.server_id", Found: id + " (not checked against other replicas: " +
			"SHOW SLAVE HOSTS is not allowed for mysql.user; MariaDB wants REPLICATION MASTER ADMIN)",
			Fix: "make sure no other replica of this server uses server_id " + id}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the server's replicas: %w", err)
	}
	host, _ := os.Hostname()
	for _, r := range rows {
		if r["server_id"] == id && host != "" && r["host"] == host {
			// Registered from this host: most likely this program's previous
			// run (a crash or kill). The server drops that zombie dump thread
			// when a replica with the same id connects, so go on.
			return []Problem{{Setting: "mysql.server_id", Found: id + ", still registered by a replica on this host " +
				"(probably this program's previous run; the server replaces it)",
				Fix: "if another binlogsync on this host uses server_id " + id + ", give each its own mysql.server_id"}}, nil
		}
		if r["server_id"] == id {
			return []Problem{{Setting: "mysql.server_id", Found: id + ", already registered by the replica at " +
				r["host"] + ":" + r["port"], Fatal: true,
				Fix: fix + " (if that is this program's previous run, wait for the server to drop it " +
					"or KILL its Binlog Dump thread)"}}, nil
		}
	}
	return nil, nil
}

// ExplainConnectError turns a failure to connect to MySQL at addr as user into
// one line that names the setting to fix (mysql.addr, mysql.user,
// mysql.password or mysql.tls) and how. The original error stays wrapped.
func ExplainConnectError(addr, user string, err error) error {
	if err == nil {
		return nil
	}
	at := fmt.Sprintf("MySQL at %s as %q", addr, user)
	var (
		me     *mysql.MySQLError
		dnsErr *net.DNSError
		netErr net.Error
	)
	switch {
	case errors.As(err, &me) && (me.Number == 1045 || me.Number == 1698):
		return fmt.Errorf("mysql.password: the server refused %s (%w); set mysql.password "+
			"(BINLOGSYNC_MYSQL_PASSWORD) to that user's password, or mysql.user to an existing user", at, err)
	case errors.As(err, &me) && me.Number == 1130:
		return fmt.Errorf("mysql.user: %q may not connect from this host (%w); create the user for this host: "+
			"CREATE USER '%s'@'%%' and GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '%s'@'%%'",
			user, err, user, user)
	case errors.As(err, &me) && me.Number == 1040:
		return fmt.Errorf("mysql.addr: %s has too many connections (%w); raise max_connections or close idle ones",
			addr, err)
	case errors.As(err, &me):
		return fmt.Errorf("connecting to %s: %w", at, err)
	case errors.Is(err, mysql.ErrNoTLS), IsTLSError(err):
		return fmt.Errorf("mysql.tls: the TLS handshake with %s failed (%w); match mysql.tls to the server: "+
			"its CA and server name, or mode disabled if the server has no TLS", addr, err)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("mysql.addr: cannot resolve the host of %s (%w); set mysql.addr "+
			"(BINLOGSYNC_MYSQL_ADDR) to the server's host:port", addr, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("mysql.addr: nothing accepts connections at %s (%w); check that MySQL runs and "+
			"set mysql.addr (BINLOGSYNC_MYSQL_ADDR) to the host:port it listens on", addr, err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("mysql.addr: %s is unreachable (%w); set mysql.addr (BINLOGSYNC_MYSQL_ADDR) to "+
			"a host:port this machine can reach", addr, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Errorf("mysql.addr: connecting to %s timed out (%w); check mysql.addr "+
			"(BINLOGSYNC_MYSQL_ADDR) and that no firewall drops the connection", addr, err)
	}
	return fmt.Errorf("connecting to %s (mysql.addr, mysql.user): %w", at, err)
}

// BinlogAvailable reports whether file is still listed by SHOW BINARY LOGS,
// that is, whether a checkpoint in it can still be resumed from.
func BinlogAvailable(ctx context.Context, db *sql.DB, file string) (bool, error) {
	rows, err := queryRows(ctx, db, "SHOW BINARY LOGS")
	if err != nil {
		return false, fmt.Errorf("running SHOW BINARY LOGS: %w", err)
	}
	for _, r := range rows {
		if r["log_name"] == file {
			return true, nil
		}
	}
	return false, nil
}

// CurrentPosition returns the end of the server's binlog: a transaction
// boundary, with the GTID set executed up to it and the server's identity
// (server_uuid on MySQL, server_id on MariaDB). Epoch is left zero.
//
// On MariaDB the GTID set is BINLOG_GTID_POS at the file and offset, so both
// name the same point even while transactions commit; that reads the binlog
// file up to the offset.
func CurrentPosition(ctx context.Context, db *sql.DB, flavor string) (change.Position, error) {
	if flavor != "mysql" && flavor != "mariadb" {
		f, err := DetectFlavor(ctx, db)
		if err != nil {
			return change.Position{}, err
		}
		flavor = f
	}
	var rows []map[string]string
	var err error
	if flavor == "mysql" {
		rows, err = queryRows(ctx, db, "SHOW BINARY LOG STATUS") // MySQL 8.2+; 8.4 dropped SHOW MASTER STATUS
		if isParseError(err) {
			rows, err = queryRows(ctx, db, "SHOW MASTER STATUS")
		}
	} else {
		rows, err = queryRows(ctx, db, "SHOW MASTER STATUS")
	}
	if err != nil {
		return change.Position{}, fmt.Errorf("reading the binlog position (SHOW MASTER STATUS): %w", err)
	}
	if len(rows) == 0 || rows[0]["file"] == "" {
		return change.Position{}, errors.New("reading the binlog position: the server writes no binlog; " +
			"start it with log_bin (log-bin=mysql-bin in my.cnf)")
	}
	r := rows[0]
	pos, err := strconv.ParseUint(r["position"], 10, 32)
	if err != nil {
		return change.Position{}, fmt.Errorf("reading the binlog position: bad Position %q: %w", r["position"], err)
	}
	p := change.Position{File: r["file"], Pos: uint32(pos), Flavor: flavor}
	if flavor == "mysql" {
		gtid, ok := r["executed_gtid_set"]
		if !ok {
			if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_executed").Scan(&gtid); err != nil {
				return change.Position{}, fmt.Errorf("reading @@gtid_executed: %w", err)
			}
		}
		p.GTIDSet = strings.Join(strings.Fields(gtid), "")
		if err := db.QueryRowContext(ctx, "SELECT @@server_uuid").Scan(&p.ServerUUID); err != nil {
			return change.Position{}, fmt.Errorf("reading @@server_uuid: %w", err)
		}
		return p, nil
	}
	gtid, ok, err := MariaDBGTIDAt(ctx, db, p.File, p.Pos)
	if err != nil {
		return change.Position{}, err
	}
	if !ok {
		return change.Position{}, fmt.Errorf("reading the GTID position at %s:%d: BINLOG_GTID_POS returned NULL",
			p.File, p.Pos)
	}
	p.GTIDSet = gtid
	if err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&p.ServerUUID); err != nil {
		return change.Position{}, fmt.Errorf("reading @@server_id: %w", err)
	}
	return p, nil
}

// MariaDBGTIDAt returns MariaDB's GTID position at file:pos (BINLOG_GTID_POS): the set of transactions executed
// up to it, possibly empty. ok is false when the server cannot tell (the file is gone, or pos is not at an event).
func MariaDBGTIDAt(ctx context.Context, db *sql.DB, file string, pos uint32) (set string, ok bool, err error) {
	var gtid sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT BINLOG_GTID_POS(?, ?)", file, pos).Scan(&gtid); err != nil {
		return "", false, fmt.Errorf("reading the GTID position at %s:%d: %w", file, pos, err)
	}
	return gtid.String, gtid.Valid, nil
}

// isParseError reports a server syntax error (a statement this version lacks).
func isParseError(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1064
}

// queryRows runs q and returns its rows as maps from lower-case column name to
// text value (NULL as "").
func queryRows(ctx context.Context, db *sql.DB, q string) ([]map[string]string, error) {
	cols, vals, err := queryTable(ctx, db, q)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]string, len(vals))
	for r, row := range vals {
		m := make(map[string]string, len(cols))
		for i, c := range cols {
			m[strings.ToLower(c)] = row[i]
		}
		out[r] = m
	}
	return out, nil
}

// IsTLSError reports whether err is a failed TLS handshake: an untrusted or misnamed certificate, or a peer that
// does not speak TLS or refused ours.
func IsTLSError(err error) bool {
	var (
		certErr *tls.CertificateVerificationError
		uaErr   x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
		recErr  tls.RecordHeaderError
		alert   tls.AlertError
	)
	return errors.As(err, &certErr) || errors.As(err, &uaErr) || errors.As(err, &hostErr) ||
		errors.As(err, &invErr) || errors.As(err, &recErr) || errors.As(err, &alert)
}

// ErrBadStart is wrapped by CheckStart's errors: a start position that is not a transaction boundary.
var ErrBadStart = errors.New("bad start position")

// CheckStart checks that file:pos, a start position given by hand, is the start of an event that begins a
// transaction (or of the file's header), so that a start there neither fails nor applies half a transaction. A
// user who may not run SHOW BINLOG EVENTS gets no check (nil).
func CheckStart(ctx context.Context, db *sql.DB, file string, pos uint32) error {
	rows, err := queryRows(ctx, db, fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %d LIMIT 1",
		strings.ReplaceAll(strings.ReplaceAll(file, `\`, `\\`), "'", "''"), pos))
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &me) && me.Number == 1220:
		return fmt.Errorf("%w: %s:%d is not the start of an event; `SHOW BINLOG EVENTS IN '%s'` lists the events "+
			"and their positions (start at a Gtid event, or at a Query BEGIN without GTIDs)", ErrBadStart, file, pos, file)
	case errors.As(err, &me) && (me.Number == 1227 || me.Number == 1142 || me.Number == 1045):
		return nil
	case err != nil:
		return fmt.Errorf("reading the event at %s:%d: %w", file, pos, err)
	case len(rows) == 0:
		return nil // the end of the file: the next transaction starts there
	}
	typ, info := rows[0]["event_type"], strings.TrimSpace(rows[0]["info"])
	if i := strings.Index(info, "; "); strings.HasPrefix(info, "use ") && i > 0 {
		info = strings.TrimSpace(info[i+2:])
	}
	switch typ {
	case "Gtid", "Anonymous_Gtid", "Format_desc", "Rotate", "Gtid_list", "Binlog_checkpoint", "Previous_gtids",
		"Stop", "Start_v3", "Start_encryption":
		return nil
	case "Query":
		for _, p := range []string{"COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "XA END", "XA PREPARE"} {
			if hasPrefixFold(info, p) {
				return fmt.Errorf("%w: %s:%d is the %s that ends or continues a transaction, not where one starts; "+
					"`SHOW BINLOG EVENTS IN '%s'` lists the events (start at a Gtid event, or at a Query BEGIN "+
					"without GTIDs)", ErrBadStart, file, pos, p, file)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: %s:%d is a %s event inside a transaction, so a start there would apply half of it; "+
		"`SHOW BINLOG EVENTS IN '%s'` lists the events (start at a Gtid event, or at a Query BEGIN without GTIDs)",
		ErrBadStart, file, pos, typ, file)
}
