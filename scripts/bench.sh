#!/usr/bin/env bash
# Runs the end-to-end benchmarks of issue 2 (see BENCHMARKS.md) and prints a
# summary with the CPU profiles' breakdown.
#
#   scripts/bench.sh                 # the drains, the steady load and Kafka mode (about 4 minutes)
#   scripts/bench.sh 'DrainWide'     # a -bench regexp
#
# The benchmarks start their own MariaDB and Redis (internal/testenv) and build
# the binlogsync binary. Profiles, heap profiles and binlogsync logs go to
# $BENCH_OUT (default /tmp/binlogsync-bench). Numbers depend on what else runs:
# the load average is printed before and after, and reported per benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern=${1:-'^Benchmark(Drain|Steady|Kafka)'}
export BENCH_OUT=${BENCH_OUT:-/tmp/binlogsync-bench}
mkdir -p "$BENCH_OUT"
scripts/install-deps.sh percona-toolkit  # pt-table-checksum, beside BenchmarkReconcile

echo "== machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), $(go version | cut -d' ' -f3)"
echo "== $(mariadbd --version 2>/dev/null || /usr/sbin/mariadbd --version) / $(redis-server --version | cut -d' ' -f1-3)"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
go test -run '^$' -bench "$pattern" -benchtime 1x -timeout 30m ./bench/ 2>&1 | tee "$BENCH_OUT/bench.txt"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Where binlogsync's CPU goes: samples under each goroutine root (disjoint).
share() { # profile regexp
  go tool pprof -top -nodecount=100000 -nodefraction=0 -edgefraction=0 -focus="$2" "$1" 2>/dev/null |
    sed -n 's/.*Showing nodes accounting for [^,]*, \([0-9.]*%\) of \(.*\) total.*/\1/p' | head -1
}
for prof in "$BENCH_OUT"/*.cpu.pprof; do
  [ -e "$prof" ] || continue
  name=$(basename "$prof" .cpu.pprof)
  echo
  echo "== CPU profile of binlogsync, $name drain ($prof)"
  total=$(go tool pprof -top -nodecount=1 "$prof" 2>/dev/null | sed -n 's/.*Total samples = \([^ ]*\).*/\1/p')
  echo "total samples: $total"
  printf '  %-62s %s\n' \
    "go-mysql reader goroutine (socket reads, event parsing)" "$(share "$prof" 'BinlogSyncer\).onStream')" \
    "source goroutine (row rendering, GTIDs, batching)" "$(share "$prof" 'source\.\(\*Source\)\.Run')" \
    "sink (apply loop, script arguments, go-redis pipelines)" "$(share "$prof" 'ApplyLoop\)\.Run|sink\.\(\*Sink\)\.run\.func')" \
    "GC and scavenger workers (background)" "$(share "$prof" 'gcBgMarkWorker|bgsweep|bgscavenge')" \
    "  of all: allocation (mallocgc, incl. assists)" "$(share "$prof" 'runtime\.mallocgc$')" \
    "  of all: go-redis writing commands (WriteArgs)" "$(share "$prof" 'proto\.\(\*Writer\)\.WriteArgs')" \
    "  of all: building script arguments (sink.buildCall)" "$(share "$prof" 'sink\.\(\*Sink\)\.buildCall')" \
    "  of all: rendering values (source render)" "$(share "$prof" 'source\.\(\*stream\)\.render')" \
    "  of all: row image decoding (go-mysql decodeImage)" "$(share "$prof" 'RowsEvent\)\.decodeImage')" \
    "  of all: go-mysql fmt.Sprintf in DATETIME/TIME decoding" "$(share "$prof" 'replication\.formatDatetime|replication\.decodeTime')" \
    "  of all: go-mysql SetReadDeadline per packet" "$(share "$prof" 'SetReadDeadline')" \
    "  of all: context.WithTimeout per event (source nextEvent)" "$(share "$prof" 'context\.WithTimeout')" \
    "  of all: GTID set update and formatting per transaction" "$(share "$prof" 'addGTID|GTIDSet\)\.String')"
  go tool pprof -top -nodecount=15 "$prof" 2>/dev/null | sed -n '/flat%/,$p'
done
if [ -e "$BENCH_OUT/steady.perf.data" ] && command -v perf >/dev/null; then
  echo
  echo "== perf profile of the binlogsync binary under the steady load (children = inclusive)"
  perf report -i "$BENCH_OUT/steady.perf.data" --stdio --children --sort symbol -g none 2>/dev/null |
    grep -E '^ +[0-9]' | grep -E 'binlogsync|go-mysql|go-redis|mallocgc|gcBgMarkWorker|bgscavenge|madvise|futex|sysmon|findRunnable' |
    head -25 | awk '{printf "  %7s  %s\n", $1, $4}' || true # head closes the pipe early (SIGPIPE)
fi
echo
echo "== summary"
grep -E '^Benchmark' "$BENCH_OUT/bench.txt" | tr -s ' \t' ' ' | sed 's/ \([0-9.]*\) \([a-zA-Z]\)/\n    \1 \2/g'
