// Package bench holds binlogsync's end-to-end benchmarks (issues 2 and 3):
// draining a binlog backlog of narrow and wide rows into Redis, against a bare
// go-mysql reader feeding one plain HSET pipeline (in two goroutines, and
// serially in one), commit-to-Redis latency under a steady transaction load,
// and both through Kafka (an in-process kfake broker keeping its log in files
// of a temporary directory). They run against real servers started by
// internal/testenv; scripts/bench.sh runs them and BENCHMARKS.md records the
// figures.
package bench
