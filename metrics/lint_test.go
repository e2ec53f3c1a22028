package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/metrics"
	"github.com/binlogsync/binlogsync/reconcile"
)

const (
	dashboardPath = "../deploy/grafana/binlogsync.json"
	alertsPath    = "../deploy/prometheus/alerts.yml"
	metricsDoc    = "../docs/metrics.md"
)

// metricName matches the metric names this project and its collectors expose:
// binlogsync_* from metrics and reconcile, go_* and process_* from the
// runtime collectors that cmd/binlogsync and `reconciler serve` register.
var metricName = regexp.MustCompile(`\b(?:binlogsync|process|go)_[a-zA-Z0-9_:]*[a-zA-Z0-9]`)

// ownName matches only the names this project defines (what docs/metrics.md lists).
var ownName = regexp.MustCompile(`\bbinlogsync_[a-zA-Z0-9_:]*[a-zA-Z0-9]`)

// gatherAll registers every collector the two programs expose on one fresh
// registry, gives each vector a child so it is gathered, and returns the families by name.
func gatherAll(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m := metrics.New(reg, func() float64 { return 2 })
	tbl := &change.Table{DB: "shop", Name: "users"}
	m.ObserveRowsRead(tbl, change.Insert, 1)
	m.ObserveApplied([]change.Change{{Table: tbl, Op: change.Update}})
	m.DeadLetters.WithLabelValues("shop.users").Inc()
	m.Events.WithLabelValues("commit").Inc()
	m.BatchRows.Observe(1)
	m.ApplyDuration.Observe(0.001)

	k := metrics.NewKafka(reg, func() float64 { return 0 })
	k.ConsumerLag.WithLabelValues("binlogsync", "0").Set(0)
	k.Ignored.WithLabelValues("shop.users").Inc()

	r := reconcile.NewMetrics(reg, func() time.Time { return time.Unix(1000, 0) })
	r.DriftFound.WithLabelValues("shop.users", reconcile.KindMissing).Inc()
	r.DriftRepaired.WithLabelValues("shop.users", reconcile.KindMissing).Inc()
	r.RowsCompared.WithLabelValues("shop.users").Inc()
	r.Passes.WithLabelValues("finished").Inc()
	r.PassDuration.Observe(1)
	r.SetVerified("shop.users", time.Unix(900, 0), time.Unix(800, 0))

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// ownFamilies are the gathered families this project defines (not go_/process_).
func ownFamilies(fams map[string]*dto.MetricFamily) []string {
	var names []string
	for n := range fams {
		if strings.HasPrefix(n, "binlogsync_") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

func TestAllMetricsPassPromlint(t *testing.T) {
	fams := gatherAll(t)
	var mfs []*dto.MetricFamily
	for _, n := range ownFamilies(fams) {
		mfs = append(mfs, fams[n])
	}
	// Each constructor's collectors, vectors included, must be gathered, or the lint proves little.
	for _, want := range []string{
		"binlogsync_rows_read_total", "binlogsync_dead_letters_total", "binlogsync_queue_batches",
		"binlogsync_kafka_consumer_lag_messages", "binlogsync_kafka_unacknowledged_messages",
		"binlogsync_reconcile_drift_found_total", "binlogsync_reconcile_seconds_since_verified",
		"binlogsync_reconcile_seconds_since_full_verified",
	} {
		if fams[want] == nil {
			t.Errorf("%s was not gathered", want)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatalf("linting: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// resolves reports whether a name used in a query is a gathered family, or a
// histogram's or summary's _bucket/_sum/_count series.
func resolves(fams map[string]*dto.MetricFamily, name string) bool {
	if fams[name] != nil {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		mf := fams[base]
		if mf == nil {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suf != "_bucket"
		}
	}
	return false
}

// query is a PromQL expression (or text naming metrics) and where it was found.
type query struct{ where, text string }

// dashboardQueries returns every "expr" and "query" string in the Grafana
// dashboard (panel targets and templating variables).
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatalf("reading the dashboard: %v", err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parsing %s: %v", dashboardPath, err)
	}
	var out []query
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			where := path
			if title, ok := v["title"].(string); ok {
				where = path + "[" + title + "]"
			}
			for k, c := range v {
				if s, ok := c.(string); ok && (k == "expr" || k == "query") {
					out = append(out, query{where + "." + k, s})
					continue
				}
				walk(where+"."+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path, c)
			}
		}
	}
	walk("dashboard", doc)
	return out
}

type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// alertQueries returns every rule expression, and the annotations (which name
// metrics for the reader).
func alertQueries(t *testing.T) (exprs, annotations []query) {
	t.Helper()
	raw, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatalf("reading the alert rules: %v", err)
	}
	var doc alertRules
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parsing %s: %v", alertsPath, err)
	}
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			name := g.Name + "/" + r.Alert + r.Record
			if r.Expr == "" {
				t.Errorf("alert rule %s has no expr", name)
			}
			exprs = append(exprs, query{name + ".expr", r.Expr})
			for k, a := range r.Annotations {
				annotations = append(annotations, query{name + ".annotations." + k, a})
			}
		}
	}
	if len(exprs) == 0 {
		t.Fatalf("%s holds no rules", alertsPath)
	}
	return exprs, annotations
}

func TestDashboardAndAlertsUseExistingMetrics(t *testing.T) {
	fams := gatherAll(t)
	dash := dashboardQueries(t)
	exprs, annotations := alertQueries(t)
	if len(dash) < 10 {
		t.Fatalf("found %d queries in the dashboard; the walk is missing panels", len(dash))
	}
	seen := 0
	check := func(qs []query) {
		for _, q := range qs {
			for _, name := range metricName.FindAllString(q.text, -1) {
				seen++
				if !resolves(fams, name) {
					t.Errorf("%s: %q uses %s, which no collector exposes", q.where, q.text, name)
				}
			}
		}
	}
	check(dash)
	check(exprs)
	check(annotations)
	if seen < 20 {
		t.Fatalf("extracted %d metric references; the name pattern is missing them", seen)
	}
}

func TestMetricsDocListsEveryMetric(t *testing.T) {
	fams := gatherAll(t)
	raw, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatalf("reading the metrics doc: %v", err)
	}
	documented := ownName.FindAllString(string(raw), -1)
	registered := ownFamilies(fams)
	for _, n := range registered {
		if !slices.Contains(documented, n) {
			t.Errorf("%s is exposed but not in %s", n, metricsDoc)
		}
	}
	for _, n := range documented {
		if !resolves(fams, n) {
			t.Errorf("%s documents %s, which no collector exposes", metricsDoc, n)
		}
	}
}
