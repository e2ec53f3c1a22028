package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/config"
)

// TestTableInterval checks that a rule's reconcile_interval wins over reconcile.interval for the tables it
// matches, and only for those.
func TestTableInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "reconcile:\n  interval: 2h\ntables:\n  rules:\n    - match: shop.orders\n      reconcile_interval: 5m\n" +
		"    - match: shop.*\n      ttl: 1h\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	iv := tableInterval(cfg)
	for name, want := range map[string]time.Duration{"shop.orders": 5 * time.Minute, "shop.users": 2 * time.Hour, "other.t": 2 * time.Hour} {
		if got := iv(name); got != want {
			t.Errorf("interval of %s = %s, want %s", name, got, want)
		}
	}
	if fullInterval(0) != -1 || fullInterval(time.Hour) != time.Hour {
		t.Errorf("fullInterval(0) = %s, fullInterval(1h) = %s", fullInterval(0), fullInterval(time.Hour))
	}
}
