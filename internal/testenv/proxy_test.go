package testenv

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer echoes every byte back on each connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads len(msg) bytes back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func waitConns(t *testing.T, p *Proxy, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Conns() != want {
		if time.Now().After(deadline) {
			t.Fatalf("proxy has %d connections, want %d", p.Conns(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProxyForwards(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	big := strings.Repeat("0123456789", 20000) // larger than one copy buffer
	got, err := roundTrip(c, big, 5*time.Second)
	if err != nil || got != big {
		t.Fatalf("round trip of %d bytes: got %d bytes, err %v", len(big), len(got), err)
	}
	waitConns(t, p, 1)
	if p.Accepted() != 1 {
		t.Fatalf("Accepted = %d, want 1", p.Accepted())
	}
}

func TestProxyDropClosesBothSides(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c1, c2 := dial(t, p.Addr()), dial(t, p.Addr())
	for _, c := range []net.Conn{c1, c2} {
		if _, err := roundTrip(c, "hi", 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	p.Drop()
	for _, c := range []net.Conn{c1, c2} {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read after Drop: %v, want the connection closed", err)
		}
	}
	waitConns(t, p, 0)
	// New connections work after a drop.
	if got, err := roundTrip(dial(t, p.Addr()), "again", 2*time.Second); err != nil || got != "again" {
		t.Fatalf("after Drop: %q %v", got, err)
	}
}

func TestProxyStallIsSilentThenDelivers(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	old := dial(t, p.Addr())
	if _, err := roundTrip(old, "x", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	// The current connection stays open but silent.
	if _, err := roundTrip(old, "held", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("read on a stalled connection: %v, want a timeout", err)
	}
	// A new connection is accepted, and silent too.
	fresh := dial(t, p.Addr())
	if _, err := roundTrip(fresh, "new", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("read on a connection opened while stalled: %v, want a timeout", err)
	}
	p.Resume()
	// What was held is delivered, in order.
	for _, c := range []struct {
		conn net.Conn
		want string
	}{{old, "held"}, {fresh, "new"}} {
		_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, len(c.want))
		if _, err := io.ReadFull(c.conn, buf); err != nil || string(buf) != c.want {
			t.Fatalf("after Resume: %q %v, want %q", buf, err, c.want)
		}
	}
	if got, err := roundTrip(old, "more", 2*time.Second); err != nil || got != "more" {
		t.Fatalf("after Resume: %q %v", got, err)
	}
}

func TestProxyDropWhileStalled(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	p.Stall()
	if _, err := c.Write([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	waitConns(t, p, 1)
	p.Drop() // must not hang on the goroutine waiting at the gate
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after Drop: %v, want the connection closed", err)
	}
	waitConns(t, p, 0)
}

func TestProxyRefuse(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	kept := dial(t, p.Addr())
	if _, err := roundTrip(kept, "a", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Refuse()
	c := dial(t, p.Addr())
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read on a refused connection: %v, want it closed", err)
	}
	// Refuse leaves current connections alone.
	if got, err := roundTrip(kept, "b", 2*time.Second); err != nil || got != "b" {
		t.Fatalf("current connection while refusing: %q %v", got, err)
	}
	p.Resume()
	if got, err := roundTrip(dial(t, p.Addr()), "c", 2*time.Second); err != nil || got != "c" {
		t.Fatalf("after Resume: %q %v", got, err)
	}
	if p.Accepted() != 3 {
		t.Fatalf("Accepted = %d, want 3 (the refused one included)", p.Accepted())
	}
}

func TestProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := NewProxy(t, addr)
	c := dial(t, p.Addr())
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read through a proxy whose target is down: %v, want the connection closed", err)
	}
}

func TestProxyClose(t *testing.T) {
	p, err := StartProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "a", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while stalled")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("the proxy still accepts after Close")
	}
	p.Close() // idempotent
}

// TestProxyRedis checks the proxy against a real server protocol: a stalled
// Redis connection times out the client's read, and it works again after
// Resume.
func TestProxyRedis(t *testing.T) {
	r := NewRedis(t)
	p := NewProxy(t, r.Addr())
	c := dial(t, p.Addr())
	br := bufio.NewReader(c)
	ping := func(d time.Duration) (string, error) {
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(d))
		return br.ReadString('\n')
	}
	if got, err := ping(2 * time.Second); err != nil || got != "+PONG\r\n" {
		t.Fatalf("PING through the proxy: %q %v", got, err)
	}
	p.Stall()
	if _, err := ping(300 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("PING while stalled: %v, want a timeout", err)
	}
	p.Resume()
	for i := 0; i < 2; i++ { // the held PING's reply, then the new one's
		if got, err := ping(2 * time.Second); err != nil || got != "+PONG\r\n" {
			t.Fatalf("PING after Resume: %q %v", got, err)
		}
	}
}
