package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}

var (
	posA = change.Position{File: "mariadb-bin.000001", Pos: 1337, GTIDSet: "0-1-42", Flavor: "mariadb", ServerUUID: "1"}
	posB = change.Position{File: "mysql-bin.000042", Pos: 4, GTIDSet: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
		Flavor: "mysql", Epoch: 3, ServerUUID: "3e11fa47-71ca-11e1-9e33-c80aa9429562"}
)

// stores returns each kind of store, fresh and empty.
func stores(t *testing.T) map[string]Store {
	t.Helper()
	f, err := NewFile(filepath.Join(t.TempDir(), "checkpoint.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.SharedRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return map[string]Store{
		"file":  f,
		"redis": NewRedis(rdb, "binlogsync:checkpoint:"+t.Name()),
	}
}

func TestRoundTrip(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if _, found, err := s.Load(ctx); err != nil || found {
				t.Fatalf("empty store: found=%v err=%v, want found=false", found, err)
			}
			for _, want := range []change.Position{posA, posB, posA} {
				if err := s.Save(ctx, want); err != nil {
					t.Fatal(err)
				}
				got, found, err := s.Load(ctx)
				if err != nil || !found {
					t.Fatalf("Load: found=%v err=%v", found, err)
				}
				if got != want {
					t.Fatalf("Load = %+v, want %+v", got, want)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestZeroPositionRejected(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if err := s.Save(ctx, posA); err != nil {
				t.Fatal(err)
			}
			if err := s.Save(ctx, change.Position{Epoch: 2}); !errors.Is(err, ErrZeroPosition) {
				t.Fatalf("Save(zero) = %v, want ErrZeroPosition", err)
			}
			if got, _, err := s.Load(ctx); err != nil || got != posA {
				t.Fatalf("after rejected save Load = %+v, %v; want the old %+v", got, err, posA)
			}
		})
	}
}

func TestStoredJSONHasSavedAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.json")
	f, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.FixedZone("x", 3600))
	f.now = func() time.Time { return at }
	if err := f.Save(context.Background(), posB); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"file": posB.File, "pos": float64(posB.Pos), "gtid_set": posB.GTIDSet, "flavor": "mysql",
		"epoch": float64(3), "server_uuid": posB.ServerUUID, "saved_at": "2024-05-06T06:08:09Z",
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Fatalf("stored JSON = %s\nwant fields %v", b, want)
	}
}

func TestRedisCluster(t *testing.T) {
	c := testenv.NewRedisCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	// Keys in different slots, so at least one lives away from the first node.
	for i := range 5 {
		s := NewRedis(rdb, fmt.Sprintf("cp:%d", i))
		if _, found, err := s.Load(ctx); err != nil || found {
			t.Fatalf("empty: found=%v err=%v", found, err)
		}
		if err := s.Save(ctx, posB); err != nil {
			t.Fatal(err)
		}
		if got, found, err := s.Load(ctx); err != nil || !found || got != posB {
			t.Fatalf("Load = %+v, %v, %v; want %+v", got, found, err, posB)
		}
	}
}

func TestCorrupt(t *testing.T) {
	ctx := context.Background()
	for _, content := range []string{"", "{\"file\": \"mysql-bin.0000", "null", "{}", "[1,2]"} {
		path := filepath.Join(t.TempDir(), "cp.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := NewFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, found, err := f.Load(ctx)
		if err == nil || found {
			t.Fatalf("content %q: found=%v err=%v, want an error", content, found, err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "corrupt") {
			t.Fatalf("content %q: error %q does not name the path and say corrupt", content, err)
		}
	}

	r := testenv.SharedRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { rdb.Close() })
	key := "binlogsync:checkpoint:" + t.Name()
	if err := rdb.Set(ctx, key, "not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, found, err := NewRedis(rdb, key).Load(ctx)
	if err == nil || found || !strings.Contains(err.Error(), key) {
		t.Fatalf("corrupt Redis value: found=%v err=%v, want an error naming %q", found, err, key)
	}
}

func TestNewFileBadDirectory(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "cp.json")
	_, err := NewFile(missing)
	if err == nil {
		t.Fatal("NewFile in a missing directory succeeded")
	}
	for _, s := range []string{"checkpoint.path", missing, "does not exist"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}

	dir := t.TempDir()
	if _, err := NewFile(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("NewFile(directory) = %v, want an error saying it is a directory", err)
	}
	if _, err := NewFile(""); err == nil || !strings.Contains(err.Error(), "checkpoint.path") {
		t.Errorf("NewFile(\"\") = %v, want an error naming checkpoint.path", err)
	}
}

func TestSaveAfterDirectoryRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cp.json")
	f, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	err = f.Save(context.Background(), posA)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Save into a removed directory = %v, want an error naming %s", err, path)
	}
}

// TestConcurrentSave saves from two goroutines, through one File and through
// a second File on the same path (as a second process would), while a third
// goroutine reads: every Load sees one whole checkpoint, the last one is
// whole, and no temporary file is left behind.
func TestConcurrentSave(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cp.json")
	f, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.Save(ctx, posA); err != nil {
		t.Fatal(err)
	}
	f2, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g, s := range []*File{f, f, f2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				// Different lengths, so a torn write could not parse as a whole one.
				p := change.Position{File: fmt.Sprintf("bin.%06d", g), Pos: uint32(i + 4),
					GTIDSet: strings.Repeat("x", (g*n+i)%97)}
				if err := s.Save(ctx, p); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, found, err := f.Load(ctx)
			if err != nil || !found {
				errs <- fmt.Errorf("concurrent Load: found=%v err=%v", found, err)
				return
			}
			if p != posA && (p.Pos < 4 || len(p.GTIDSet) > 96) {
				errs <- fmt.Errorf("concurrent Load saw %+v", p)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-readerDone
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p, found, err := f.Load(ctx)
	if err != nil || !found || p.Pos != n+3 {
		t.Fatalf("final Load = %+v, %v, %v; want the last Save of one goroutine", p, found, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "cp.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only cp.json", names)
	}
}
