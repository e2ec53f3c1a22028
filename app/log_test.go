package app

import (
	"context"
	"log/slog"
	"strings"
	"testing"
)

// go-redis's own messages go through the logger: the first as a warning, the ones within 10 s after it at debug
// level.
func TestRedisLogThroughSlog(t *testing.T) {
	var buf strings.Builder
	l := &redisLog{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Printf(context.Background(), "redis: failed to dial after %d attempts: %v\n", 5, "connection refused")
	l.Printf(context.Background(), "redis: failed to dial after %d attempts: %v", 5, "connection refused")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"level":"WARN"`) || !strings.Contains(lines[1], `"level":"DEBUG"`) ||
		!strings.Contains(lines[0], `"msg":"redis client: redis: failed to dial after 5 attempts: connection refused"`) {
		t.Fatalf("logged:\n%s", buf.String())
	}
}
