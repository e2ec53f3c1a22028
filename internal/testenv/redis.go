package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a running redis-server.
type Redis struct {
	Port int
	Dir  string

	bin    string
	extra  []string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// StartRedis starts redis-server on a free loopback port, with no persistence.
func StartRedis(dir string, extra ...string) (*Redis, error) {
	bin, err := lookBin("redis-server")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Port: port, Dir: dir, bin: bin, extra: extra}
	return r, r.Start()
}

// Start (re)starts the server on the same port.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	logfile := r.Dir + "/redis-" + strconv.Itoa(r.Port) + ".log"
	from := fileSize(logfile) // a restart appends to the same log
	args := []string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--dir", r.Dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--logfile", logfile,
	}
	args = append(args, r.extra...)
	cmd := exec.Command(r.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	// Redis logs this once it listens; a connect alone could reach another
	// process that holds the port while this server fails to bind.
	if err := waitLog(logfile, from, "Ready to accept connections", 20*time.Second, exited); err != nil {
		return err
	}
	return waitTCP(r.Addr(), 20*time.Second, exited)
}

// Stop kills the server (Redis holds nothing on disk here, so a kill is a stop).
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// Signal sends sig to the server (SIGSTOP freezes it, SIGCONT thaws it).
func (r *Redis) Signal(sig os.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(sig)
	}
}

