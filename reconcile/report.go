package reconcile

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/binlogsync/binlogsync/change"
)

// Drift kinds.
const (
	KindMissing = "missing" // a MySQL row without its Redis key
	KindExtra   = "extra"   // a Redis key without its MySQL row (orphan)
	KindStale   = "stale"   // a Redis row whose fields differ from MySQL
)

// Count is how many rows of one kind of drift a pass found and how many it repaired.
type Count struct {
	Found    int64 `json:"found"`
	Repaired int64 `json:"repaired"`
}

// TableReport is what a pass did on one table.
type TableReport struct {
	Table string `json:"table"`
	// Error is why the table was skipped (ErrUnsupported), "" when it was compared.
	Error string `json:"error,omitempty"`
	// Rows is the number of MySQL rows compared.
	Rows int64 `json:"rows"`
	// Ranges is the number of primary-key ranges; RangesDiffered how many had different digests.
	Ranges         int64 `json:"ranges"`
	RangesDiffered int64 `json:"ranges_differed"`
	Missing        Count `json:"missing"`
	Extra          Count `json:"extra"`
	Stale          Count `json:"stale"`
	// InFlight counts differences explained by changes the stream applied after the range's snapshot: not drift.
	InFlight int64 `json:"in_flight"`
	// Expired counts missing keys of a table with a TTL that does not restore expired rows: not drift.
	Expired int64 `json:"expired"`
	// Fenced counts repairs the fence skipped because the stream wrote a newer version meanwhile.
	Fenced int64 `json:"fenced"`
	// Refused counts repairs Redis refused (a key holding another type, for example).
	Refused int64 `json:"refused"`
	// Unsettled counts differences decided without waiting for the stream to reach the range's snapshot
	// (stream stopped or too far behind): some may be lag rather than drift.
	Unsettled int64 `json:"unsettled"`
	// OrphanScan is the number of keys --scan-orphans or the key index had looked up in MySQL.
	OrphanScan int64 `json:"orphan_scan_keys,omitempty"`
	MySQLBytes int64 `json:"mysql_bytes"`
	RedisBytes int64 `json:"redis_bytes"`
	// Duration is the time spent on the table, in this process (a resumed table counts both runs).
	Duration time.Duration `json:"duration_ns"`
}

// Drift is the total number of rows found drifted.
func (t *TableReport) Drift() int64 { return t.Missing.Found + t.Extra.Found + t.Stale.Found }

func (t *TableReport) add(o *TableReport) {
	t.Rows += o.Rows
	t.Ranges += o.Ranges
	t.RangesDiffered += o.RangesDiffered
	for _, p := range [][2]*Count{{&t.Missing, &o.Missing}, {&t.Extra, &o.Extra}, {&t.Stale, &o.Stale}} {
		p[0].Found += p[1].Found
		p[0].Repaired += p[1].Repaired
	}
	t.InFlight += o.InFlight
	t.Expired += o.Expired
	t.Fenced += o.Fenced
	t.Refused += o.Refused
	t.Unsettled += o.Unsettled
	t.OrphanScan += o.OrphanScan
	t.MySQLBytes += o.MySQLBytes
	t.RedisBytes += o.RedisBytes
	t.Duration += o.Duration
}

// Report is what one pass did.
type Report struct {
	ID       string    `json:"id"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Start is a transaction boundary at or before every snapshot of the pass: a stream started there after the
	// pass misses nothing (the bootstrap position).
	Start   change.Position `json:"start"`
	DryRun  bool            `json:"dry_run"`
	Resumed bool            `json:"resumed"`
	// Cached is set when the Redis side used cached row hashes (PassOptions.Cached).
	Cached bool          `json:"cached"`
	Tables []TableReport `json:"tables"`
	// DeadLetters is what the pass did with the sink's dead-letter stream (nil: none configured).
	DeadLetters *DeadLetterReport `json:"dead_letters,omitempty"`
}

// Total sums the table reports.
func (r *Report) Total() TableReport {
	var t TableReport
	for i := range r.Tables {
		t.add(&r.Tables[i])
	}
	t.Table = "total"
	return t
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as a table for people.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "table\trows\tranges\tdiffered\tmissing\textra\tstale\tin-flight\texpired\tmysql read\tredis read\ttime\t")
	line := func(t *TableReport) {
		if t.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t\n", t.Table)
			return
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", t.Table, t.Rows, t.Ranges, t.RangesDiffered,
			count(t.Missing), count(t.Extra), count(t.Stale), t.InFlight, t.Expired,
			bytesText(t.MySQLBytes), bytesText(t.RedisBytes), t.Duration.Round(time.Millisecond))
	}
	for i := range r.Tables {
		line(&r.Tables[i])
	}
	if len(r.Tables) > 1 {
		t := r.Total()
		line(&t)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, t := range r.Tables {
		if t.Error != "" {
			notes = append(notes, fmt.Sprintf("%s skipped: %s", t.Table, t.Error))
		}
		if t.Fenced > 0 || t.Refused > 0 || t.Unsettled > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d repairs lost to newer stream changes, %d refused by Redis, "+
				"%d differences decided without the stream reaching the snapshot", t.Table, t.Fenced, t.Refused, t.Unsettled))
		}
	}
	if dl := r.DeadLetters; dl != nil && dl.Entries > 0 {
		notes = append(notes, fmt.Sprintf("dead letters in %s: %d read, %d resolved from MySQL (%d rows repaired), %d left",
			dl.Stream, dl.Entries, dl.Resolved, dl.Repaired, dl.Remaining))
	}
	mode := "repaired"
	if r.DryRun {
		mode = "dry run, nothing repaired"
	}
	notes = append(notes, fmt.Sprintf("missing/extra/stale are found/repaired (%s); start position %s:%d; took %s",
		mode, r.Start.File, r.Start.Pos, r.Finished.Sub(r.Started).Round(time.Millisecond)))
	_, err := fmt.Fprintln(w, strings.Join(notes, "\n"))
	return err
}

func count(c Count) string { return fmt.Sprintf("%d/%d", c.Found, c.Repaired) }

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
