package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
)

// stateStore keeps the reconciler's state in one Redis hash (Config.StateKey):
//
//	pass             the interrupted pass, JSON passState (absent once a pass finishes)
//	table:<db.t>     the progress of a table in that pass, JSON tableProgress
//	last_report      the report of the last finished pass, JSON Report
//	verified:<db.t>  when the table last finished a pass, RFC 3339
//	full:<db.t>      when the table last finished a pass that hashed every Redis row from its fields and left Redis
//	                 equal to MySQL (not a dry run that found drift, nothing refused): fullyVerifies
//
// An empty key disables it: no resume, no last report.
type stateStore struct {
	rdb redis.UniversalClient
	key string
}

type passState struct {
	ID      string          `json:"id"`
	Started time.Time       `json:"started"`
	Start   change.Position `json:"start"`
	// Cached and DryRun are the options of the pass that began it: a pass resumed with others reports both
	// (its finished ranges were compared that way), so that it does not count as a full verification.
	Cached bool `json:"cached,omitempty"`
	DryRun bool `json:"dry_run,omitempty"`
}

// tableProgress is how far a table got: every range up to After (hex of the primary-key values) is finished.
type tableProgress struct {
	Table  string      `json:"table"`
	After  []string    `json:"after,omitempty"`
	Done   bool        `json:"done"`
	Report TableReport `json:"report"`
}

func newTableProgress(after [][]byte, rep *TableReport) tableProgress {
	p := tableProgress{Table: rep.Table, Report: *rep}
	for _, v := range after {
		p.After = append(p.After, hex.EncodeToString(v))
	}
	return p
}

func (p *tableProgress) after() ([][]byte, error) {
	if len(p.After) == 0 {
		return nil, nil
	}
	out := make([][]byte, len(p.After))
	for i, h := range p.After {
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("reading the reconcile progress of %s: %w", p.Table, err)
		}
		out[i] = b
	}
	return out, nil
}

func (s *stateStore) get(ctx context.Context, field string, v any) (bool, error) {
	if s.key == "" {
		return false, nil
	}
	b, err := s.rdb.HGet(ctx, s.key, field).Bytes()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the reconcile state (%s %s): %w", s.key, field, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("reading the reconcile state (%s %s): %w; delete the field to start over", s.key, field, err)
	}
	return true, nil
}

func (s *stateStore) set(ctx context.Context, values ...any) error {
	if s.key == "" {
		return nil
	}
	for i := 1; i < len(values); i += 2 {
		if _, ok := values[i].(string); !ok {
			b, err := json.Marshal(values[i])
			if err != nil {
				return fmt.Errorf("encoding the reconcile state: %w", err)
			}
			values[i] = b
		}
	}
	if err := s.rdb.HSet(ctx, s.key, values...).Err(); err != nil {
		return fmt.Errorf("saving the reconcile state (%s): %w", s.key, err)
	}
	return nil
}

func (s *stateStore) loadPass(ctx context.Context) (*passState, error) {
	var p passState
	ok, err := s.get(ctx, "pass", &p)
	if !ok || err != nil {
		return nil, err
	}
	return &p, nil
}

func (s *stateStore) savePass(ctx context.Context, p *passState) error { return s.set(ctx, "pass", p) }

func (s *stateStore) loadTable(ctx context.Context, table string) (*tableProgress, error) {
	var p tableProgress
	ok, err := s.get(ctx, "table:"+table, &p)
	if !ok || err != nil {
		return nil, err
	}
	return &p, nil
}

func (s *stateStore) saveTable(ctx context.Context, p *tableProgress) error {
	return s.set(ctx, "table:"+p.Table, p)
}

func (s *stateStore) tableDone(ctx context.Context, rep *TableReport) error {
	return s.set(ctx, "table:"+rep.Table, &tableProgress{Table: rep.Table, Done: true, Report: *rep})
}

// clearProgress forgets an interrupted pass.
func (s *stateStore) clearProgress(ctx context.Context) error {
	if s.key == "" {
		return nil
	}
	fields, err := s.rdb.HKeys(ctx, s.key).Result()
	if err != nil {
		return fmt.Errorf("reading the reconcile state (%s): %w", s.key, err)
	}
	var del []string
	for _, f := range fields {
		if f == "pass" || strings.HasPrefix(f, "table:") {
			del = append(del, f)
		}
	}
	if len(del) == 0 {
		return nil
	}
	if err := s.rdb.HDel(ctx, s.key, del...).Err(); err != nil {
		return fmt.Errorf("clearing the reconcile state (%s): %w", s.key, err)
	}
	return nil
}

