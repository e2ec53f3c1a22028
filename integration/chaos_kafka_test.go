package integration

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// chaosKafkaPartitions is the partition count of the change topic
// (kafkaEnv's BINLOGSYNC_KAFKA_PARTITIONS).
const chaosKafkaPartitions = 6

// TestIntegrationChaosKafka is the fault suite of the Kafka transport: one
// source and two sinks, separate binlogsync processes in one consumer group,
// with an in-process kfake broker reached through a TCP proxy. Under the
// every-type generator's load it injects, one after the other: kill -9 of the
// source, a 10 s broker outage (every connection dropped, new ones closed at
// once), a third sink joining the group and one of the old sinks killed with
// kill -9 as it rejoins for that rebalance, and a second kill -9 of the
// source. After each fault it measures the recovery time: from the end of
// the fault until marker rows written right after it, one on each partition,
// are all in Redis, that is until every partition was consumed past the
// fault. At the end it compares MySQL against Redis and checks that no
// version was seen going down, as TestIntegrationChaos does.
func TestIntegrationChaosKafka(t *testing.T) {
	sysbenchBin, err := exec.LookPath("sysbench")
	if err != nil {
		testenv.Require(t, "sysbench not found (scripts/install-deps.sh sysbench): %v", err)
	}
	began := time.Now()
	e := sharedEnv(t)

	// kfake listens on ln but advertises the proxy of kafka_test.go, so that
	// every client connection, bootstrap or not, goes through the proxy.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t)
	px.mu.Lock()
	px.target = ln.Addr().String()
	px.mu.Unlock()
	pxAddr, err := net.ResolveTCPAddr("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(string, string) (net.Listener, error) {
		return advertised{Listener: ln, addr: pxAddr}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	if brokers := kc.ListenAddrs(); len(brokers) != 1 || brokers[0] != px.addr {
		t.Fatalf("kfake advertises %v, not the proxy %s", brokers, px.addr)
	}
	const topic = "bs-chaos"
	e.kafkaEnv(kc.ListenAddrs(), topic)
	e.extra["BINLOGSYNC_CHECKPOINT_INTERVAL"] = "1s" // the default, so a kill -9 replays up to a second
	e.extra["BINLOGSYNC_LOG_LEVEL"] = "info"
	e.exec(allTypesDDL(), "CREATE TABLE chaos_marker (id INT PRIMARY KEY, fault VARCHAR(40), at DATETIME(6))")

	c := &kafkaChaos{t: t, e: e, kc: kc, group: topic + "-sinks", sinks: map[string]*proc{}}
	c.admin = &kafkago.Client{Addr: kafkago.TCP(kc.ListenAddrs()...), Timeout: 5 * time.Second}
	c.src = c.startSource()
	c.startSink("sink-1")
	c.startSink("sink-2")
	c.waitGroup("sink-1", "sink-2")

	sb := &sysbenchLoad{bin: sysbenchBin, args: []string{"oltp_write_only", "--tables=4", "--table-size=10000",
		"--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(e.my.Port), "--mysql-user=root",
		"--mysql-password=" + e.my.RootPassword, "--mysql-db=" + e.db}}
	if out, err := exec.Command(sb.bin, append(sb.args, "prepare")...).CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	t.Logf("initial load of 40,000 rows through Kafka: %s",
		c.waitMarkers(c.mark("initial load"), time.Now()).Round(10*time.Millisecond))

	sb.args = append(sb.args, "--threads=2", "--rate=100")
	sb.start()
	gen := startTypesLoad(t, e.my, e.db, 2)
	watch := startVersionWatch(e.rdb, e.db)

	killSource := func() (time.Time, func() string) {
		fenced := c.fenced()
		c.src.kill9(t)
		end := time.Now() // the restart counts in the recovery time
		c.src = c.startSource()
		return end, func() string { return fmt.Sprintf("replayed changes fenced %g", c.fenced()-fenced) }
	}
	// Each fault returns the moment it ended, from which the recovery time
	// is measured, and its effect, read once the pipeline recovered.
	faults := []struct {
		name   string
		inject func() (time.Time, func() string)
	}{
		{"kill -9 source", killSource},
		{"Kafka broker outage 10s", func() (time.Time, func() string) {
			px.cut() // connections closed, new ones refused, as when the broker is down
			waiting := 0.0
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
				c.alive()
				waiting = max(waiting, c.src.metric(t, "binlogsync_kafka_unacknowledged_messages"))
			}
			px.restore()
			end := time.Now()
			if waiting == 0 {
				t.Errorf("broker outage: no message waited for Kafka: the outage missed the source")
			}
			return end, func() string {
				px.mu.Lock()
				n := len(px.conns) / 2 // client and broker side of each
				px.mu.Unlock()
				if n == 0 {
					t.Errorf("broker outage: no client reconnected to the broker after it")
				}
				return fmt.Sprintf("up to %g messages unacknowledged; broker connections +%d", waiting, n)
			}
		}},
		{"kill -9 sink in a rebalance", c.killSinkInRebalance},
		{"kill -9 source", killSource},
	}
	for _, f := range faults {
		c.waitLoad(gen, 150) // changes in flight when the fault hits
		c.inject(f.name, f.inject)
	}

	sb.pause()
	sbTxs := sb.finish(t)
	genTxs := gen.finish(t)
	c.waitMarkers(c.mark("load stopped"), time.Now())
	tables := map[string][]string{"alltypes": {"id"}, "chaos_marker": {"id"}}
	for i := 1; i <= 4; i++ {
		tables[fmt.Sprintf("sbtest%d", i)] = []string{"id"}
	}
	rows, drift := (&chaos{t: t, e: e}).compare(tables, 60*time.Second)
	samples, violations := watch.finish(t, e, tables)

	t.Logf("CHAOS KAFKA SUMMARY: %d faults injected, %d transactions written, %d rows compared, drift %d, "+
		"versions seen going down %d (%s total)", len(c.results), sbTxs+genTxs, rows, len(drift), len(violations),
		time.Since(began).Round(time.Second))
	t.Logf("  transactions written: %d (sysbench oltp_write_only %d, every-type generator %d)", sbTxs+genTxs, sbTxs, genTxs)
	t.Logf("  rows compared: %d in %d tables; drift: %d", rows, len(tables), len(drift))
	t.Logf("  version reads: %d; versions seen going down: %d", samples, len(violations))
	t.Logf("  %-32s %10s  %s", "fault", "recovery", "effect seen")
	for _, r := range c.results {
		t.Logf("  %-32s %10s  %s", r.name, r.recovery.Round(10*time.Millisecond), r.effect)
	}
	if len(drift) > 0 {
		if len(drift) > 30 {
			drift = append(drift[:30], fmt.Sprintf("... and %d more", len(drift)-30))
		}
		t.Errorf("Redis differs from MySQL after the load stopped and the pipeline caught up:\n%s", strings.Join(drift, "\n"))
	}
	if len(violations) > 0 {
		t.Errorf("versions went down (an older change applied over a newer one):\n%s", strings.Join(violations, "\n"))
	}
	if sbTxs < 300 || genTxs < 300 {
		t.Errorf("only %d sysbench and %d generator transactions ran; the load did not exercise much", sbTxs, genTxs)
	}
	if v := c.sinks["sink-3"].metric(t, "binlogsync_kafka_consumed_messages_total"); v <= 0 {
		t.Errorf("sink-3, which joined in the rebalance, consumed %v messages", v)
	}
	for name, p := range c.procs() {
		if code := p.stop(t, 30*time.Second); code != 0 {
			t.Errorf("%s: exit code after SIGTERM = %d, want 0", name, code)
		}
	}
}

