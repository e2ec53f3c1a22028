package app

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

// A lease ends with the reason it was lost: taken by another source, or not renewed within its TTL because Redis
// did not answer (which does not mean another source holds it).
func TestLeaseLostNamesWhy(t *testing.T) {
	srv := testenv.NewRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(l *lease, after func()) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.acquire(ctx); err != nil {
			t.Fatal(err)
		}
		lost := make(chan error, 1)
		go l.hold(ctx, func(err error) { lost <- err })
		after()
		select {
		case err := <-lost:
			return err
		case <-ctx.Done():
			t.Fatal("the lease was never found lost")
			return nil
		}
	}
	l := newLease(rdb, config.Leader{Key: "lease:a", TTL: 600 * time.Millisecond}, log)
	err := run(l, func() { rdb.Set(context.Background(), "lease:a", "someone else", 0) })
	if !strings.Contains(err.Error(), "another binlogsync source holds it") {
		t.Fatalf("a lease taken over: %v", err)
	}
	l = newLease(rdb, config.Leader{Key: "lease:b", TTL: 600 * time.Millisecond}, log)
	err = run(l, srv.Stop)
	if !strings.Contains(err.Error(), "could not be renewed within leader.ttl") ||
		strings.Contains(err.Error(), "another binlogsync source") {
		t.Fatalf("a lease Redis did not answer for: %v", err)
	}
}
