package app

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

// A seed of redis.addrs that is a cluster node of no cluster (what del-node leaves running) is named at start;
// seeds of the cluster pass, and so does one that does not answer.
func TestRedisSeedOutsideTheCluster(t *testing.T) {
	cl := testenv.NewRedisCluster(t, 3)
	dir := t.TempDir()
	lone, err := testenv.StartRedis(dir, "--cluster-enabled", "yes", "--cluster-config-file", dir+"/nodes.conf")
	if err != nil {
		testenv.Require(t, "starting a lone cluster node: %v", err)
	}
	t.Cleanup(lone.Stop)
	cfg := &config.Config{Redis: config.Redis{DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second}}
	ctx := context.Background()

	cfg.Redis.Addrs = append(cl.Addrs(), "127.0.0.1:1")
	rdb, err := OpenRedis(ctx, cfg)
	if err != nil {
		t.Fatalf("the cluster's seeds and an unreachable one: %v", err)
	}
	rdb.Close()

	cfg.Redis.Addrs = append(cl.Addrs()[:2], lone.Addr())
	_, err = OpenRedis(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "redis.addrs: "+lone.Addr()+" serves no slots") {
		t.Fatalf("a seed outside the cluster: %v", err)
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExitServer {
		t.Fatalf("exit code of %v: want %d", err, ExitServer)
	}
}
