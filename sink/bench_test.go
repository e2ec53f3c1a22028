package sink

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

const benchBatch = 5000 // changes per Apply

// benchChanges returns batch narrow-row changes (id + 3 small columns) over a key space of 50,000 rows, at
// versions after base.
func benchChanges(t *change.Table, base uint32, batch int) []change.Change {
	out := make([]change.Change, batch)
	for i := range out {
		id := (int(base) + i) % 50000
		out[i] = ins(t, change.Version{Epoch: 1, File: 1, Pos: base, Seq: uint32(i + 1)},
			r(strconv.Itoa(id), "name-"+strconv.Itoa(id), "12.50", "2024-01-02 03:04:05"))
	}
	return out
}

// BenchmarkApply measures rows/s of Apply for several RowsPerCall and Lanes, against a real Redis.
func BenchmarkApply(b *testing.B) {
	srv := testenv.SharedRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 16})
	b.Cleanup(func() { rdb.Close() })
	table := &change.Table{DB: "bench", Name: "narrow", Columns: []string{"id", "name", "price", "at"}, PK: []int{0}}
	base := uint32(0)
	for _, lanes := range []int{1, 2, 4} {
		for _, rpc := range []int{1, 10, 50, 100, 200, 500} {
			b.Run(fmt.Sprintf("lanes=%d/rows=%d", lanes, rpc), func(b *testing.B) {
				s, err := New(rdb, Options{Lanes: lanes, RowsPerCall: rpc})
				if err != nil {
					b.Fatal(err)
				}
				serverUsec(b, rdb)
				rows := 0
				for b.Loop() {
					b.StopTimer()
					base++
					changes := benchChanges(table, base, benchBatch)
					b.StartTimer()
					rows += applyAllWritten(b, s, changes)
				}
				b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
				b.ReportMetric(serverUsec(b, rdb)/float64(rows), "redis-µs/row")
			})
		}
	}
}

// applyAllWritten applies changes and fails unless every one of them was written; it returns their number.
func applyAllWritten(b *testing.B, s *Sink, changes []change.Change) int {
	st, err := s.Apply(context.Background(), changes)
	if err != nil {
		b.Fatal(err)
	}
	if st.Written != len(changes) {
		b.Fatalf("stats %+v, want %d written", st, len(changes))
	}
	return len(changes)
}

// serverUsec returns the microseconds Redis spent executing commands since the last call (INFO commandstats),
// a measure of the server's cost that the load of the client machine does not distort much.
func serverUsec(b *testing.B, rdb *redis.Client) float64 {
	ctx := context.Background()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	total := 0.0
	for _, line := range strings.Split(info, "\n") {
		_, rest, ok := strings.Cut(line, ",usec=")
		if !ok {
			continue
		}
		u, _, _ := strings.Cut(rest, ",")
		f, err := strconv.ParseFloat(u, 64)
		if err != nil {
			b.Fatalf("parsing %q: %v", line, err)
		}
		total += f
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	return total
}

// BenchmarkRawHSet is the baseline: pipelined DEL + HSET per row, no fence, no script, over the same lanes.
func BenchmarkRawHSet(b *testing.B) {
	srv := testenv.SharedRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 16})
	b.Cleanup(func() { rdb.Close() })
	table := &change.Table{DB: "bench", Name: "raw", Columns: []string{"id", "name", "price", "at"}, PK: []int{0}}
	ctx := context.Background()
	for _, lanes := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("lanes=%d", lanes), func(b *testing.B) {
			serverUsec(b, rdb)
			rows := 0
			base := uint32(0)
			for b.Loop() {
				b.StopTimer()
				base++
				changes := benchChanges(table, base, benchBatch)
				b.StartTimer()
				var wg sync.WaitGroup
				for l := range lanes {
					wg.Go(func() {
						pipe := rdb.Pipeline()
						for i := l; i < len(changes); i += lanes {
							row := changes[i].After
							key := "bench:raw:" + string(row[0])
							pipe.Del(ctx, key)
							pipe.HSet(ctx, key, "id", row[0], "name", row[1], "price", row[2], "at", row[3], "_v", "x")
						}
						if _, err := pipe.Exec(ctx); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				rows += len(changes)
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(serverUsec(b, rdb)/float64(rows), "redis-µs/row")
		})
	}
}

// redisCPU is the CPU seconds the Redis server has used: unlike serverUsec it includes parsing the requests and
// writing the replies.
func redisCPU(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	return testenv.RedisCPUSeconds(info)
}

// newRows returns batch i of benchBatch inserts of rows that no earlier batch holds, into a table of the columns
// id, name, qty, price, at.
func newRows(table *change.Table, i int) []change.Change {
	changes := make([]change.Change, benchBatch)
	for j := range changes {
		id := strconv.Itoa(i*benchBatch + j)
		changes[j] = ins(table, change.Version{Epoch: 1, File: 1, Pos: uint32(i + 1), Seq: uint32(j + 1)},
			r(id, "name "+id, "12345", "123.45", "2020-01-01 00:00:00"))
	}
	return changes
}

// BenchmarkApplyNew applies batches of rows that Redis has never held (the drain of a backlog of inserts: the
// script's fresh-call path) with the default lanes and rows per call, and reports the Redis CPU per row.
// Run: go test -run '^$' -bench ApplyNew -benchtime 100x ./sink/
func BenchmarkApplyNew(b *testing.B) {
	srv := testenv.SharedRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 16})
	b.Cleanup(func() { rdb.Close() })
	table := &change.Table{DB: "bench", Name: "fresh", Columns: []string{"id", "name", "qty", "price", "at"}, PK: []int{0}}
	s, err := New(rdb, Options{})
	if err != nil {
		b.Fatal(err)
	}
	c0 := redisCPU(b, rdb)
	rows := 0
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		changes := newRows(table, i)
		b.StartTimer()
		rows += applyAllWritten(b, s, changes)
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric((redisCPU(b, rdb)-c0)/float64(rows)*1e6, "redis-cpu-µs/row")
}

