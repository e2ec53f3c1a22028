// Package change holds the values that flow from the binlog source to the sinks:
// row changes, their versions, transaction-boundary positions and batches.
//
// It depends on nothing else in the project, so the source, the transports, the
// sink and the reconciler can all share it.
package change

import (
	"bytes"
	"time"
)

// Op is the kind of a row change.
type Op uint8

// Row operations.
const (
	Insert Op = iota + 1
	Update
	Delete
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return "unknown"
}

// ParseOp is the inverse of Op.String.
func ParseOp(s string) (Op, bool) {
	switch s {
	case "insert":
		return Insert, true
	case "update":
		return Update, true
	case "delete":
		return Delete, true
	}
	return 0, false
}

// Table is the Redis-facing shape of a source table: the column names after the
// table's include/exclude/rename rules, and where its primary key sits.
//
// A Table is immutable once built; a DDL makes the source build a new one.
type Table struct {
	DB   string
	Name string
	// Columns are the output field names, in the order of every Row of this table.
	Columns []string
	// PK holds the indexes into Columns of the primary-key columns, in key order.
	PK []int
}

// FullName is "db.table".
func (t *Table) FullName() string { return t.DB + "." + t.Name }

// Row is one row image: one value per Table.Columns entry, rendered as SPEC
// section 2 says. A nil value is SQL NULL; an empty non-nil value is ”.
type Row [][]byte

// PKValues returns the primary-key values of r, in key order.
func (t *Table) PKValues(r Row) [][]byte {
	out := make([][]byte, len(t.PK))
	for i, c := range t.PK {
		out[i] = r[c]
	}
	return out
}

// SamePK reports whether rows a and b have the same primary key.
func (t *Table) SamePK(a, b Row) bool {
	for _, c := range t.PK {
		if !bytes.Equal(a[c], b[c]) {
			return false
		}
	}
	return true
}

// Change is one row change.
type Change struct {
	Op    Op
	Table *Table
	// Before is the row before an Update or Delete; nil for an Insert.
	Before Row
	// After is the row after an Insert or Update; nil for a Delete.
	After Row
	// Version totally orders the changes of the source (SPEC section 3).
	Version Version
	// CommitTime is the binlog timestamp of the change's event (second
	// precision): when its statement started, which for a single-statement
	// transaction is its commit time within the second. Debezium's ts_ms and
	// Maxwell's ts are the same timestamp.
	CommitTime time.Time
}

// Position names a place in the source's binlog. In a checkpoint it is always a
// transaction boundary: every transaction before it is complete, none after it
// has started.
type Position struct {
	// File and Pos are the binlog file name and byte offset.
	File string `json:"file"`
	Pos  uint32 `json:"pos"`
	// GTIDSet is the set of transactions executed up to this position, in the
	// flavor's textual form; empty where the server has no GTIDs.
	GTIDSet string `json:"gtid_set,omitempty"`
	// Flavor is "mysql" or "mariadb".
	Flavor string `json:"flavor,omitempty"`
	// Epoch is the failover epoch the versions at this position carry.
	Epoch uint16 `json:"epoch"`
	// ServerUUID identifies the server that wrote this binlog (server_uuid on
	// MySQL, server_id on MariaDB); a different one on resume bumps the epoch.
	ServerUUID string `json:"server_uuid,omitempty"`
}

// IsZero reports whether p names no position.
func (p Position) IsZero() bool { return p.File == "" && p.GTIDSet == "" }

// Batch is a run of consecutive changes, in binlog order, handed from the
// source to a transport. A large transaction spans several batches; only the
// batch that completes a transaction carries a Boundary.
type Batch struct {
	Changes []Change
	// Boundary, when set, is the newest transaction boundary the source
	// passed up to the end of this batch (changes of a transaction that is
	// still open may follow it in the batch). Once this batch and every batch
	// before it are durable downstream, Boundary may be checkpointed.
	Boundary *Position
	// EventTime is the binlog timestamp of the newest event read, used for lag.
	EventTime time.Time
	// Bytes is the size of the changes' values (RowBytes of their rows), what bounds a batch besides its row count:
	// a transaction of large rows must not gather gigabytes in one batch.
	Bytes int
}

// RowBytes is the size of r's values.
func RowBytes(r Row) int {
	n := 0
	for _, v := range r {
		n += len(v)
	}
	return n
}
