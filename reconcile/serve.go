package reconcile

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServeOptions configure Serve.
type ServeOptions struct {
	// Addr is the HTTP listen address ("" = no HTTP server).
	Addr string
	// Token, when not empty, is the bearer token /reconcile requires.
	Token string
	// Interval returns how often a table is reconciled (its last finished pass plus the interval is when it is
	// due again). Required.
	Interval func(table string) time.Duration
	// Registry is served on /metrics (nil: no /metrics).
	Registry *prometheus.Registry
	// Ready reports whether the servers answer, for /readyz (nil: always ready).
	Ready func(ctx context.Context) error
	// Pass holds the options of scheduled passes (Tables, Cached and Progress are set per pass).
	Pass PassOptions
	// FullEvery is how often a table's scheduled pass hashes every Redis row from its fields; the passes in
	// between use cached row hashes (PassOptions.Cached). Default 24h; negative: every pass is full.
	FullEvery time.Duration
	// Listening, when set, is called with the HTTP server's address once it listens.
	Listening func(addr string)
	// SchemaCheck is how often the tables' columns are compared with the ones of their last pass (see
	// ColumnsChanged): a table an ALTER TABLE changed is reconciled then, not at its interval. Default 1m;
	// negative: never.
	SchemaCheck time.Duration
}

// request is a pass asked for over HTTP.
type request struct {
	tables      []string
	scanOrphans bool
	dryRun      bool
	cached      bool
}

