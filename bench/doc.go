// Package bench holds binlogsync's end-to-end benchmarks (issues 2 and 3):
// draining a binlog backlog of narrow and wide rows into Redis, against a bare
// go-mysql reader feeding one plain HSET pipeline (in two goroutines, and
// serially in one), commit-to-Redis latency under a steady transaction load,
// and both through Kafka (an in-process kfake broker keeping its log in files
// of a temporary directory). They run against real servers started by
// internal/testenv; scripts/bench.sh runs them and BENCHMARKS.md records the
// figures.
//
// Environment: BENCH_OUT (where profiles go), BENCH_CHILD_ENV ("VAR=value ..."
// for the binlogsync processes, to compare settings), BENCH_BIN (a binlogsync
// binary of another build instead of building this tree, to compare builds),
// BENCH_KFAKE_MEM=1 (kfake's in-memory log), BENCH_STEADY_RATE (tx/s).
package bench
