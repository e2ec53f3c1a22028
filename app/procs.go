package app

import (
	"log/slog"
	"runtime"
	"runtime/debug"
)

// DefaultProcs sets the number of OS threads running Go code (GOMAXPROCS) to half of what the Go runtime chose
// (the CPUs, or the container's CPU limit), at least one, unless the GOMAXPROCS environment variable is set
// (getenv looks it up). It returns the value in force and whether it changed it.
//
// binlogsync's hot path is a short chain of goroutines (binlog reader, apply loop, Redis lanes) handing work to
// each other; every extra P turns those hand-offs into OS thread wake-ups, and binlogsync normally shares the host
// with MySQL and often Redis. Measured on 2 cores (BENCHMARKS.md): one P cuts CPU per transaction by 17 % and the
// p99 latency of a steady load by about a third, drains one-row transactions 19 % faster, leaves narrow and Kafka
// drains unchanged and costs the wide-row drain about 4 %. cmd/binlogsync applies it with transport.kind embedded
// only, for now: see the runbook ("Tuning CPU and latency") for Kafka mode.
func DefaultProcs(getenv func(string) string) (procs int, changed bool) {
	cur := runtime.GOMAXPROCS(0)
	if getenv("GOMAXPROCS") != "" {
		return cur, false
	}
	want := max(1, cur/2)
	if want == cur {
		return cur, false
	}
	runtime.GOMAXPROCS(want)
	return want, true
}

// LogProcs reports DefaultProcs' choice.
func LogProcs(log *slog.Logger, procs int, changed bool) {
	if changed {
		log.Info("using half of the CPUs for Go code; set GOMAXPROCS to choose", slog.Int("gomaxprocs", procs),
			slog.Int("cpus", runtime.NumCPU()))
	}
}

// DefaultGCPercent is the garbage collector's target (GOGC) that DefaultGC sets.
const DefaultGCPercent = 200

// DefaultGC lets the heap grow to three times the live data between collections (GOGC=200) instead of Go's two,
// unless the GOGC environment variable is set (getenv looks it up). It reports whether it changed the setting.
// A GOMEMLIMIT in the environment still caps the heap: the runtime then collects earlier.
//
// binlogsync's live heap is small (tens of MiB: the batches in flight) and most of what it allocates dies within a
// batch, so collections cost CPU without freeing much. Measured on 2 cores (BENCHMARKS.md): CPU per row −7 % for
// the Kafka source and sink in the drain, for peak RSS 126 → 172 MiB (source) and 72 → 98 MiB (sink).
func DefaultGC(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(DefaultGCPercent)
	return true
}
