package source

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestLazyDeadlineConn checks that small pushes of the read deadline are not forwarded, that larger ones, earlier
// ones and clearing are, and that a silent connection still times out within the read timeout.
func TestLazyDeadlineConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &lazyDeadlineConn{Conn: a, slack: 200 * time.Millisecond}
	base := time.Now().Add(time.Hour)
	for _, step := range []struct {
		at      time.Time
		applied time.Time
	}{
		{base, base},                             // first: forwarded
		{base.Add(100 * time.Millisecond), base}, // within the slack: kept
		{base.Add(300 * time.Millisecond), base.Add(300 * time.Millisecond)}, // beyond: forwarded
		{base, base},               // earlier: forwarded
		{time.Time{}, time.Time{}}, // cleared: forwarded
		{base, base},
	} {
		if err := c.SetReadDeadline(step.at); err != nil {
			t.Fatal(err)
		}
		want := int64(0)
		if !step.applied.IsZero() {
			want = step.applied.UnixNano()
		}
		if got := c.applied.Load(); got != want {
			t.Fatalf("after asking for %v the deadline in force is %d, want %d", step.at, got, want)
		}
	}

	// A silent peer: repeated pushes within the slack do not keep the read alive forever.
	c2 := &lazyDeadlineConn{Conn: a, slack: 50 * time.Millisecond}
	start := time.Now()
	if err := c2.SetReadDeadline(start.Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c2.Read(make([]byte, 1))
		done <- err
	}()
	for i := range 10 { // pushes smaller than the slack
		_ = c2.SetReadDeadline(start.Add(200*time.Millisecond + time.Duration(i)*4*time.Millisecond))
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read ended with %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the silent connection never timed out")
	}
	if deadlineSlack(30*time.Second) != time.Second || deadlineSlack(2*time.Second) != 500*time.Millisecond {
		t.Errorf("deadlineSlack: %s, %s", deadlineSlack(30*time.Second), deadlineSlack(2*time.Second))
	}
}
