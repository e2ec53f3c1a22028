// Package bench holds binlogsync's end-to-end benchmarks (issue 2): draining
// a binlog backlog of narrow and wide rows into Redis, against a bare go-mysql
// reader feeding one plain HSET pipeline, and commit-to-Redis latency under a
// steady transaction load. They run against real servers started by
// internal/testenv; scripts/bench.sh runs them and BENCHMARKS.md records the
// figures.
package bench
