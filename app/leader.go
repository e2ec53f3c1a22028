package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/config"
)

// errLeaseLost ends a leader's run when another process holds the lease, or when it could not be renewed within
// its TTL (the causes wrap it).
var errLeaseLost = errors.New("lost the leader lease")

var (
	renewScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	releaseScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1]) end
return 0`)
)

// lease is a leader lease in Redis: SET key id NX PX ttl, renewed every
// ttl/3 while held. Two sources that both believe they lead (a partition
// longer than the TTL) write the same versions from the same binlog, which
// the version fence makes harmless; the lease only keeps the standby idle.
type lease struct {
	rdb redis.UniversalClient
	key string
	id  string
	ttl time.Duration
	log *slog.Logger
}

func newLease(rdb redis.UniversalClient, cfg config.Leader, log *slog.Logger) *lease {
	host, _ := os.Hostname()
	return &lease{rdb: rdb, key: cfg.Key, ttl: cfg.TTL, log: log,
		id: host + ":" + strconv.Itoa(os.Getpid()) + ":" + strconv.FormatInt(time.Now().UnixNano(), 36)}
}

// acquire waits until this process holds the lease or ctx ends.
func (l *lease) acquire(ctx context.Context) error {
	logged := false
	for {
		ok, err := l.rdb.SetNX(ctx, l.key, l.id, l.ttl).Result()
		if err == nil && ok {
			l.log.Info("leader lease acquired; this process reads the binlog", slog.String("key", l.key), slog.String("id", l.id))
			return nil
		}
		if err != nil && ctx.Err() == nil {
			l.log.Warn("leader lease: Redis error; retrying", slog.String("error", err.Error()))
		} else if !logged {
			holder, _ := l.rdb.Get(ctx, l.key).Result()
			l.log.Info("standby: another source holds the leader lease; waiting", slog.String("key", l.key), slog.String("holder", holder))
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(l.ttl / 3):
		}
	}
}

// hold renews the lease until ctx ends; it calls lost when the lease is gone
// (taken by another process, or not renewed within its TTL).
func (l *lease) hold(ctx context.Context, lost func(error)) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, l.ttl/3)
		n, err := renewScript.Run(rctx, l.rdb, []string{l.key}, l.id, l.ttl.Milliseconds()).Int()
		cancel()
		switch {
		case err == nil && n == 1:
			renewed = time.Now()
		case err == nil:
			l.log.Error("leader lease taken by another process", slog.String("key", l.key))
			lost(fmt.Errorf("%w (another binlogsync source holds it now); exiting so that a restart waits as a "+
				"standby", errLeaseLost))
			return
		case time.Since(renewed) >= l.ttl:
			l.log.Error("leader lease not renewed within its TTL", slog.String("error", err.Error()))
			lost(fmt.Errorf("%w: it could not be renewed within leader.ttl (%s; last error: %v), so a standby may "+
				"lead now; exiting so that a restart waits as a standby. If Redis was failing over (a cluster "+
				"master, a Sentinel switch), make leader.ttl longer than the failover takes", errLeaseLost, l.ttl, err))
			return
		default:
			l.log.Warn("renewing the leader lease failed; retrying", slog.String("error", err.Error()))
			if c, ok := l.rdb.(*redis.ClusterClient); ok {
				c.ReloadState(ctx) // a master failed over: find the new one
			}
		}
	}
}

// release gives the lease up so a standby takes over at once.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := releaseScript.Run(ctx, l.rdb, []string{l.key}, l.id).Err(); err != nil {
		l.log.Warn("releasing the leader lease failed; it expires by itself", slog.String("error", err.Error()))
	}
}

// lead waits for leadership when leader.enabled is set. The returned context
// ends when ctx ends or the lease is lost (context.Cause is errLeaseLost);
// done releases the lease.
func lead(ctx context.Context, cfg *config.Config, rdb redis.UniversalClient, log *slog.Logger) (context.Context, func(), error) {
	if !cfg.Leader.Enabled {
		return ctx, func() {}, nil
	}
	l := newLease(rdb, cfg.Leader, log.With(slog.String("component", "leader")))
	if err := l.acquire(ctx); err != nil {
		return ctx, func() {}, err
	}
	lctx, cancel := context.WithCancelCause(ctx)
	go l.hold(lctx, func(err error) { cancel(err) })
	return lctx, func() { cancel(nil); l.release() }, nil
}

// leaseErr turns a lost lease into the run's error.
func leaseErr(ctx context.Context, runErr error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errLeaseLost) {
		return exitErr(ExitRuntime, cause)
	}
	return runErr
}
