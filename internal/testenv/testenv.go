// Package testenv starts real servers for integration tests: MariaDB and Redis
// (standalone or cluster) on free loopback ports, in temporary directories,
// stopped when the test ends.
//
// Outside CI (CI unset) a test whose server binary is missing is skipped; in CI
// it fails, so nothing silently stops being tested.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
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

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
