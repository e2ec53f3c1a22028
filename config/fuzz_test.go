package config

import (
	"os"
	"testing"
)

// FuzzLoad feeds arbitrary bytes as the config file. Load must never panic,
// and whatever it accepts must render and load back to the same configuration.
func FuzzLoad(f *testing.F) {
	if data, err := os.ReadFile(examplePath); err == nil {
		f.Add(data)
	}
	f.Add([]byte("role: all\n"))
	f.Add([]byte("tables:\n  rules:\n    - match: a.*\n      key: \"${db}:${id}\"\n      columns: {rename: {a: b}}\n"))
	f.Add([]byte("a: &x [1, 2]\nb: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := load("fuzz.yaml", data, nil)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if c.MySQL.PasswordFile != "" || c.Redis.PasswordFile != "" || c.Kafka.SASL.PasswordFile != "" || c.Reconcile.TokenFile != "" {
			return // the rendering shows both the secret and its file
		}
		out := c.Redacted()
		again, err := load("redacted.yaml", []byte(out), nil)
		if err != nil {
			t.Fatalf("Redacted() output does not load: %v\n%s", err, out)
		}
		if got := again.Redacted(); got != out {
			t.Fatalf("Redacted() does not round-trip:\n%s\n---\n%s", out, got)
		}
	})
}