// NewRedis starts a server of the test's own, stopped at the end of the test.
func NewRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	r, err := StartRedis(t.TempDir(), extra...)
	if err != nil {
		Require(t, "starting Redis: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// RedisCluster is a cluster of masters on loopback.
type RedisCluster struct {
	Nodes []*Redis
}

// Addrs lists the nodes' addresses.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// NewRedisCluster starts n masters with cluster mode on and joins them with
// redis-cli --cluster create.
func NewRedisCluster(t testing.TB, n int) *RedisCluster {
	t.Helper()
	return newRedisCluster(t, n, 0)
}

// NewRedisClusterWithReplicas starts n masters and a replica of each (Nodes[n:]), so that a master's death
// promotes its replica after the node timeout (5 s).
func NewRedisClusterWithReplicas(t testing.TB, n int) *RedisCluster {
	t.Helper()
	return newRedisCluster(t, 2*n, 1)
}

func newRedisCluster(t testing.TB, n, replicas int) *RedisCluster {
	t.Helper()
	cli, err := lookBin("redis-cli")
	if err != nil {
		Require(t, "redis-cli: %v", err)
	}
	c := &RedisCluster{}
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		// The bus port defaults to the port + 10000, among the ephemeral ports outgoing connections take.
		bus, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r, err := StartRedis(dir, "--cluster-enabled", "yes", "--cluster-config-file", dir+"/nodes.conf",
			"--cluster-node-timeout", "5000", "--cluster-port", strconv.Itoa(bus))
		if err != nil {
			Require(t, "starting Redis cluster node: %v", err)
		}
		t.Cleanup(r.Stop)
		c.Nodes = append(c.Nodes, r)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		replicating := 0
		for _, a := range c.Addrs() {
			host, port, _ := strings.Cut(a, ":")
			o, _ := exec.Command(cli, "-h", host, "-p", port, "cluster", "info").Output()
			if !strings.Contains(string(o), "cluster_state:ok") {
				ok = false
			}
			// Replicas attach a moment after the cluster is ok; a failover needs them attached and in sync.
			o, _ = exec.Command(cli, "-h", host, "-p", port, "info", "replication").Output()
			if strings.Contains(string(o), "master_link_status:up") {
				replicating++
			}
		}
		if replicating < n*replicas/(1+replicas) {
			ok = false
		}
		if ok {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis cluster did not reach cluster_state:ok")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Reshard moves n slots, with their keys, from node from to node to (redis-cli --cluster reshard, which migrates
// keys with MIGRATE while the cluster serves them).
func (c *RedisCluster) Reshard(from, to, n int) error {
	cli, err := lookBin("redis-cli")
	if err != nil {
		return err
	}
	id := func(i int) (string, error) {
		out, err := exec.Command(cli, "-p", strconv.Itoa(c.Nodes[i].Port), "cluster", "myid").Output()
		return strings.TrimSpace(string(out)), err
	}
	fromID, err := id(from)
	if err != nil {
		return err
	}
	toID, err := id(to)
	if err != nil {
		return err
	}
	out, err := exec.Command(cli, "--cluster", "reshard", c.Nodes[from].Addr(), "--cluster-from", fromID,
		"--cluster-to", toID, "--cluster-slots", strconv.Itoa(n), "--cluster-yes").CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
	return nil
}

// MoveSlot migrates slot from node from to node to as redis-cli --cluster reshard does (IMPORTING, MIGRATING,
// MIGRATE of the keys, SETSLOT NODE), batch keys at a time with pause between batches: a slow migration, during
// which calls of several keys of the slot get TRYAGAIN and keys already moved get ASK.
func (c *RedisCluster) MoveSlot(slot, from, to, batch int, pause time.Duration) error {
	cli, err := lookBin("redis-cli")
	if err != nil {
		return err
	}
	run := func(node int, args ...string) (string, error) {
		out, err := exec.Command(cli, append([]string{"-p", strconv.Itoa(c.Nodes[node].Port)}, args...)...).CombinedOutput()
		s := strings.TrimSpace(string(out))
		if err == nil && strings.HasPrefix(s, "ERR") {
			err = errors.New(s)
		}
		if err != nil {
			return "", fmt.Errorf("redis-cli %s: %v: %s", strings.Join(args, " "), err, s)
		}
		return s, nil
	}
	fromID, err := run(from, "cluster", "myid")
	if err != nil {
		return err
	}
	toID, err := run(to, "cluster", "myid")
	if err != nil {
		return err
	}
	sl := strconv.Itoa(slot)
	if _, err := run(to, "cluster", "setslot", sl, "importing", fromID); err != nil {
		return err
	}
	if _, err := run(from, "cluster", "setslot", sl, "migrating", toID); err != nil {
		return err
	}
	for {
		out, err := run(from, "cluster", "getkeysinslot", sl, strconv.Itoa(batch))
		if err != nil {
			return err
		}
		if out == "" {
			break
		}
		args := []string{"migrate", "127.0.0.1", strconv.Itoa(c.Nodes[to].Port), "", "0", "5000", "keys"}
		if _, err := run(from, append(args, strings.Split(out, "\n")...)...); err != nil {
			return err
		}
		time.Sleep(pause)
	}
	for i := range c.Nodes {
		if _, err := run(i, "cluster", "setslot", sl, "node", toID); err != nil {
			return err
		}
	}
	return nil
}

var (
	sharedRedisMu  sync.Mutex
	sharedRedis    *Redis
	sharedRedisErr error
)

// SharedRedis returns one server per test binary. Tests that share it must use
// key prefixes or databases of their own.
func SharedRedis(t testing.TB) *Redis {
	t.Helper()
	sharedRedisMu.Lock()
	defer sharedRedisMu.Unlock()
	if sharedRedis == nil && sharedRedisErr == nil {
		dir, err := os.MkdirTemp("", "binlogsync-redis-")
		if err == nil {
			sharedRedis, err = StartRedis(dir)
		}
		sharedRedisErr = err
	}
	if sharedRedisErr != nil {
		Require(t, "starting Redis: %v", sharedRedisErr)
	}
	return sharedRedis
}

func stopSharedRedis() {
	sharedRedisMu.Lock()
	defer sharedRedisMu.Unlock()
	if sharedRedis != nil {
		sharedRedis.Stop()
		_ = os.RemoveAll(sharedRedis.Dir)
		sharedRedis = nil
	}
}

// RedisCPUSeconds sums used_cpu_sys and used_cpu_user of an INFO cpu reply: the CPU seconds the server has used,
// parsing requests and writing replies included.
func RedisCPUSeconds(info string) float64 {
	var s float64
	for _, line := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			s += f
		}
	}
	return s
}