// floorScript is the least a Lua script can do to write rows: one HSET per row, no check of any kind.
const floorScript = `
local a = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[a + 1])
  redis.call('HSET', KEYS[i], '_v', ARGV[a], unpack(ARGV, a + 2, a + 1 + n))
  a = a + 2 + n
end
return #KEYS
`

// BenchmarkWriteFloor measures the Redis CPU per new row of three ways to write the rows of BenchmarkApplyNew,
// with the sink's default rows per call and per pipeline: plain pipelined HSETs (no fence: the baseline),
// the same HSETs from a Lua script that checks nothing (the floor of any script-based fence), and the sink.
// Run: go test -run '^$' -bench WriteFloor -benchtime 20x ./sink/
func BenchmarkWriteFloor(b *testing.B) {
	srv := testenv.SharedRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 16})
	b.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	table := &change.Table{DB: "bench", Name: "floor", Columns: []string{"id", "name", "qty", "price", "at"}, PK: []int{0}}
	floor := redis.NewScript(floorScript)
	if err := floor.Load(ctx, rdb).Err(); err != nil {
		b.Fatal(err)
	}
	s, err := New(rdb, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ver := change.Version{Epoch: 1, File: 1, Pos: 1, Seq: 1}.String()
	// pipelines sends the rows of changes in pipelines of rowsPerPipeline rows, calls of DefaultRowsPerCall.
	pipelines := func(changes []change.Change, call func(pipe redis.Pipeliner, cs []change.Change)) {
		for lo := 0; lo < len(changes); lo += rowsPerPipeline {
			pipe := rdb.Pipeline()
			hi := min(lo+rowsPerPipeline, len(changes))
			for c := lo; c < hi; c += DefaultRowsPerCall {
				call(pipe, changes[c:min(c+DefaultRowsPerCall, hi)])
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	ways := []struct {
		name  string
		apply func(changes []change.Change)
	}{
		{"plain-HSET", func(changes []change.Change) {
			pipelines(changes, func(pipe redis.Pipeliner, cs []change.Change) {
				for _, c := range cs {
					args := []any{"_v", ver}
					for i, v := range c.After {
						args = append(args, table.Columns[i], v)
					}
					pipe.HSet(ctx, "bench:floor:"+string(c.After[0]), args...)
				}
			})
		}},
		{"lua-no-check", func(changes []change.Change) {
			pipelines(changes, func(pipe redis.Pipeliner, cs []change.Change) {
				keys := make([]string, 0, len(cs))
				args := make([]any, 0, len(cs)*12)
				for _, c := range cs {
					keys = append(keys, "bench:floor:"+string(c.After[0]))
					args = append(args, ver, 2*len(c.After))
					for i, v := range c.After {
						args = append(args, table.Columns[i], v)
					}
				}
				pipe.EvalSha(ctx, floor.Hash(), keys, args...)
			})
		}},
		{"sink", func(changes []change.Change) { applyAllWritten(b, s, changes) }},
	}
	for _, w := range ways {
		b.Run(w.name, func(b *testing.B) {
			if err := rdb.FlushDB(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			c0 := redisCPU(b, rdb)
			rows := 0
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				changes := newRows(table, i)
				b.StartTimer()
				w.apply(changes)
				rows += len(changes)
			}
			b.ReportMetric((redisCPU(b, rdb)-c0)/float64(rows)*1e6, "redis-cpu-µs/row")
			if n := rdb.DBSize(ctx).Val(); n < int64(rows) {
				b.Fatalf("Redis holds %d keys, want at least %d", n, rows)
			}
		})
	}
}
