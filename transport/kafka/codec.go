// Package kafka is the Kafka transport: the source side publishes every row
// change as one JSON message keyed by row, and advances the binlog checkpoint
// only over transactions whose every message Kafka acknowledged; the sink side
// consumes as a consumer group, applies to Redis and commits offsets only
// after the Redis writes succeeded. The message format is documented in
// docs/kafka.md.
package kafka

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/internal/jsonenc"
)

// FormatVersion is the "format" member of every message. A decoder refuses
// other versions (the message goes to the dead-letter topic).
const FormatVersion = 1

// Source is where a change was read: the binlog file and the position of the
// start of its transaction, and a GTID set of a transaction boundary at or
// before that transaction (see docs/kafka.md).
type Source struct {
	File    string
	Pos     uint32
	GTIDSet string
	Server  string
}

// Key is the Kafka message key of a change: "<db>:<table>:<pk values joined
// with ':'>", the row's identity (the primary key after an update, the old
// one for a delete), so that the changes of one row stay on one partition.
func Key(dst []byte, c *change.Change) []byte {
	row := c.After
	if c.Op == change.Delete {
		row = c.Before
	}
	dst = append(dst, c.Table.DB...)
	dst = append(dst, ':')
	dst = append(dst, c.Table.Name...)
	for _, p := range c.Table.PK {
		dst = append(dst, ':')
		if p < len(row) {
			dst = append(dst, row[p]...)
		}
	}
	return dst
}

// Encode appends the JSON message of c to dst. Members come in a fixed order;
// values that are valid UTF-8 are JSON strings, other values are objects
// {"b64":"<standard base64>"}, SQL NULL is null.
func Encode(dst []byte, c *change.Change, src Source) ([]byte, error) {
	t := c.Table
	if t == nil {
		return dst, errors.New("encoding a change without a table")
	}
	check := func(name string, r change.Row) error {
		if r != nil && len(r) != len(t.Columns) {
			return fmt.Errorf("encoding a change of %s: %s row has %d values, the table %d columns",
				t.FullName(), name, len(r), len(t.Columns))
		}
		return nil
	}
	if err := check("before", c.Before); err != nil {
		return dst, err
	}
	if err := check("after", c.After); err != nil {
		return dst, err
	}
	switch c.Op {
	case change.Insert, change.Update:
		if c.After == nil {
			return dst, fmt.Errorf("encoding an %s of %s without an after image", c.Op, t.FullName())
		}
	case change.Delete:
		if c.Before == nil {
			return dst, fmt.Errorf("encoding a delete of %s without a before image", t.FullName())
		}
	default:
		return dst, fmt.Errorf("encoding a change of %s: unknown operation %d", t.FullName(), c.Op)
	}
	dst = append(dst, `{"format":`...)
	dst = strconv.AppendInt(dst, FormatVersion, 10)
	dst = append(dst, `,"op":"`...)
	dst = append(dst, c.Op.String()...)
	dst = append(dst, `","db":`...)
	dst = jsonenc.AppendName(dst, t.DB)
	dst = append(dst, `,"table":`...)
	dst = jsonenc.AppendName(dst, t.Name)
	dst = append(dst, `,"columns":[`...)
	for i, col := range t.Columns {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendName(dst, col)
	}
	dst = append(dst, `],"pk":[`...)
	for i, p := range t.PK {
		if p < 0 || p >= len(t.Columns) {
			return dst, fmt.Errorf("encoding a change of %s: primary-key index %d out of range", t.FullName(), p)
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendName(dst, t.Columns[p])
	}
	dst = append(dst, `],"pk_values":[`...)
	keyRow := c.After
	if c.Op == change.Delete {
		keyRow = c.Before
	}
	for i, p := range t.PK {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendValue(dst, keyRow[p])
	}
	dst = append(dst, ']')
	if c.Before != nil {
		dst = append(dst, `,"before":`...)
		dst = appendRow(dst, t, c.Before)
	}
	if c.After != nil {
		dst = append(dst, `,"after":`...)
		dst = appendRow(dst, t, c.After)
	}
	dst = append(dst, `,"version":"`...)
	dst = c.Version.AppendText(dst)
	dst = append(dst, `","source":{"file":`...)
	dst = jsonenc.AppendName(dst, src.File)
	dst = append(dst, `,"pos":`...)
	dst = strconv.AppendUint(dst, uint64(src.Pos), 10)
	if src.GTIDSet != "" {
		dst = append(dst, `,"gtid_set":`...)
		dst = jsonenc.AppendName(dst, src.GTIDSet)
	}
	if src.Server != "" {
		dst = append(dst, `,"server":`...)
		dst = jsonenc.AppendName(dst, src.Server)
	}
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, uint64(c.Version.Epoch), 10)
	dst = append(dst, '}')
	if !c.CommitTime.IsZero() {
		dst = append(dst, `,"commit_time":"`...)
		dst = c.CommitTime.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	dst = append(dst, '}')
	return dst, nil
}

func appendRow(dst []byte, t *change.Table, r change.Row) []byte {
	dst = append(dst, '{')
	for i, v := range r {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendName(dst, t.Columns[i])
		dst = append(dst, ':')
		dst = jsonenc.AppendValue(dst, v)
	}
	return append(dst, '}')
}
