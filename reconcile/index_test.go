package reconcile

import (
	"context"
	"testing"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/sink"
)

// TestKeyIndexOrphans checks orphan detection through the sink's key index for a primary key that cannot be
// probed (text): a key whose row was deleted behind the stream is found and deleted without --scan-orphans, an
// index entry whose key is gone is pruned, and a pass without orphans reads no index set.
func TestKeyIndexOrphans(t *testing.T) {
	f := newFixture(t)
	f.exec("CREATE TABLE s (code VARCHAR(20) PRIMARY KEY, v INT)",
		"INSERT INTO s SELECT CONCAT('c', seq), seq FROM seq_1_to_3000")
	f.opts["s"] = TableOptions{KeyIndex: true}
	r := f.reconciler(500)
	ctx := context.Background()
	if tr := tableReport(t, f.run(r, PassOptions{}), "s"); tr.Missing.Repaired != 3000 {
		t.Fatalf("initial load: %+v", tr)
	}
	if tr := tableReport(t, f.run(r, PassOptions{}), "s"); tr.Drift() != 0 || tr.OrphanScan != 0 {
		t.Fatalf("pass without orphans: %+v, want no drift and no index set read", tr)
	}
	f.execNoBinlog("DELETE FROM s WHERE code IN ('c17', 'c2999')") // orphans: rows gone behind the stream
	f.execNoBinlog("DELETE FROM s WHERE code = 'c500'")
	f.rdb.Del(ctx, f.db+":s:c500") // gone from both sides; its index entry is stale
	tr := tableReport(t, f.run(r, PassOptions{}), "s")
	if tr.Extra != (Count{2, 2}) || tr.Missing.Found+tr.Stale.Found != 0 || tr.OrphanScan == 0 {
		t.Fatalf("pass: %+v, want the 2 orphans found through the index and deleted", tr)
	}
	if n := f.rdb.Exists(ctx, f.db+":s:c17", f.db+":s:c2999").Val(); n != 0 {
		t.Fatalf("%d orphan keys left", n)
	}
	var members int64
	for slot := range sink.SlotCount {
		members += f.rdb.SCard(ctx, sink.IndexKey("", &change.Table{DB: f.db, Name: "s"}, slot)).Val()
	}
	if members != 2997 {
		t.Fatalf("the key index holds %d keys, want the 2997 rows", members)
	}
	if tr := tableReport(t, f.run(r, PassOptions{}), "s"); tr.Drift() != 0 || tr.OrphanScan != 0 {
		t.Fatalf("pass after the repair: %+v, want no drift and no index set read", tr)
	}
}
