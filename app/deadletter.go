package app

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/metrics"
	"github.com/binlogsync/binlogsync/sink"
)

// deadLetterMaxLen caps the dead-letter stream (approximately, XADD MAXLEN ~).
const deadLetterMaxLen = 100000

// RedisDeadLetter returns a sink.Options.DeadLetter that appends rows the sink
// cannot apply to the Redis stream key, with the reason, and counts them. The
// entry carries what the reconciler needs to resolve the row from MySQL: table,
// primary key, version and the row images.
func RedisDeadLetter(rdb redis.UniversalClient, stream string, m *metrics.Metrics) func(context.Context, change.Change, error) error {
	return func(ctx context.Context, c change.Change, reason error) error {
		fields := map[string]any{
			"table":   c.Table.FullName(),
			"op":      c.Op.String(),
			"version": c.Version.String(),
			// The binlog file's number (its name's suffix) and the start of the
			// transaction, then the change's index in it.
			"position": fmt.Sprintf("%06d:%d#%d", c.Version.File, c.Version.Pos, c.Version.Seq),
			"reason":   reason.Error(),
		}
		var re *sink.RowError
		if errors.As(reason, &re) {
			fields["key"] = re.Key
		}
		row := c.After
		if row == nil {
			row = c.Before
		}
		if row != nil {
			pk, _ := json.Marshal(imageJSON(c.Table.Columns, c.Table.PKValues(row), c.Table.PK))
			fields["pk"] = string(pk)
		}
		if c.Before != nil {
			b, _ := json.Marshal(imageJSON(c.Table.Columns, c.Before, nil))
			fields["before"] = string(b)
		}
		if c.After != nil {
			b, _ := json.Marshal(imageJSON(c.Table.Columns, c.After, nil))
			fields["after"] = string(b)
		}
		err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, MaxLen: deadLetterMaxLen, Approx: true, Values: fields}).Err()
		if err != nil {
			return fmt.Errorf("adding a dead letter for %s to stream %s: %w", c.Table.FullName(), stream, err)
		}
		if m != nil {
			m.DeadLetters.WithLabelValues(c.Table.FullName()).Inc()
		}
		return nil
	}
}

// imageJSON renders a row image as a JSON object: text values as strings,
// values that are not UTF-8 as {"b64": ...}, NULL as null. With idx set,
// values[i] belongs to column cols[idx[i]].
func imageJSON(cols []string, values [][]byte, idx []int) map[string]any {
	out := make(map[string]any, len(values))
	for i, v := range values {
		name := cols[i]
		if idx != nil {
			name = cols[idx[i]]
		}
		switch {
		case v == nil:
			out[name] = nil
		case utf8.Valid(v):
			out[name] = string(v)
		default:
			out[name] = map[string]string{"b64": base64.StdEncoding.EncodeToString(v)}
		}
	}
	return out
}
