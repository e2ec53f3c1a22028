package source

import (
	"context"
	"log/slog"

	"github.com/go-mysql-org/go-mysql/replication"
)

// goMySQLHandler passes go-mysql's log records on, with the BinlogSyncerConfig it logs at every connection
// ("create BinlogSyncer") reduced to its plain settings: the struct holds functions, which a JSON handler renders
// as "!ERROR:json: unsupported type", and a TLS configuration.
type goMySQLHandler struct{ slog.Handler }

func (h goMySQLHandler) Handle(ctx context.Context, r slog.Record) error {
	var cfg *replication.BinlogSyncerConfig
	r.Attrs(func(a slog.Attr) bool {
		if c, ok := a.Value.Any().(replication.BinlogSyncerConfig); ok {
			cfg = &c
			return false
		}
		return true
	})
	if cfg == nil {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if c, ok := a.Value.Any().(replication.BinlogSyncerConfig); ok {
			a = slog.Group(a.Key, slog.Uint64("server_id", uint64(c.ServerID)), slog.String("flavor", c.Flavor),
				slog.String("host", c.Host), slog.Uint64("port", uint64(c.Port)), slog.String("user", c.User),
				slog.Bool("tls", c.TLSConfig != nil), slog.Duration("heartbeat", c.HeartbeatPeriod),
				slog.Duration("read_timeout", c.ReadTimeout))
		}
		out.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h goMySQLHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return goMySQLHandler{h.Handler.WithAttrs(as)}
}

func (h goMySQLHandler) WithGroup(name string) slog.Handler {
	return goMySQLHandler{h.Handler.WithGroup(name)}
}