// kafkaChaos holds the running processes and the per-fault figures.
type kafkaChaos struct {
	t     *testing.T
	e     *env
	kc    *kfake.Cluster
	group string
	src   *proc
	sinks map[string]*proc // by kafka.client_id
	admin *kafkago.Client

	lastMarker int
	results    []faultResult
	// oddSince is when the group was first seen stable with members other
	// than the running sinks; ghosts counts the members evicted since.
	oddSince time.Time
	ghosts   int
}

// startSource starts a source, client ID "source".
func (c *kafkaChaos) startSource() *proc {
	c.t.Helper()
	c.e.extra["BINLOGSYNC_KAFKA_CLIENT_ID"] = "source"
	return c.e.startRole("source")
}

// startSink starts a sink whose Kafka client ID is name, which the group
// membership shows.
func (c *kafkaChaos) startSink(name string) *proc {
	c.t.Helper()
	c.e.extra["BINLOGSYNC_KAFKA_CLIENT_ID"] = name
	p := c.e.startRole("sink")
	c.sinks[name] = p
	return p
}

func (c *kafkaChaos) procs() map[string]*proc {
	out := map[string]*proc{"source": c.src}
	for name, p := range c.sinks {
		out[name] = p
	}
	return out
}

// alive fails the test when a process exited without being told to.
func (c *kafkaChaos) alive() {
	c.t.Helper()
	for name, p := range c.procs() {
		select {
		case <-p.done:
			c.t.Fatalf("%s exited on its own: %v\n%s", name, p.err, tail(p.Log(), 6000))
		default:
		}
	}
}

// fenced sums the replayed changes the running sinks skipped.
func (c *kafkaChaos) fenced() float64 {
	c.t.Helper()
	var n float64
	for _, p := range c.sinks {
		n += p.metric(c.t, "binlogsync_rows_fenced_total")
	}
	return n
}

