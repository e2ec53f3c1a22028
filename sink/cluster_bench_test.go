package sink

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

// BenchmarkApplyCluster applies batches of new rows, then updates of them, on a Redis Cluster of three masters
// with the default lanes and rows per call, and reports the Redis CPU per row summed over the masters (on one
// machine the rows/s mostly measure the client).
// Run: go test -run '^$' -bench ApplyCluster -benchtime 40x ./sink/
func BenchmarkApplyCluster(b *testing.B) {
	c := testenv.NewRedisCluster(b, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), PoolSize: 16})
	b.Cleanup(func() { rdb.Close() })
	nodes := make([]*redis.Client, len(c.Nodes))
	for i, a := range c.Addrs() {
		nodes[i] = redis.NewClient(&redis.Options{Addr: a})
		b.Cleanup(func() { nodes[i].Close() })
	}
	cpu := func() (s float64) {
		for _, n := range nodes {
			s += redisCPU(b, n)
		}
		return s
	}
	table := &change.Table{DB: "bench", Name: "fresh", Columns: []string{"id", "name", "qty", "price", "at"}, PK: []int{0}}
	s, err := New(rdb, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const keep = 4 // batches of distinct rows the updates cycle over
	for _, mode := range []string{"new", "update"} {
		b.Run(mode, func(b *testing.B) {
			c0 := cpu()
			rows := 0
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				var changes []change.Change
				if mode == "new" {
					changes = newRows(table, keep+i)
				} else {
					changes = newRows(table, i%keep)
					for j := range changes {
						changes[j].Version.Epoch = 2 // newer than every earlier write of the row
						changes[j].Version.Pos = uint32(i + 1)
					}
				}
				b.StartTimer()
				rows += applyAllWritten(b, s, changes)
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric((cpu()-c0)/float64(rows)*1e6, "redis-cpu-µs/row")
		})
	}
}
