package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// kafkaEnv points binlogsync at the brokers with one topic of 6 partitions,
// created by whichever process starts first.
func (e *env) kafkaEnv(brokers []string, topic string) {
	e.extra["BINLOGSYNC_TRANSPORT_KIND"] = "kafka"
	e.extra["BINLOGSYNC_KAFKA_BROKERS"] = strings.Join(brokers, ",")
	e.extra["BINLOGSYNC_KAFKA_TOPIC"] = topic
	e.extra["BINLOGSYNC_KAFKA_DEAD_LETTER_TOPIC"] = topic + "-dlq"
	e.extra["BINLOGSYNC_KAFKA_GROUP_ID"] = topic + "-sinks"
	e.extra["BINLOGSYNC_KAFKA_CREATE_TOPIC"] = "true"
	e.extra["BINLOGSYNC_KAFKA_PARTITIONS"] = "6"
}

// startRole starts binlogsync with the role.
func (e *env) startRole(role string) *proc {
	e.t.Helper()
	e.extra["BINLOGSYNC_ROLE"] = role
	return e.start("--config", "../config.example.yaml")
}

func newKfake(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func TestKafkaSourceAndTwoSinksOneKilled(t *testing.T) {
	e := sharedEnv(t)
	brokers := newKfake(t)
	e.kafkaEnv(brokers, "bs-two-sinks")
	e.exec(usersDDL)
	src := e.startRole("source")
	sink1 := e.startRole("sink")
	sink2 := e.startRole("sink")

	load := startLoad(e, 3)
	time.Sleep(3 * time.Second)
	sink1.kill9(t) // mid-stream: its uncommitted messages go to sink2 after the session times out
	time.Sleep(3 * time.Second)
	txs := load.finish(t)
	e.waitSame("users", 90*time.Second, nil, "id")
	t.Logf("%d transactions through one source and two sinks, one killed; Redis equals MySQL", txs)
	if txs < 20 {
		t.Fatalf("only %d transactions ran", txs)
	}
	// Still equal after changes only the survivor can apply.
	e.exec("UPDATE users SET name = 'after-kill'", "INSERT INTO users VALUES (100000,'last',1,NULL,NOW(6))")
	e.waitSame("users", 60*time.Second, nil, "id")

	if v := sink2.metric(t, "binlogsync_kafka_consumed_messages_total"); v <= 0 {
		t.Errorf("the surviving sink consumed %v messages", v)
	}
	// The survivor took over the killed sink's partitions: it applied from all six.
	if n := seriesCount(t, sink2, "binlogsync_kafka_consumer_lag_messages"); n != 6 {
		t.Errorf("the surviving sink reports lag for %d partitions, want all 6", n)
	}
	if v := src.metric(t, "binlogsync_kafka_produced_messages_total"); v <= 0 {
		t.Errorf("the source produced %v messages", v)
	}
	checkKcat(t, e, brokers[0], "bs-two-sinks")

	for _, p := range []*proc{src, sink2} {
		if code := p.stop(t, 20*time.Second); code != 0 {
			t.Fatalf("exit code after SIGTERM = %d", code)
		}
	}
	if !strings.Contains(src.Log(), "checkpoint_file=mariadb-bin.") {
		t.Errorf("the source stored no checkpoint")
	}
}

// seriesCount counts the series of a metric on the process's /metrics.
func seriesCount(t *testing.T, p *proc, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr(t) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+"{") {
			n++
		}
	}
	return n
}

