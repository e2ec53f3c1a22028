package reconcile

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the reconciler's collectors. A nil *Metrics records nothing.
type Metrics struct {
	DriftFound    *prometheus.CounterVec
	DriftRepaired *prometheus.CounterVec
	RowsCompared  *prometheus.CounterVec
	Passes        *prometheus.CounterVec
	PassDuration  prometheus.Histogram

	now       func() time.Time
	mu        sync.Mutex
	lastVer   map[string]time.Time // the last finished pass of each table
	lastFull  map[string]time.Time // the last pass that verified each table in full (fullyVerifies)
	sinceVer  *prometheus.Desc
	sinceFull *prometheus.Desc
}

// NewMetrics creates the collectors and registers them on reg. now is the clock (nil: time.Now).
func NewMetrics(reg prometheus.Registerer, now func() time.Time) *Metrics {
	if now == nil {
		now = time.Now
	}
	m := &Metrics{
		DriftFound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_reconcile_drift_found_total",
			Help: "Rows found to differ between MySQL and Redis, by table and kind (missing, extra, stale).",
		}, []string{"table", "kind"}),
		DriftRepaired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_reconcile_drift_repaired_total",
			Help: "Drifted rows repaired with version-fenced writes, by table and kind.",
		}, []string{"table", "kind"}),
		RowsCompared: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_reconcile_rows_compared_total",
			Help: "MySQL rows compared with Redis, by table.",
		}, []string{"table"}),
		Passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "binlogsync_reconcile_passes_total",
			Help: "Reconcile passes, by result (finished, failed).",
		}, []string{"result"}),
		PassDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "binlogsync_reconcile_pass_duration_seconds",
			Help:    "Duration of reconcile passes, finished or not.",
			Buckets: prometheus.ExponentialBuckets(0.1, 3, 12),
		}),
		now:      now,
		lastVer:  map[string]time.Time{},
		lastFull: map[string]time.Time{},
		sinceVer: prometheus.NewDesc("binlogsync_reconcile_seconds_since_verified",
			"Seconds since the table last finished a reconcile pass (any: cached or full, dry run or not).",
			[]string{"table"}, nil),
		sinceFull: prometheus.NewDesc("binlogsync_reconcile_seconds_since_full_verified",
			"Seconds since the table last finished a full pass (every Redis row hashed from its fields) that left "+
				"Redis equal to MySQL.", []string{"table"}, nil),
	}
	reg.MustRegister(m.DriftFound, m.DriftRepaired, m.RowsCompared, m.Passes, m.PassDuration, sinceCollector{m})
	return m
}

// sinceCollector exposes the time since each table's last verified pass, computed at scrape time.
type sinceCollector struct{ m *Metrics }

func (c sinceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.sinceVer; ch <- c.m.sinceFull }

func (c sinceCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	now := c.m.now()
	for t, at := range c.m.lastVer {
		ch <- prometheus.MustNewConstMetric(c.m.sinceVer, prometheus.GaugeValue, now.Sub(at).Seconds(), t)
	}
	for t, at := range c.m.lastFull {
		ch <- prometheus.MustNewConstMetric(c.m.sinceFull, prometheus.GaugeValue, now.Sub(at).Seconds(), t)
	}
}

// SetVerified records when a table last finished a pass, and when one verified it in full (at start-up, from the
// saved state; full is zero when none did).
func (m *Metrics) SetVerified(table string, at, full time.Time) {
	m.verified(table, at, false)
	if m != nil && !full.IsZero() {
		m.mu.Lock()
		m.lastFull[table] = full
		m.mu.Unlock()
	}
}

// verified records that a pass over table finished at at; full: it verified the table in full.
func (m *Metrics) verified(table string, at time.Time, full bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastVer[table] = at
	if full {
		m.lastFull[table] = at
	}
}

func (m *Metrics) pass(ok bool, d time.Duration) {
	if m == nil {
		return
	}
	res := "finished"
	if !ok {
		res = "failed"
	}
	m.Passes.WithLabelValues(res).Inc()
	m.PassDuration.Observe(d.Seconds())
}

func (m *Metrics) table(table string, rows int64, found, repaired map[string]int64) {
	if m == nil {
		return
	}
	m.RowsCompared.WithLabelValues(table).Add(float64(rows))
	for _, k := range []string{KindMissing, KindExtra, KindStale} {
		m.DriftFound.WithLabelValues(table, k).Add(float64(found[k]))
		m.DriftRepaired.WithLabelValues(table, k).Add(float64(repaired[k]))
	}
}