// status is what GET /reconcile returns.
type status struct {
	Running   bool      `json:"running"`
	Current   *Progress `json:"current,omitempty"`
	Last      *Report   `json:"last,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	NextDue   time.Time `json:"next_due,omitzero"`
}

// Serve reconciles tables on their schedule and on HTTP requests until ctx ends (then it returns nil).
func (r *Reconciler) Serve(ctx context.Context, opts ServeOptions) error {
	if opts.Interval == nil {
		return errors.New("reconcile: ServeOptions.Interval is required")
	}
	if opts.FullEvery == 0 {
		opts.FullEvery = 24 * time.Hour
	}
	if opts.SchemaCheck == 0 {
		opts.SchemaCheck = time.Minute
	}
	if verified, err := r.Verified(ctx); err == nil {
		full, _ := r.FullyVerified(ctx)
		for t, at := range verified {
			r.cfg.Metrics.SetVerified(t, at, full[t])
		}
	}
	trigger := make(chan request, 1)
	var mu sync.Mutex
	var lastErr string
	var nextDue time.Time

	if opts.Addr != "" {
		ln, err := net.Listen("tcp", opts.Addr)
		if err != nil {
			return fmt.Errorf("reconcile.http_addr %q: cannot listen: %w", opts.Addr, err)
		}
		mux := http.NewServeMux()
		if opts.Registry != nil {
			mux.Handle("/metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{Registry: opts.Registry}))
		}
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
			if opts.Ready != nil {
				cctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
				defer cancel()
				if err := opts.Ready(cctx); err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
			}
			_, _ = w.Write([]byte("ready\n"))
		})
		mux.HandleFunc("/reconcile", func(w http.ResponseWriter, req *http.Request) {
			if opts.Token != "" {
				got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
				if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(opts.Token)) != 1 {
					w.Header().Set("WWW-Authenticate", "Bearer")
					http.Error(w, "missing or wrong bearer token (reconcile.token)", http.StatusUnauthorized)
					return
				}
			}
			switch req.Method {
			case http.MethodGet:
				st := status{Current: r.Current(), Running: r.running.Load()}
				st.Last, _ = r.LastReport(req.Context())
				mu.Lock()
				st.LastError, st.NextDue = lastErr, nextDue
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(st)
			case http.MethodPost:
				q, err := url.ParseQuery(req.URL.RawQuery)
				if err != nil {
					http.Error(w, "malformed query string: "+err.Error(), http.StatusBadRequest)
					return
				}
				if n, _ := req.Body.Read(make([]byte, 1)); n > 0 {
					http.Error(w, "POST /reconcile takes its parameters in the query string, not in the body",
						http.StatusBadRequest)
					return
				}
				rq, err := parseRequest(q)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				if len(rq.tables) > 0 {
					known, err := r.Tables(req.Context())
					if err != nil {
						http.Error(w, err.Error(), http.StatusServiceUnavailable)
						return
					}
					for _, t := range rq.tables {
						if _, found := slices.BinarySearch(known, t); !found {
							http.Error(w, fmt.Sprintf("table %q is not a selected table (tables.include/exclude); "+
								"selected: %s", t, strings.Join(known, ", ")), http.StatusBadRequest)
							return
						}
					}
				}
				if r.running.Load() {
					http.Error(w, "a pass is running; GET /reconcile shows its progress", http.StatusConflict)
					return
				}
				select {
				case trigger <- rq:
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusAccepted)
					_ = json.NewEncoder(w).Encode(map[string]any{"accepted": true, "tables": rq.tables})
				default:
					http.Error(w, "a pass is already queued", http.StatusConflict)
				}
			default:
				w.Header().Set("Allow", "GET, POST")
				http.Error(w, "use GET (state) or POST (start a pass)", http.StatusMethodNotAllowed)
			}
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				r.log.Error("reconcile http server stopped", slog.String("error", err.Error()))
			}
		}()
		defer srv.Close()
		r.log.Info("reconcile http listening", slog.String("addr", ln.Addr().String()))
		if opts.Listening != nil {
			opts.Listening(ln.Addr().String())
		}
	}

	retry := time.Duration(0)
	// attempted holds when each table was last in a finished pass, verified or not: a table the pass skips (no
	// primary key) is not due again before its interval, or the schedule would run pass after pass on it.
	attempted := map[string]time.Time{}
	// altered holds, per table, the column signature of the last finished pass started because the columns
	// changed: a table that pass skips (no primary key any more) is not started again for the same signature.
	// A pass that fails is retried.
	altered := map[string]string{}
	for {
		due, next, err := r.due(ctx, opts.Interval, attempted)
		pending := map[string]string{} // the signatures this pass is started for
		if err == nil && opts.SchemaCheck > 0 && retry == 0 {
			due = r.dueAltered(ctx, due, altered, pending)
			if check := time.Now().Add(opts.SchemaCheck); check.Before(next) {
				next = check
			}
		}
		if err != nil {
			r.log.Warn("reading the schedule failed", slog.String("error", err.Error()))
			next = time.Now().Add(time.Minute)
		}
		if retry > 0 {
			next = time.Now().Add(retry)
			due = nil
		}
		mu.Lock()
		nextDue = next
		mu.Unlock()
		var rq request
		if len(due) == 0 {
			t := time.NewTimer(max(time.Until(next), 0))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case rq = <-trigger:
				t.Stop()
			case <-t.C:
				retry = 0
				continue
			}
		} else {
			rq = request{tables: due, scanOrphans: opts.Pass.ScanOrphans, dryRun: opts.Pass.DryRun,
				cached: r.fullRecently(ctx, due, opts.FullEvery)}
		}
		po := opts.Pass
		po.Tables, po.ScanOrphans, po.DryRun, po.Cached = rq.tables, rq.scanOrphans, rq.dryRun, rq.cached
		started := time.Now()
		rep, err := r.Run(ctx, po)
		if err == nil { // a failed pass is retried in a minute instead
			passed := rq.tables
			if len(passed) == 0 {
				passed, _ = r.Tables(ctx)
			}
			for _, t := range passed {
				attempted[t] = started
			}
			maps.Copy(altered, pending)
		}
		if ctx.Err() != nil {
			return nil
		}
		mu.Lock()
		if err != nil {
			lastErr = err.Error()
			retry = passRetry
			r.log.Error("reconcile pass failed; retrying in a minute", slog.String("error", err.Error()))
		} else {
			lastErr, retry = "", 0
			t := rep.Total()
			r.log.Info("reconcile pass finished", slog.String("pass", rep.ID), slog.Int64("rows", t.Rows),
				slog.Int64("drift", t.Drift()), slog.Duration("took", rep.Finished.Sub(rep.Started)))
		}
		mu.Unlock()
	}
}

// due returns the tables whose interval has passed since their last finished pass (or their last attempt, when
// later), and when the next one is due.
func (r *Reconciler) due(ctx context.Context, interval func(string) time.Duration, attempted map[string]time.Time) ([]string, time.Time, error) {
	tables, err := r.Tables(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	verified, err := r.Verified(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	now := time.Now()
	next := now.Add(time.Hour)
	var due []string
	for _, t := range tables {
		at, ok := verified[t]
		if a, tried := attempted[t]; tried && a.After(at) {
			at, ok = a, true
		}
		when := at.Add(interval(t))
		if !ok || !when.After(now) {
			due = append(due, t)
			continue
		}
		if when.Before(next) {
			next = when
		}
	}
	sort.Strings(due)
	return due, next, nil
}

// passRetry is how long serve waits before it tries a failed pass again.
var passRetry = time.Minute

// dueAltered adds to due the tables whose columns changed since their last pass (ColumnsChanged) and whose
// signature is not in altered, and puts their signatures in pending.
func (r *Reconciler) dueAltered(ctx context.Context, due []string, altered, pending map[string]string) []string {
	changed, sigs, err := r.ColumnsChanged(ctx)
	if err != nil {
		r.log.Warn("checking the tables' columns failed", slog.String("error", err.Error()))
		return due
	}
	if len(changed) == 0 {
		return due
	}
	tables, err := r.Tables(ctx)
	if err != nil {
		return due
	}
	for _, t := range changed {
		if altered[t] == sigs[t] || slices.Contains(due, t) || !slices.Contains(tables, t) {
			continue
		}
		pending[t] = sigs[t]
		r.log.Info("the columns of a table changed since its last pass (ALTER TABLE); reconciling it now, so that "+
			"its rows written before the change take the new shape", slog.String("table", t))
		due = append(due, t)
	}
	sort.Strings(due)
	return due
}

// fullRecently reports whether every table had a full pass within every (so the next pass may use cached hashes).
func (r *Reconciler) fullRecently(ctx context.Context, tables []string, every time.Duration) bool {
	if every < 0 {
		return false
	}
	full, err := r.FullyVerified(ctx)
	if err != nil {
		return false
	}
	for _, t := range tables {
		if at, ok := full[t]; !ok || time.Since(at) > every {
			return false
		}
	}
	return true
}

// parseRequest reads POST /reconcile's query. An unknown parameter or a flag that is not a boolean is refused:
// a mistyped dry_run must not run a pass that repairs.
func parseRequest(q url.Values) (request, error) {
	flags := map[string]*bool{}
	var rq request
	flags["scan_orphans"], flags["dry_run"], flags["cached"] = &rq.scanOrphans, &rq.dryRun, &rq.cached
	for k, vs := range q {
		if k == "table" {
			rq.tables = vs
			continue
		}
		p, ok := flags[k]
		if !ok {
			return request{}, fmt.Errorf("unknown parameter %q: POST /reconcile takes table (repeated), "+
				"scan_orphans, dry_run and cached", k)
		}
		if len(vs) != 1 {
			return request{}, fmt.Errorf("parameter %s given %d times", k, len(vs))
		}
		b, err := strconv.ParseBool(vs[0])
		if err != nil {
			return request{}, fmt.Errorf("parameter %s=%q: want 1, true, 0 or false", k, vs[0])
		}
		*p = b
	}
	return rq, nil
}