// checkKcat consumes the topic with kcat (librdkafka, no code of ours) and
// checks the messages are the documented JSON.
func checkKcat(t *testing.T, e *env, broker, topic string) {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Fatalf("kcat is not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kcat", "-C", "-b", broker, "-t", topic, "-o", "beginning", "-e", "-q",
		"-c", "300", "-f", "%k\t%s\n").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("kcat read %d messages", len(lines))
	}
	ops := map[string]int{}
	for _, line := range lines {
		key, value, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("kcat line %q", line)
		}
		var m struct {
			Format   int               `json:"format"`
			Op       string            `json:"op"`
			DB       string            `json:"db"`
			Table    string            `json:"table"`
			Columns  []string          `json:"columns"`
			PK       []string          `json:"pk"`
			PKValues []string          `json:"pk_values"`
			Before   map[string]any    `json:"before"`
			After    map[string]any    `json:"after"`
			Version  string            `json:"version"`
			Source   map[string]any    `json:"source"`
			Commit   string            `json:"commit_time"`
			Extra    map[string]string `json:"-"`
		}
		if err := json.Unmarshal([]byte(value), &m); err != nil {
			t.Fatalf("not JSON: %v: %s", err, value)
		}
		if m.Format != 1 || m.DB != e.db || m.Table != "users" || len(m.Version) != 28 || len(m.PK) != 1 || m.PK[0] != "id" {
			t.Fatalf("unexpected message %s", value)
		}
		if want := e.db + ":users:" + m.PKValues[0]; key != want {
			t.Fatalf("key %q, want %q", key, want)
		}
		if f, _ := m.Source["file"].(string); !strings.HasPrefix(f, "mariadb-bin.") || m.Source["pos"] == nil {
			t.Fatalf("source %v", m.Source)
		}
		if _, err := time.Parse(time.RFC3339, m.Commit); err != nil {
			t.Fatalf("commit_time %q: %v", m.Commit, err)
		}
		switch m.Op {
		case "insert":
			if m.After == nil || m.Before != nil {
				t.Fatalf("insert %s", value)
			}
		case "update":
			if m.After == nil || m.Before == nil {
				t.Fatalf("update %s", value)
			}
		case "delete":
			if m.Before == nil || m.After != nil {
				t.Fatalf("delete %s", value)
			}
		default:
			t.Fatalf("op %q", m.Op)
		}
		if row := m.After; row != nil && len(row) != len(m.Columns) {
			t.Fatalf("after has %d members, %d columns: %s", len(row), len(m.Columns), value)
		}
		ops[m.Op]++
	}
	t.Logf("kcat read %d messages: %v", len(lines), ops)
}

func TestKafkaDeadLetterRoleAll(t *testing.T) {
	e := sharedEnv(t)
	brokers := newKfake(t)
	e.kafkaEnv(brokers, "bs-dlq")
	e.exec(usersDDL)
	p := e.startRole("all")
	e.exec("INSERT INTO users VALUES (1,'one',1,NULL,NOW(6))")
	e.waitSame("users", 30*time.Second, nil, "id")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: "bs-dlq", RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
	err := w.WriteMessages(ctx,
		kafkago.Message{Key: []byte("junk-1"), Value: []byte("this is not JSON")},
		kafkago.Message{Key: []byte("junk-2"), Value: []byte(`{"format":1,"op":"insert","db":"x"}`)})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO users VALUES (2,'two',2,NULL,NOW(6))", "UPDATE users SET name = 'uno' WHERE id = 1")
	e.waitSame("users", 30*time.Second, nil, "id") // the sink went on past the junk

	out, err := exec.CommandContext(ctx, "kcat", "-C", "-b", brokers[0], "-t", "bs-dlq-dlq", "-o", "beginning", "-e", "-q",
		"-c", "2", "-f", "%k\t%h\t%s\n").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	got := string(out)
	for _, want := range []string{"junk-1\t", "junk-2\t", "binlogsync-error=decoding the message JSON", "binlogsync-topic=bs-dlq",
		"this is not JSON", `"db":"x"`} {
		if !strings.Contains(got, want) {
			t.Errorf("dead-letter topic lacks %q:\n%s", want, got)
		}
	}
	if v := p.waitMetric(t, "binlogsync_kafka_dead_letters_total", 2, 5*time.Second); v != 2 {
		t.Errorf("binlogsync_kafka_dead_letters_total = %v, want 2", v)
	}
	if code := p.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	// A sink pointed at no broker names the setting and the fix.
	e.extra["BINLOGSYNC_KAFKA_BROKERS"] = "127.0.0.1:1"
	e.extra["BINLOGSYNC_ROLE"] = "sink"
	p = e.spawn("--config", "../config.example.yaml")
	if code := p.wait(t, 60*time.Second); code != 3 || !strings.Contains(p.Log(), "check kafka.brokers") {
		t.Fatalf("a sink with no broker at kafka.brokers: exit %d, want 3 naming the fix:\n%s", code, tail(p.Log(), 2000))
	}
}

// proxy forwards TCP connections to a target and can be cut (listener and
// connections closed: clients get connection refused) and restored.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}}
	go p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		u, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		go func() { _, _ = io.Copy(c, u); c.Close() }()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// dropConns closes every proxied connection but keeps listening.
func (p *proxy) dropConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("re-listening on %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.serve(ln)
}

// advertised is a listener that tells kfake to advertise the proxy's address.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

func TestKafkaBrokerUnreachable10s(t *testing.T) {
	// refused: nothing listens. closed: connections are accepted and closed at
	// once, so clients read EOF (kafka-go hands that to the reader as io.EOF).
	for _, mode := range []string{"refused", "closed"} {
		t.Run(mode, func(t *testing.T) { kafkaBrokerOutage(t, mode) })
	}
}

