package reconcile

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
)

// Column signatures let `reconciler serve` notice an ALTER TABLE: the stream writes only the rows that change, so
// after a statement that adds, drops, renames or retypes columns (or converts the character set), every row
// written before it keeps its old shape in Redis until it changes again. A table whose signature differs from the
// one its last pass recorded (state field "columns:<db.t>") is reconciled at once instead of at its interval.

// columnSignatures returns, for each table, a signature of its columns as information_schema shows them now: their
// names, types, collations and primary-key membership, in order. With db and name set, only that table's. One
// query.
func columnSignatures(ctx context.Context, sdb *sql.DB, db, name string) (map[string]string, error) {
	q := `SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IFNULL(COLLATION_NAME, ''), COLUMN_KEY = 'PRI'
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')`
	var args []any
	if db != "" {
		q += ` AND TABLE_SCHEMA = ? AND TABLE_NAME = ?`
		args = append(args, db, name)
	}
	q += ` ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION`
	rows, err := sdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading the columns of the tables: %w", err)
	}
	defer rows.Close()
	parts := map[string]*strings.Builder{}
	for rows.Next() {
		var tdb, tname, col, typ, coll string
		var pk bool
		if err := rows.Scan(&tdb, &tname, &col, &typ, &coll, &pk); err != nil {
			return nil, fmt.Errorf("reading the columns of the tables: %w", err)
		}
		t := tdb + "." + tname
		b := parts[t]
		if b == nil {
			b = &strings.Builder{}
			parts[t] = b
		}
		fmt.Fprintf(b, "%d:%s%d:%s%d:%s%t;", len(col), col, len(typ), typ, len(coll), coll, pk)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the columns of the tables: %w", err)
	}
	out := make(map[string]string, len(parts))
	for t, b := range parts {
		sum := sha1.Sum([]byte(b.String()))
		out[t] = hex.EncodeToString(sum[:8])
	}
	return out, nil
}

// columnsField is the state field holding the column signature of a table's last finished pass.
func columnsField(table string) string { return "columns:" + table }

// ColumnsChanged returns the tables whose columns differ from the ones their last finished pass recorded. A table
// no pass recorded is not in it.
func (r *Reconciler) ColumnsChanged(ctx context.Context) ([]string, map[string]string, error) {
	if r.cfg.StateKey == "" {
		return nil, nil, nil
	}
	stored, err := r.cfg.Redis.HGetAll(ctx, r.cfg.StateKey).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the reconcile state (%s): %w", r.cfg.StateKey, err)
	}
	now, err := columnSignatures(ctx, r.cfg.DB, "", "")
	if err != nil {
		return nil, nil, err
	}
	var changed []string
	for f, sig := range stored {
		t, ok := strings.CutPrefix(f, "columns:")
		if ok && now[t] != "" && now[t] != sig {
			changed = append(changed, t)
		}
	}
	return changed, now, nil
}
