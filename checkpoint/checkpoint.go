// Package checkpoint stores the binlog position the pipeline resumes from
// (SPEC section 4): a transaction boundary before which every change is
// durable downstream.
//
// Two stores hold it: a JSON file (File) and a Redis key (Redis). Both write
// the whole checkpoint in one atomic step, so a crash leaves either the old or
// the new checkpoint, never a torn one, and both refuse to save a zero
// position, which would make a restart start from nowhere.
package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/binlogsync/binlogsync/change"
)

// Store loads and saves the checkpoint.
type Store interface {
	// Load returns the saved position; found is false when nothing was ever
	// saved. A checkpoint that exists but cannot be read is an error, never
	// "not found": starting over from nothing would skip or replay data.
	Load(ctx context.Context) (pos change.Position, found bool, err error)
	// Save replaces the checkpoint with pos, atomically.
	Save(ctx context.Context, pos change.Position) error
	// Close releases what the store holds.
	Close() error
}

// ErrZeroPosition is returned by Save for a position that names nothing.
var ErrZeroPosition = errors.New("refusing to save a zero checkpoint position")

// record is the stored form: the position's own fields, flattened, plus the
// time it was saved, for operators reading the file or key.
type record struct {
	change.Position
	SavedAt time.Time `json:"saved_at"`
}

// encode renders pos as the stored JSON, stamped with now.
func encode(pos change.Position, now time.Time) ([]byte, error) {
	if pos.IsZero() {
		return nil, ErrZeroPosition
	}
	b, err := json.Marshal(record{Position: pos, SavedAt: now.UTC()})
	if err != nil {
		return nil, fmt.Errorf("encoding checkpoint: %w", err)
	}
	return append(b, '\n'), nil
}

// decode parses stored JSON; where names the file or key for the error.
func decode(b []byte, where string) (change.Position, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return change.Position{}, fmt.Errorf("checkpoint %s is corrupt (%v); fix or remove it "+
			"(removing it makes binlogsync start without a checkpoint)", where, err)
	}
	if r.Position.IsZero() {
		return change.Position{}, fmt.Errorf("checkpoint %s is corrupt (it names no binlog file or GTID set); "+
			"fix or remove it (removing it makes binlogsync start without a checkpoint)", where)
	}
	return r.Position, nil
}
