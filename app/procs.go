package app

import (
	"log/slog"
	"runtime"
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
