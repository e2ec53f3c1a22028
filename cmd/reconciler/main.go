// Command reconciler compares MySQL tables with their rows in Redis and repairs the drift (SPEC section 5).
//
//	reconciler run   --config FILE [--table db.t ...] [--dry-run] [--scan-orphans] [--cached] [--restore-expired] [--restart] [--output text|json]
//	reconciler serve --config FILE [--scan-orphans] [--full-every 24h]
//
// run does one pass and exits 0 when the pass finished, whatever it repaired; serve reconciles on a schedule
// (reconcile.interval) and on POST /reconcile. See docs/reconciler.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/binlogsync/binlogsync/app"
	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/reconcile"
)

const usage = `usage:
  reconciler run   --config FILE [--table db.t ...] [--dry-run] [--scan-orphans | --no-scan-orphans] [--cached] [--restore-expired] [--restart] [--output text|json]
  reconciler serve --config FILE [--scan-orphans] [--full-every 24h]
`

func main() {
	app.DefaultGC(os.Getenv) // GOGC=200 unless set: a full pass allocates a key string per row, which dies within its range
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type tableList []string

func (t *tableList) String() string { return strings.Join(*t, ",") }
func (t *tableList) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			if !strings.Contains(v, ".") {
				return fmt.Errorf("table %q: want db.table", v)
			}
			*t = append(*t, v)
		}
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "run" && args[0] != "serve") {
		fmt.Fprint(stderr, usage)
		return app.ExitConfig
	}
	cmd := args[0]
	fs := flag.NewFlagSet("reconciler "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML configuration file (keys can be overridden by BINLOGSYNC_* environment variables)")
	scan := fs.Bool("scan-orphans", false, "SCAN each table's key pattern for keys written outside the pipeline in cached passes too (full passes always do, unless --no-scan-orphans; serve: or reconcile.scan_orphans)")
	var tables tableList
	var dryRun, restart, cached, restore, noScan *bool
	var output *string
	var fullEvery *time.Duration
	if cmd == "run" {
		fs.Var(&tables, "table", "reconcile only this db.table (repeatable, or comma-separated)")
		dryRun = fs.Bool("dry-run", false, "report drift without repairing it")
		restart = fs.Bool("restart", false, "ignore the progress of an interrupted pass and start over")
		cached = fs.Bool("cached", false, "trust the row hashes earlier passes cached in Redis rows (fast; misses edits made outside the pipeline that keep them)")
		restore = fs.Bool("restore-expired", false, "write missing keys of tables with a TTL too (an initial load) instead of taking them for expired")
		output = fs.String("output", "text", "report format: text or json")
		noScan = fs.Bool("no-scan-orphans", false, "leave out a full pass's SCAN of each table's key pattern (keys written outside the pipeline far from the table's rows then stay)")
	} else {
		fullEvery = fs.Duration("full-every", 24*time.Hour, "how often a scheduled pass hashes every Redis row instead of trusting cached row hashes (0 or negative: always); overrides reconcile.full_every")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return app.ExitConfig
	}
	if output != nil && *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "reconciler: --output %q: want text or json\n", *output)
		return app.ExitConfig
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, "reconciler: configuration error:", err)
		return app.ExitConfig
	}
	log := app.NewLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	reg := prometheus.NewRegistry()
	if cmd == "serve" {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	r, err := app.OpenReconciler(ctx, cfg, log, reg)
	if err != nil {
		return fail(stderr, err)
	}
	defer r.Close()

	if cmd == "serve" {
		full := cfg.Reconcile.FullEvery
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "full-every" {
				full = *fullEvery
			}
		})
		err := r.Serve(ctx, reconcile.ServeOptions{
			Addr:     cfg.Reconcile.HTTPAddr,
			Token:    cfg.Reconcile.Token,
			Interval: tableInterval(cfg),
			Registry: reg,
			Ready: func(ctx context.Context) error {
				if err := r.DB.PingContext(ctx); err != nil {
					return fmt.Errorf("mysql: %w", err)
				}
				return r.Redis.Ping(ctx).Err()
			},
			Pass:        reconcile.PassOptions{ScanOrphans: *scan || cfg.Reconcile.ScanOrphans},
			FullEvery:   fullInterval(full),
			SchemaCheck: schemaCheck(cfg.Reconcile.SchemaCheck),
		})
		if err != nil {
			return fail(stderr, err)
		}
		log.Info("stopped")
		return app.ExitOK
	}

	if len(tables) > 0 {
		selected, err := r.Tables(ctx)
		if err != nil {
			return fail(stderr, err)
		}
		for _, t := range tables {
			if !slices.Contains(selected, t) {
				fmt.Fprintf(stderr, "reconciler: --table %s: no such table among the selected ones (tables.include/exclude)\n", t)
				return app.ExitConfig
			}
		}
	}
	if *scan && *noScan {
		fmt.Fprintln(stderr, "reconciler: --scan-orphans and --no-scan-orphans contradict each other; give one")
		return app.ExitConfig
	}
	opts := reconcile.PassOptions{Tables: tables, DryRun: *dryRun, ScanOrphans: *scan, NoScanOrphans: *noScan,
		Restart: *restart, Cached: *cached, RestoreExpired: *restore}
	bar := newProgressBar(stderr)
	if bar != nil {
		opts.Progress = bar.update
	}
	rep, err := r.Run(ctx, opts)
	if bar != nil {
		bar.clear()
	}
	if rep != nil {
		if *output == "json" {
			_ = rep.WriteJSON(stdout)
		} else {
			_ = rep.WriteText(stdout)
		}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "reconciler: interrupted; the next run resumes from the last finished range")
			return app.ExitRuntime
		}
		return fail(stderr, err)
	}
	return app.ExitOK
}

// tableInterval is the time between scheduled passes over a table ("db.table"): its rule's reconcile_interval,
// else reconcile.interval.
func tableInterval(cfg *config.Config) func(string) time.Duration {
	return func(name string) time.Duration {
		db, table, _ := strings.Cut(name, ".")
		if r := cfg.Rule(db, table); r != nil && r.ReconcileInterval > 0 {
			return r.ReconcileInterval
		}
		return cfg.Reconcile.Interval
	}
}

// schemaCheck maps reconcile.schema_check to ServeOptions.SchemaCheck: 0 means never.
func schemaCheck(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// fullInterval maps --full-every to ServeOptions.FullEvery: 0 or negative means every pass is full.
func fullInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

func fail(stderr io.Writer, err error) int {
	code := app.ExitRuntime
	var ee *app.ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	fmt.Fprintln(stderr, "reconciler:", err)
	return code
}

// progressBar draws a one-line progress bar on a terminal.
type progressBar struct {
	w    io.Writer
	mu   sync.Mutex
	last time.Time
}

// newProgressBar returns a bar when w is a terminal, nil otherwise.
func newProgressBar(w io.Writer) *progressBar {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &progressBar{w: w}
}

func (b *progressBar) update(p reconcile.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	const width = 30
	frac := 0.0
	if p.EstRows > 0 {
		frac = min(float64(p.Rows)/float64(p.EstRows), 1)
	}
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r[%s%s] %3.0f%% %s %d/~%d rows (table %d/%d)\x1b[K", strings.Repeat("#", n),
		strings.Repeat(".", width-n), frac*100, p.Table, p.Rows, p.EstRows, p.TableIndex+1, p.Tables)
}

func (b *progressBar) clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprint(b.w, "\r\x1b[K")
}