// inject runs one fault and records its recovery time and effect.
func (c *kafkaChaos) inject(name string, inject func() (time.Time, func() string)) {
	c.t.Helper()
	c.alive()
	c.t.Logf("fault: %s", name)
	end, effectOf := inject()
	ghosts := c.ghosts
	rec := c.waitMarkers(c.mark(name), end)
	effect := effectOf()
	if n := c.ghosts - ghosts; n > 0 {
		effect += fmt.Sprintf("; %d kfake ghost members evicted", n)
	}
	c.t.Logf("%s: recovered in %s; %s", name, rec.Round(10*time.Millisecond), effect)
	c.results = append(c.results, faultResult{name: name, recovery: rec, effect: effect})
}

// waitLoad waits until the generator committed n more transactions.
func (c *kafkaChaos) waitLoad(g *typesLoad, n int) {
	c.t.Helper()
	txs := func() int {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.txs
	}
	from := txs()
	deadline := time.Now().Add(60 * time.Second)
	for txs() < from+n {
		c.alive()
		if time.Now().After(deadline) {
			c.t.Fatalf("the generator committed %d transactions in 60s, waiting for %d", txs()-from, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mark writes, in one transaction, one marker row on each partition of the
// topic (keys hashed as the producer does, murmur2), and returns their ids.
func (c *kafkaChaos) mark(name string) []int {
	c.t.Helper()
	parts := make([]int, chaosKafkaPartitions)
	for i := range parts {
		parts[i] = i
	}
	covered := map[int]bool{}
	var ids []int
	var tuples []string
	var args []any
	for len(covered) < chaosKafkaPartitions {
		c.lastMarker++
		key := fmt.Sprintf("%s:chaos_marker:%d", c.e.db, c.lastMarker)
		p := kafkago.Murmur2Balancer{}.Balance(kafkago.Message{Key: []byte(key)}, parts...)
		if covered[p] {
			continue
		}
		covered[p] = true
		ids = append(ids, c.lastMarker)
		tuples = append(tuples, "(?, ?, NOW(6))")
		args = append(args, c.lastMarker, name)
	}
	if _, err := c.e.sqldb.Exec("INSERT INTO chaos_marker VALUES "+strings.Join(tuples, ", "), args...); err != nil {
		c.t.Fatalf("writing the markers of %s: %v", name, err)
	}
	return ids
}

// markerWait is how long waitMarkers and waitGroup wait. Recovery takes
// seconds; with kfake's ghost members (see evictGhosts) it has taken 60 s
// under -race.
const markerWait = 150 * time.Second

// waitMarkers waits until every marker is in Redis and returns the time
// since since.
func (c *kafkaChaos) waitMarkers(ids []int, since time.Time) time.Duration {
	c.t.Helper()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = fmt.Sprintf("%s:chaos_marker:%d", c.e.db, id)
	}
	deadline := time.Now().Add(markerWait)
	for {
		n, err := c.e.rdb.Exists(context.Background(), keys...).Result()
		if err == nil && n == int64(len(keys)) {
			return time.Since(since)
		}
		c.alive()
		c.evictGhosts()
		if time.Now().After(deadline) {
			var logs []string
			for name, p := range c.procs() {
				logs = append(logs, name+":\n"+warnings(p.Log(), 20))
			}
			c.t.Fatalf("only %d of the markers %v in Redis after %s (last error %v); group %s\n%s",
				n, ids, markerWait, err, c.describeGroup(), strings.Join(logs, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitGroup waits until the group is stable with exactly the named members,
// which share every partition, and returns it.
func (c *kafkaChaos) waitGroup(members ...string) *kfake.GroupInfo {
	c.t.Helper()
	slices.Sort(members)
	deadline := time.Now().Add(markerWait)
	for {
		if g := c.kc.GroupInfo(c.group); g != nil && g.State == "Stable" && g.NumAssigned() == chaosKafkaPartitions {
			var got []string
			for _, m := range g.Members {
				got = append(got, m.ClientID)
			}
			slices.Sort(got)
			if slices.Equal(got, members) {
				return g
			}
		}
		c.alive()
		c.evictGhosts()
		if time.Now().After(deadline) {
			c.t.Fatalf("the group did not settle on %v with all %d partitions in %s: %s", members,
				chaosKafkaPartitions, markerWait, c.describeGroup())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// evictGhosts works around a kfake bug. kfake starts a member's session
// timer only when its JoinGroup answer reaches the client (groups.go,
// (*group).reply). When kafka-go gave up waiting for that answer (its
// deadline is 5 s + the rebalance timeout, which a busy rebalance can pass),
// the member it created never expires: it holds partitions nobody reads,
// where a real broker would drop it after the session timeout. When the
// group has had members other than exactly one per running sink for longer
// than the session timeout (10 s), whether stable, waiting for JoinGroups
// or waiting for SyncGroup, evictGhosts removes the members that are not
// accounted for with a LeaveGroup, as the broker's session timeout would
// have; a live sink among them simply rejoins.
func (c *kafkaChaos) evictGhosts() {
	c.t.Helper()
	g := c.kc.GroupInfo(c.group)
	perClient := map[string]int{}
	if g != nil {
		for _, m := range g.Members {
			perClient[m.ClientID]++
		}
	}
	// Stable; waiting for SyncGroup (a ghost that kfake made the group's leader never sends its SyncGroup, and
	// kfake's own pending-sync deadline, the rebalance timeout of 10 s, has been seen not to clear it); or waiting
	// for JoinGroups (seen in CI: PreparingRebalance for 90 s with five members per live sink, since every
	// JoinGroup that kafka-go gave up on left one more ghost for the next round to wait for).
	settled := g != nil && (g.State == "Stable" || g.State == "CompletingRebalance" || g.State == "PreparingRebalance")
	// The members no running sink accounts for: those of clients that are not running, and every member of a
	// client that has several (its live one rejoins).
	var leave []kafkago.LeaveGroupRequestMember
	if settled {
		for _, m := range g.Members {
			if c.sinks[m.ClientID] == nil || perClient[m.ClientID] > 1 {
				leave = append(leave, kafkago.LeaveGroupRequestMember{ID: m.MemberID})
			}
		}
	}
	if len(leave) == 0 {
		c.oddSince = time.Time{}
		return
	}
	if c.oddSince.IsZero() {
		c.oddSince = time.Now()
	}
	if time.Since(c.oddSince) < 12*time.Second {
		return
	}
	c.t.Logf("kfake kept members that no sink heartbeats for over 12s (%s); evicting %d of them",
		c.describeGroup(), len(leave))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.admin.LeaveGroup(ctx, &kafkago.LeaveGroupRequest{GroupID: c.group, Members: leave}); err != nil {
		c.t.Logf("evicting: %v", err)
	}
	c.ghosts += len(leave)
	c.oddSince = time.Time{}
}

// describeGroup is the group's state, members and their partition counts.
func (c *kafkaChaos) describeGroup() string {
	g := c.kc.GroupInfo(c.group)
	if g == nil {
		return "(no group)"
	}
	var ms []string
	for _, m := range g.Members {
		ms = append(ms, fmt.Sprintf("%s %d partitions", m.ClientID, m.NumAssigned()))
	}
	slices.Sort(ms)
	return fmt.Sprintf("%s, generation %d: %s", g.State, g.Epoch, strings.Join(ms, ", "))
}

// killSinkInRebalance starts sink-3, which makes the group rebalance, and
// kills sink-1 with SIGKILL the moment its JoinGroup for that rebalance
// reaches the broker: the broker counts it in the new generation (and may
// hand it partitions, or make it the leader that computes the assignment),
// but it never syncs or heartbeats again. The group must notice within the
// session timeout and give everything to sink-2 and sink-3.
func (c *kafkaChaos) killSinkInRebalance() (time.Time, func() string) {
	t := c.t
	t.Helper()
	g := c.waitGroup("sink-1", "sink-2")
	var victimID string
	for _, m := range g.Members {
		if m.ClientID == "sink-1" {
			victimID = m.MemberID
		}
	}
	victim := c.sinks["sink-1"]
	delete(c.sinks, "sink-1") // its death is expected from now on
	killed := make(chan time.Time, 1)
	var fired atomic.Bool
	c.kc.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if jr, ok := req.(*kmsg.JoinGroupRequest); ok && jr.MemberID == victimID && fired.CompareAndSwap(false, true) {
			_ = victim.cmd.Process.Signal(syscall.SIGKILL)
			killed <- time.Now()
			c.kc.DropControl()
		}
		return nil, nil, false // the broker handles the request as usual
	})
	c.startSink("sink-3")
	var end time.Time
	how := "as it rejoined"
	select {
	case end = <-killed:
	case <-time.After(30 * time.Second):
		// Not seen (it rejoined under a new member ID?): kill it anyway,
		// and say so.
		if fired.CompareAndSwap(false, true) {
			how = "without seeing its rejoin (" + c.describeGroup() + ")"
			victim.kill9(t)
			end = time.Now()
		} else {
			end = <-killed
		}
	}
	<-victim.done
	return end, func() string {
		c.waitGroup("sink-2", "sink-3")
		return fmt.Sprintf("sink-1 killed %s (generation %d before); group now %s", how, g.Epoch, c.describeGroup())
	}
}
