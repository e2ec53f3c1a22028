package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/binlogsync/binlogsync/change"
)

// File keeps the checkpoint in a JSON file (checkpoint.store: file).
//
// Save writes a temporary file in the same directory, fsyncs it, renames it
// over the checkpoint and fsyncs the directory: rename is atomic, so a reader
// or a restart after a crash sees the old or the new checkpoint, whole.
type File struct {
	path string
	now  func() time.Time

	mu sync.Mutex // serializes Saves of this File
}

var _ Store = (*File)(nil)

// NewFile returns a store for the checkpoint file at path. The directory must
// exist and be writable; NewFile checks both, so a bad checkpoint.path stops
// the program at start rather than at the first checkpoint.
func NewFile(path string) (*File, error) {
	if path == "" {
		return nil, errors.New("checkpoint.path is empty; set it to the checkpoint file's path")
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("checkpoint.path %s: directory %s does not exist; create it or set checkpoint.path "+
			"to a file in an existing directory", path, dir)
	case err != nil:
		return nil, fmt.Errorf("checkpoint.path %s: %w", path, err)
	case !st.IsDir():
		return nil, fmt.Errorf("checkpoint.path %s: %s is not a directory", path, dir)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("checkpoint.path %s is a directory; set it to a file name", path)
	}
	// Prove the directory is writable, and drop temporary files that a crash
	// between create and rename may have left.
	stale, _ := filepath.Glob(filepath.Join(dir, tempPattern(path)))
	for _, s := range stale {
		_ = os.Remove(s)
	}
	probe, err := os.CreateTemp(dir, tempPattern(path))
	if err != nil {
		return nil, fmt.Errorf("checkpoint.path %s: directory is not writable: %w", path, err)
	}
	probe.Close()
	_ = os.Remove(probe.Name())
	return &File{path: path, now: time.Now}, nil
}

// tempPattern is the os.CreateTemp pattern of path's temporary files.
func tempPattern(path string) string { return "." + filepath.Base(path) + ".tmp-*" }

// Path is the checkpoint file's path.
func (f *File) Path() string { return f.path }

// Load reads the checkpoint file. A missing file is found=false; an
// unreadable or corrupt one is an error naming the path.
func (f *File) Load(ctx context.Context) (change.Position, bool, error) {
	if err := ctx.Err(); err != nil {
		return change.Position{}, false, err
	}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return change.Position{}, false, nil
	}
	if err != nil {
		return change.Position{}, false, fmt.Errorf("reading checkpoint: %w", err)
	}
	pos, err := decode(b, "file "+f.path)
	if err != nil {
		return change.Position{}, false, err
	}
	return pos, true, nil
}

// Save replaces the checkpoint file with pos, atomically and durably.
func (f *File) Save(ctx context.Context, pos change.Position) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := encode(pos, f.now())
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := writeFile(f.path, b); err != nil {
		return fmt.Errorf("saving checkpoint %s:%d to %s: %w", pos.File, pos.Pos, f.path, err)
	}
	return nil
}

// writeFile replaces the file at path with b: a temporary file, fsync, rename, fsync of the directory.
func writeFile(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPattern(path))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(b); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable only once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close does nothing; the file is opened only while reading or writing.
func (f *File) Close() error { return nil }
