package bench

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// binPath is the binlogsync binary built for the run, or $BENCH_BIN (empty when no
// benchmark was asked for).
var binPath string

// outDir receives CPU profiles: $BENCH_OUT, or a temporary directory.
var outDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run()) // go test ./... without -bench: nothing to set up
	}
	dir, err := os.MkdirTemp("", "binlogsync-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if binPath = os.Getenv("BENCH_BIN"); binPath == "" { // BENCH_BIN: a binary of another build, to compare builds
		binPath = filepath.Join(dir, "binlogsync")
		if out, err := exec.Command("go", "build", "-o", binPath, "../cmd/binlogsync").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building binlogsync: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	outDir = os.Getenv("BENCH_OUT")
	if outDir == "" {
		outDir = dir
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testenv.StopShared()
	os.RemoveAll(dir)
	os.Exit(code)
}
