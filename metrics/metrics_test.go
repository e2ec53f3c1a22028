package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/binlogsync/binlogsync/change"
)

func TestMetricNamesPassPromlint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, func() float64 { return 3 })
	m.ObserveRowsRead(&change.Table{DB: "d", Name: "t"}, change.Insert, 1)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n < 15 {
		t.Fatalf("gathered %d metrics (%v), want the whole set", n, err)
	}
}

func TestAppliedCountsByTableAndOp(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, nil)
	users := &change.Table{DB: "shop", Name: "users"}
	orders := &change.Table{DB: "shop", Name: "orders"}
	m.ObserveApplied([]change.Change{
		{Op: change.Insert, Table: users}, {Op: change.Insert, Table: users}, {Op: change.Update, Table: users},
		{Op: change.Delete, Table: orders}, {Op: change.Insert, Table: users},
	})
	want := `
# HELP binlogsync_rows_applied_total Row changes applied to Redis (written, or skipped as not newer), by table and operation.
# TYPE binlogsync_rows_applied_total counter
binlogsync_rows_applied_total{op="delete",table="shop.orders"} 1
binlogsync_rows_applied_total{op="delete",table="shop.users"} 0
binlogsync_rows_applied_total{op="insert",table="shop.orders"} 0
binlogsync_rows_applied_total{op="insert",table="shop.users"} 3
binlogsync_rows_applied_total{op="update",table="shop.orders"} 0
binlogsync_rows_applied_total{op="update",table="shop.users"} 1
`
	if err := testutil.CollectAndCompare(m.RowsApplied, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestLagFollowsTheNewestAppliedEvent(t *testing.T) {
	m := New(prometheus.NewRegistry(), nil)
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	if m.Lag() != 0 {
		t.Fatalf("lag before anything was applied = %v, want 0", m.Lag())
	}
	m.Applied(time.Unix(990, 0))
	if m.Lag() != 10 {
		t.Fatalf("lag = %v, want 10", m.Lag())
	}
	m.Applied(time.Unix(980, 0)) // an older batch never moves lag backwards
	if m.Lag() != 10 {
		t.Fatalf("lag = %v, want 10", m.Lag())
	}
	m.Applied(time.Unix(1000, 0)) // a heartbeat batch stamped now
	if m.Lag() != 0 {
		t.Fatalf("lag = %v, want 0", m.Lag())
	}
}
