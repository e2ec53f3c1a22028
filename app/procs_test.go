package app

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestDefaultProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })

	runtime.GOMAXPROCS(4)
	if n, changed := DefaultProcs(func(string) string { return "" }); n != 2 || !changed || runtime.GOMAXPROCS(0) != 2 {
		t.Errorf("4 CPUs, no GOMAXPROCS: got %d (changed %v), GOMAXPROCS now %d; want 2", n, changed, runtime.GOMAXPROCS(0))
	}
	runtime.GOMAXPROCS(1)
	if n, changed := DefaultProcs(func(string) string { return "" }); n != 1 || changed {
		t.Errorf("1 CPU: got %d (changed %v), want 1 unchanged", n, changed)
	}
	runtime.GOMAXPROCS(3)
	if n, changed := DefaultProcs(func(k string) string {
		if k == "GOMAXPROCS" {
			return "3"
		}
		return ""
	}); n != 3 || changed || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("GOMAXPROCS set: got %d (changed %v), want 3 unchanged", n, changed)
	}
}

func TestDefaultGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })

	if !DefaultGC(func(string) string { return "" }) {
		t.Error("GOGC unset: DefaultGC reports no change")
	}
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, DefaultGCPercent)
	}
	if DefaultGC(func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	}) {
		t.Error("GOGC set: DefaultGC reports a change")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: GC percent %d, want it left at 100", got)
	}
}
