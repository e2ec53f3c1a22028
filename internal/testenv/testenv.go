// Package testenv starts real servers for integration tests: MariaDB and Redis
// (standalone or cluster) on free loopback ports, in temporary directories,
// stopped when the test ends.
//
// Outside CI (CI unset) a test whose server binary is missing is skipped; in CI
// it fails, so nothing silently stops being tested.
package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Require stops the test because a needed server is missing: a skip outside
// CI, a failure in CI.
func Require(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so a missing server is a failure)", msg)
	}
	t.Skip(msg)
}

// Ports for test servers come from below Linux's default ephemeral range
// (32768-60999), so that no outgoing connection of a concurrent test takes one
// between FreePort and the server's bind, and each is locked for the life of
// the test process (a flock on a file under the temp dir), so that test
// processes running side by side (go test runs packages in parallel) never
// start two servers on one port. Before these locks, a redis-server that
// could not bind its port went unnoticed when another package's server
// answered on it, and the test wrote into that other server.
const (
	portLow  = 20000
	portHigh = 32000
)

var (
	portMu    sync.Mutex
	portLocks []*os.File // held open, so locked, until the process exits
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that no other test process (sharing the temp dir) is given while this one
// runs.
func FreePort() (int, error) {
	dir := filepath.Join(os.TempDir(), "binlogsync-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, err
	}
	portMu.Lock()
	defer portMu.Unlock()
	for range 500 {
		port := portLow + rand.IntN(portHigh-portLow)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, err
		}
		// flock locks belong to the open file, so a second open in this
		// process is refused as well: a port is never handed out twice.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			f.Close() // closing releases the lock
			continue
		}
		l.Close()
		portLocks = append(portLocks, f)
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d after 500 tries", portLow, portHigh)
}

// lookBin finds the first of names on PATH or in the sbin directories that
// Debian packages use.
func lookBin(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin"} {
			p := d + "/" + n
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("none of %v found (install with: apt-get install mariadb-server redis-server)", names)
}

// waitTCP waits until addr accepts connections or the timeout passes.
func waitTCP(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("server exited before listening on %s", addr)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server did not listen on %s within %s", addr, timeout)
}

// waitLog waits until the log file at path holds ready after its first from
// bytes: the server that was started, not some other process on its port,
// is the one listening. A server that exits first is an error.
func waitLog(path string, from int64, ready string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil && int64(len(b)) > from &&
			strings.Contains(string(b[from:]), ready) {
			return nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(path)
			b = b[min(from, int64(len(b))):]
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			return fmt.Errorf("server exited before logging %q to %s; its log ends:\n%s", ready, path, b)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server did not log %q to %s within %s", ready, path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fileSize is the size of the file at path, 0 when there is none.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
