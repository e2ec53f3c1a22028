package app

import (
	"runtime"
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
