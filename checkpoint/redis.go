package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
)

// Redis keeps the checkpoint as JSON in one Redis key (checkpoint.store:
// redis). One SET replaces the whole value, so the checkpoint is never torn;
// being a single key it works the same on a Redis Cluster.
//
// Durability is Redis's: with persistence off, a Redis restart loses the
// checkpoint (Load then reports found=false).
type Redis struct {
	rdb redis.UniversalClient
	key string
	now func() time.Time
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store for the checkpoint under key. The client stays the
// caller's: Close does not close it.
func NewRedis(rdb redis.UniversalClient, key string) *Redis {
	return &Redis{rdb: rdb, key: key, now: time.Now}
}

// Key is the checkpoint's Redis key.
func (r *Redis) Key() string { return r.key }

// Load reads the checkpoint key. A missing key is found=false; a corrupt value
// is an error naming the key.
func (r *Redis) Load(ctx context.Context) (change.Position, bool, error) {
	b, err := r.rdb.Get(ctx, r.key).Bytes()
	if errors.Is(err, redis.Nil) {
		return change.Position{}, false, nil
	}
	if err != nil {
		return change.Position{}, false, fmt.Errorf("reading checkpoint from Redis key %q: %w", r.key, err)
	}
	pos, err := decode(b, fmt.Sprintf("in Redis key %q", r.key))
	if err != nil {
		return change.Position{}, false, err
	}
	return pos, true, nil
}

// Save replaces the checkpoint key with pos.
func (r *Redis) Save(ctx context.Context, pos change.Position) error {
	b, err := encode(pos, r.now())
	if err != nil {
		return err
	}
	if err := r.rdb.Set(ctx, r.key, b, 0).Err(); err != nil {
		return fmt.Errorf("saving checkpoint %s:%d to Redis key %q: %w", pos.File, pos.Pos, r.key, err)
	}
	return nil
}

// Close does nothing: the Redis client belongs to the caller.
func (r *Redis) Close() error { return nil }
