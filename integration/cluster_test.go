package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// TestIntegrationRedisCluster streams into a 3-master Redis Cluster, with the
// checkpoint stored in the cluster too, and compares every key.
func TestIntegrationRedisCluster(t *testing.T) {
	my := testenv.SharedMariaDB(t)
	cluster := testenv.NewRedisCluster(t, 3)
	e := newEnv(t, my, cluster.Nodes[0])
	e.extra["BINLOGSYNC_REDIS_ADDR"] = ""
	e.extra["BINLOGSYNC_REDIS_ADDRS"] = strings.Join(cluster.Addrs(), ",")
	e.extra["BINLOGSYNC_CHECKPOINT_STORE"] = "redis"
	e.exec(usersDDL, "CREATE TABLE pairs (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b))")
	p := e.start("--config", "../config.example.yaml")

	for i := 0; i < 20; i++ {
		var vals []string
		for j := 0; j < 50; j++ {
			id := i*50 + j
			vals = append(vals, fmt.Sprintf("(%d,'u%d',%d,NULL,NOW(6))", id, id, id))
		}
		e.exec("INSERT INTO users VALUES " + strings.Join(vals, ","))
	}
	e.exec(
		"UPDATE users SET note = 'n' WHERE id % 3 = 0",
		"DELETE FROM users WHERE id % 7 = 0",
		"UPDATE users SET id = id + 10000 WHERE id % 11 = 1", // primary-key changes across slots
		"INSERT INTO pairs VALUES (1,'a',1),(2,'b',2),(3,'c',3)",
		"UPDATE pairs SET b = 'z' WHERE a = 2",
	)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), DisableIdentity: true})
	defer cc.Close()
	waitSameCluster(t, e, cc, "users", "id")
	waitSameCluster(t, e, cc, "pairs", "a", "b")

	// The keys really are spread over the masters.
	var mu sync.Mutex
	perNode := map[string]int64{}
	_ = cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
		n, err := c.DBSize(ctx).Result()
		mu.Lock()
		perNode[c.Options().Addr] = n
		mu.Unlock()
		return err
	})
	for addr, n := range perNode {
		if n == 0 {
			t.Errorf("master %s holds no keys: %v", addr, perNode)
		}
	}

	// The reconciler on the cluster, while the stream runs: drift on keys of every master is found and repaired,
	// orphans by probing between the integer keys and by the key-pattern SCAN of every master.
	ctx := context.Background()
	users := func(id int) string { return fmt.Sprintf("%s:users:%d", e.db, id) }
	var deleted, edited int
	for id := 2; deleted < 10; id++ {
		if id%7 != 0 && id%11 != 1 && cc.Del(ctx, users(id)).Val() == 1 {
			deleted++
		}
	}
	for id := 100; edited < 10; id++ {
		if id%7 != 0 && id%11 != 1 {
			field := "name"
			if edited%2 == 1 {
				field = "stray" // a field that is not a column
			}
			cc.HSet(ctx, users(id), field, "drifted")
			edited++
		}
	}
	for _, id := range []int{7, 14, 21} { // rows deleted: their keys lie between existing rows
		cc.HSet(ctx, users(id), "id", id, "name", "orphan", "_v", "0000000000000000000000000001")
	}
	for _, id := range []int{900000, 900001} { // far beyond the last row: only the SCAN finds them
		cc.HSet(ctx, users(id), "id", id, "name", "orphan", "_v", "0000000000000000000000000001")
	}
	cc.Del(ctx, e.db+":pairs:1:a")
	rep := e.reconcile("--scan-orphans")
	ur, pr := e.tableReport(rep, "users"), e.tableReport(rep, "pairs")
	if ur.Missing.Found != 10 || ur.Stale.Found != 10 || ur.Extra.Found != 5 || ur.Drift() != ur.Missing.Repaired+ur.Stale.Repaired+ur.Extra.Repaired {
		t.Errorf("users on the cluster: %+v, want 10 missing, 10 stale and 5 extra found and repaired", ur)
	}
	if pr.Missing.Found != 1 || pr.Missing.Repaired != 1 {
		t.Errorf("pairs on the cluster: %+v, want the deleted key found and repaired", pr)
	}
	waitSameCluster(t, e, cc, "users", "id")
	waitSameCluster(t, e, cc, "pairs", "a", "b")

	// A frozen master: the sink's retries show (warning and metric) while it is frozen, and nothing is lost.
	frozen := cluster.Nodes[1]
	frozen.Signal(syscall.SIGSTOP)
	thawed := false
	thaw := func() {
		if !thawed {
			frozen.Signal(syscall.SIGCONT)
			thawed = true
		}
	}
	defer thaw()
	var vals []string
	for id := 20000; id < 20100; id++ {
		vals = append(vals, fmt.Sprintf("(%d,'f%d',%d,NULL,NOW(6))", id, id, id))
	}
	e.exec("INSERT INTO users VALUES " + strings.Join(vals, ","))
	waitFor(t, 30*time.Second, "a retry warning while a master is frozen", func() bool {
		return strings.Contains(p.Log(), "retrying Redis writes")
	})
	if p.metric(t, "binlogsync_redis_retries_total") == 0 {
		t.Errorf("binlogsync_redis_retries_total is 0 while a master is frozen")
	}
	thaw()
	waitFor(t, 60*time.Second, "the cluster to be up again", func() bool {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			if info, err := c.ClusterInfo(ctx).Result(); err != nil || !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("down")
			}
			return nil
		})
		return err == nil
	})
	waitSameCluster(t, e, cc, "users", "id")

	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if raw, err := cc.Get(context.Background(), "binlogsync:checkpoint").Result(); err != nil || !strings.Contains(raw, "mariadb-bin") {
		t.Fatalf("checkpoint not stored in the cluster: %q %v", raw, err)
	}
	if strings.Contains(p.Log(), "CROSSSLOT") {
		t.Fatalf("CROSSSLOT error in the log")
	}
}

func snapshotCluster(t *testing.T, e *env, cc *redis.ClusterClient, table string) map[string]map[string]string {
	t.Helper()
	var mu sync.Mutex
	out := map[string]map[string]string{}
	err := cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, e.db+":"+table+":*", 1000).Iterator()
		for iter.Next(ctx) {
			h, err := c.HGetAll(ctx, iter.Val()).Result()
			if err != nil {
				return err
			}
			m := map[string]string{}
			for f, v := range h {
				if !strings.HasPrefix(f, "_") {
					m[f] = v
				}
			}
			mu.Lock()
			out[iter.Val()] = m
			mu.Unlock()
		}
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitSameCluster(t *testing.T, e *env, cc *redis.ClusterClient, table string, pk ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := diff(e.snapshotMySQL(table, pk...), snapshotCluster(t, e, cc, table), nil)
		if len(d) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if len(d) > 20 {
				d = d[:20]
			}
			t.Fatalf("cluster differs from MySQL for %s:\n%s", table, strings.Join(d, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
