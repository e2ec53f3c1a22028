package testenv

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on a free loopback port that forwards every accepted
// connection to a target, and injects network faults between a client and
// its server:
//
//   - Drop closes every current connection, on both sides.
//   - Stall stops forwarding bytes in both directions, on current and new
//     connections, without closing anything: each side sees a silent peer,
//     which exercises read timeouts. Bytes read while stalled are held and
//     delivered by Resume, as a paused network would.
//   - Refuse closes new connections as soon as they are accepted.
//   - Resume forwards again and accepts new connections normally.
type Proxy struct {
	target string
	ln     net.Listener

	mu       sync.Mutex
	conns    map[*proxyConn]struct{}
	gate     chan struct{} // closed while forwarding; open (blocking) while stalled
	refuse   bool
	closed   bool
	accepted int
	wg       sync.WaitGroup
}

// proxyConn is one client connection and its upstream connection.
type proxyConn struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{}
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.client.Close()
		c.server.Close()
	})
}

// StartProxy listens on a free loopback port and forwards to target
// (host:port). Close stops it.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the proxy to %s: %w", target, err)
	}
	gate := make(chan struct{})
	close(gate)
	p := &Proxy{target: target, ln: ln, conns: map[*proxyConn]struct{}{}, gate: gate}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// NewProxy starts a proxy to target for the test, closed when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Retarget makes new connections go to target (host:port); current ones stay
// where they are (Drop closes them). It is a failover behind one address: a
// virtual IP, a DNS name or a proxy moving to another server.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Addr is the proxy's host:port, what the client should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Conns is the number of connections currently open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Accepted is the number of client connections accepted so far, refused ones
// included.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Drop closes every current connection, client and server side.
func (p *Proxy) Drop() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Stall stops forwarding on every current and new connection until Resume.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default: // already stalled
	}
}

// Refuse makes the proxy close new connections at once until Resume.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = true
}

// Resume ends Stall and Refuse: held bytes are delivered and new connections
// are forwarded.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = false
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Drop()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		p.mu.Lock()
		p.accepted++
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			client.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	server, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		client.Close() // the target is down: the client sees the connection closed
		return
	}
	c := &proxyConn{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.copy(c, server, client) }()
	go func() { defer wg.Done(); p.copy(c, client, server) }()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// copy forwards src to dst, waiting at the gate before each write, and closes
// the pair when either side ends.
func (p *Proxy) copy(c *proxyConn, dst, src net.Conn) {
	defer c.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF, a reset or a closed pair: either way the pair ends
			return
		}
	}
}

// wait blocks while the proxy is stalled; false when the pair was closed.
func (p *Proxy) wait(c *proxyConn) bool {
	for {
		p.mu.Lock()
		gate := p.gate
		p.mu.Unlock()
		select {
		case <-c.done:
			return false
		case <-gate:
			// A Stall may have begun between reading the gate and now; check
			// that the gate we passed is still the current one.
			p.mu.Lock()
			same := gate == p.gate
			p.mu.Unlock()
			if same {
				return true
			}
		}
	}
}