func kafkaBrokerOutage(t *testing.T, mode string) {
	e := sharedEnv(t)
	px := newProxy(t)
	proxyAddr, _ := net.ResolveTCPAddr("tcp", px.addr)
	brokers := newKfake(t, kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		ln, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		px.mu.Lock()
		px.target = ln.Addr().String()
		px.mu.Unlock()
		return advertised{Listener: ln, addr: proxyAddr}, nil
	}))
	if brokers[0] != px.addr {
		t.Fatalf("kfake advertises %s, not the proxy %s", brokers[0], px.addr)
	}
	e.kafkaEnv(brokers, "bs-outage-"+mode)
	const window = 300 // kafka.max_unacknowledged: the load reaches it during the outage
	e.extra["BINLOGSYNC_KAFKA_MAX_UNACKNOWLEDGED"] = fmt.Sprint(window)
	e.exec(usersDDL)
	src := e.startRole("source")
	snk := e.startRole("sink")
	load := startLoad(e, 2)
	time.Sleep(2 * time.Second)
	var target string
	if mode == "closed" {
		px.mu.Lock()
		target, px.target = px.target, "127.0.0.1:1" // nothing there: the proxy closes what it accepts
		px.mu.Unlock()
		px.dropConns()
	} else {
		px.cut()
	}
	t.Log("kafka unreachable")
	waiting, sinkErrors := 0.0, 0.0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		waiting = max(waiting, src.metric(t, "binlogsync_kafka_unacknowledged_messages"))
		sinkErrors = snk.metric(t, "binlogsync_kafka_consumer_errors_total")
	}
	if sinkErrors == 0 || !strings.Contains(snk.Log(), "kafka reader met an error") {
		t.Errorf("the outage did not show on the sink (binlogsync_kafka_consumer_errors_total %v, or no warning)", sinkErrors)
	}
	if mode == "closed" {
		px.mu.Lock()
		px.target = target
		px.mu.Unlock()
	} else {
		px.restore()
	}
	t.Log("kafka back")
	time.Sleep(2 * time.Second)
	txs := load.finish(t)
	e.waitSame("users", 90*time.Second, nil, "id")
	t.Logf("%d transactions across a 10s Kafka outage; Redis equals MySQL", txs)
	if waiting == 0 {
		t.Errorf("no message waited for Kafka during the outage: the outage was not real")
	}
	if waiting > window || waiting < window/2 {
		t.Errorf("%v messages waited for Kafka; want the bound kafka.max_unacknowledged %d reached, not passed "+
			"(the source stops reading the binlog there: memory is bounded)", waiting, window)
	}
	t.Logf("up to %v messages waited for Kafka during the outage", waiting)
	for _, p := range []*proc{src, snk} {
		select {
		case <-p.done:
			t.Fatalf("a process exited during the outage: %v", p.err)
		default:
		}
	}
	if code := src.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("source exit code %d", code)
	}
	if code := snk.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("sink exit code %d", code)
	}
}

// TestKafkaXATransactions: through Kafka, a prepared XA transaction of more rows than a batch and than the source's
// window of unacknowledged messages goes out at its XA COMMIT, and a rolled-back one's rows never do.
func TestKafkaXATransactions(t *testing.T) {
	e := sharedEnv(t)
	brokers := newKfake(t)
	e.kafkaEnv(brokers, "bs-xa")
	e.extra["BINLOGSYNC_KAFKA_MAX_UNACKNOWLEDGED"] = "1000"
	e.exec(usersDDL)
	p := e.startRole("all")
	ctx := context.Background()
	conns := e.sessions(ctx, 2) // a session with a prepared transaction can do nothing else until its outcome
	for _, step := range []struct {
		conn int
		q    string
	}{
		{0, "XA START 'big'"},
		{0, "INSERT INTO users (id, name) SELECT seq, CONCAT('row ', seq) FROM seq_1_to_5000"},
		{0, "XA END 'big'"}, {0, "XA PREPARE 'big'"},
		{1, "XA START 'gone'"}, {1, "INSERT INTO users (id, name) VALUES (9000, 'rolled back')"},
		{1, "XA END 'gone'"}, {1, "XA PREPARE 'gone'"}, {1, "XA ROLLBACK 'gone'"},
		{0, "XA COMMIT 'big'"},
	} {
		if _, err := conns[step.conn].ExecContext(ctx, step.q); err != nil {
			t.Fatalf("%s: %v", step.q, err)
		}
	}
	e.waitSame("users", 60*time.Second, nil, "id")
	if code := p.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, tail(p.Log(), 3000))
	}
}
