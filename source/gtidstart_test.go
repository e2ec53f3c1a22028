package source

import (
	"context"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
)

// TestTransactionStartFromGTIDEvent checks that a transaction starts where its GTID event does by the event's own
// header. A MySQL start by GTID set skips the transactions already in the set without sending them (it tells where
// the skipping ended only in a heartbeat), so the end of the event read before (Previous_gtids, at 197 here) is not
// the transaction's start: versioned there, its changes were older than those applied before the resume, and the
// fence dropped them.
func TestTransactionStartFromGTIDEvent(t *testing.T) {
	s := New(Config{}, nil)
	for name, ev := range map[string]replication.Event{
		"mysql":   &replication.GTIDEvent{},
		"mariadb": &replication.MariadbGTIDEvent{},
	} {
		st := &stream{s: s, tables: map[uint64]*tableState{}, file: "binlog.000007", fileSeq: 7, pos: 197}
		h := &replication.EventHeader{Timestamp: 1, LogPos: 5000, EventSize: 79}
		if err := st.handle(context.Background(), &replication.BinlogEvent{Header: h, Event: ev}, h.LogPos); err != nil {
			t.Fatal(err)
		}
		if st.txStart != 4921 || st.txFile != 7 || !st.inTx {
			t.Errorf("%s: transaction starts at %d:%d (in a transaction: %v), want 7:4921", name, st.txFile, st.txStart, st.inTx)
		}
	}
}
