package source

import (
	"flag"
	"os"
	"testing"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// update rewrites golden files under testdata/ from the live server.
var update = flag.Bool("update", false, "rewrite golden files in testdata/ from the server's output")

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}
