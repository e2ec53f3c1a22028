package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/redis/go-redis/v9"
)

// Beside the checkpoint, both stores keep the table schemas the source followed across DDL (source.SchemaStore):
// a file next to the checkpoint file, or a key next to the checkpoint key. They are written when a DDL statement
// or a newly met table changes them, not with every checkpoint, and a restart takes from them the schemas as
// they were at the checkpoint.

// SchemasPath is the file of the followed schemas: the checkpoint file's path with ".schemas" appended.
func (f *File) SchemasPath() string { return f.path + ".schemas" }

// LoadSchemas reads the followed schemas; nil when none were saved.
func (f *File) LoadSchemas(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f.SchemasPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the followed schemas: %w", err)
	}
	return b, nil
}

// SaveSchemas replaces the followed schemas, atomically.
func (f *File) SaveSchemas(ctx context.Context, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := writeFile(f.SchemasPath(), b); err != nil {
		return fmt.Errorf("saving the followed schemas to %s: %w", f.SchemasPath(), err)
	}
	return nil
}

// SchemasKey is the key of the followed schemas: the checkpoint key with ":schemas" appended.
func (r *Redis) SchemasKey() string { return r.key + ":schemas" }

// LoadSchemas reads the followed schemas; nil when none were saved.
func (r *Redis) LoadSchemas(ctx context.Context) ([]byte, error) {
	b, err := r.rdb.Get(ctx, r.SchemasKey()).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the followed schemas from Redis key %q: %w", r.SchemasKey(), err)
	}
	return b, nil
}

// SaveSchemas replaces the followed schemas.
func (r *Redis) SaveSchemas(ctx context.Context, b []byte) error {
	if err := r.rdb.Set(ctx, r.SchemasKey(), b, 0).Err(); err != nil {
		return fmt.Errorf("saving the followed schemas to Redis key %q: %w", r.SchemasKey(), err)
	}
	return nil
}