// finish stores the report and the verification times, and forgets the pass's progress.
func (s *stateStore) finish(ctx context.Context, rep *Report) error {
	values := []any{"last_report", rep}
	for _, t := range rep.Tables {
		if t.Error == "" {
			values = append(values, "verified:"+t.Table, rep.Finished.Format(time.RFC3339Nano))
			if fullyVerifies(rep, &t) {
				values = append(values, "full:"+t.Table, rep.Finished.Format(time.RFC3339Nano))
			}
		}
	}
	if err := s.set(ctx, values...); err != nil {
		return err
	}
	return s.clearProgress(ctx)
}

// fullyVerifies reports whether pass rep leaves table t verified in full: every Redis row hashed from its fields
// (not cached), and Redis equal to MySQL at the end (no dry run that found drift, no repair refused).
func fullyVerifies(rep *Report, t *TableReport) bool {
	return t.Error == "" && !rep.Cached && (!rep.DryRun || t.Drift() == 0) && t.Refused == 0
}

// LastReport returns the report of the last finished pass, nil when there is none.
func (r *Reconciler) LastReport(ctx context.Context) (*Report, error) {
	s := &stateStore{rdb: r.cfg.Redis, key: r.cfg.StateKey}
	var rep Report
	ok, err := s.get(ctx, "last_report", &rep)
	if !ok || err != nil {
		return nil, err
	}
	return &rep, nil
}

// Verified returns when each table last finished a pass.
func (r *Reconciler) Verified(ctx context.Context) (map[string]time.Time, error) {
	return r.times(ctx, "verified:")
}

// FullyVerified returns when each table last finished a pass that verified it in full (fullyVerifies).
func (r *Reconciler) FullyVerified(ctx context.Context) (map[string]time.Time, error) {
	return r.times(ctx, "full:")
}

func (r *Reconciler) times(ctx context.Context, prefix string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if r.cfg.StateKey == "" {
		return out, nil
	}
	m, err := r.cfg.Redis.HGetAll(ctx, r.cfg.StateKey).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the reconcile state (%s): %w", r.cfg.StateKey, err)
	}
	for f, v := range m {
		if t, ok := strings.CutPrefix(f, prefix); ok {
			if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
				out[t] = ts
			}
		}
	}
	return out, nil
}

// ErrLocked is returned (wrapped) by Run while another process holds the reconcile lease of the same state key.
var ErrLocked = errors.New("another process is running a reconcile pass on this state key")

// errLeaseLost ends a pass whose lease expired or was taken (Redis lost it): another pass may have started.
var errLeaseLost = errors.New("the reconcile lease was lost (Redis restarted or flushed, or too slow to renew it); " +
	"the pass stopped so that no two passes share its progress; run it again")

// lockTTL is how long the lease outlives its holder's last renewal (a crashed holder); it is renewed every third.
var lockTTL = 30 * time.Second

// lock takes the lease <key>:lock, so that one pass at a time uses the state key: a `reconciler run` beside
// `reconciler serve`, or binlogsync's bootstrap, would otherwise resume the other's pass and clear its progress.
// The lease is renewed while the pass runs; the returned context ends with errLeaseLost as its cause when it is
// lost. release gives it back. Without a state key there is nothing to share, and no lease.
func (s *stateStore) lock(ctx context.Context, holder string) (context.Context, func(), error) {
	if s.key == "" {
		return ctx, func() {}, nil
	}
	key := s.key + ":lock"
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := holder + " " + hex.EncodeToString(b[:])
	ttl := lockTTL
	ok, err := s.rdb.SetNX(ctx, key, token, ttl).Result()
	if err != nil {
		return ctx, nil, fmt.Errorf("taking the reconcile lease %s: %w", key, err)
	}
	if !ok {
		by, _ := s.rdb.Get(ctx, key).Result()
		ttl, _ := s.rdb.PTTL(ctx, key).Result()
		return ctx, nil, fmt.Errorf("%w (lease %s held by %q; it expires %s after its holder stops)", ErrLocked, key, by,
			ttl.Round(time.Second))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		renewed := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			n, err := renewLease.Run(ctx, s.rdb, []string{key}, token, ttl.Milliseconds()).Int()
			switch {
			case err == nil && n == 0:
				cancel(errLeaseLost)
				return
			case err == nil:
				renewed = time.Now()
			case time.Since(renewed) > ttl-ttl/6:
				// Renewals failed for about the lease's life: another process may hold it by now.
				cancel(errLeaseLost)
				return
			}
			// A failed renewal (Redis briefly away) is tried again while the lease may still be ours.
		}
	}()
	release := func() {
		close(done)
		<-exited
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		_ = releaseLease.Run(rctx, s.rdb, []string{key}, token).Err()
		cancel(nil)
	}
	return ctx, release, nil
}

// renewLease extends the lease KEYS[1] by ARGV[2] ms if ARGV[1] still holds it; releaseLease deletes it if so.
var (
	renewLease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)
	releaseLease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)
