// Package kafka is the Kafka transport: the source side publishes every row
// change as one JSON message keyed by row, and advances the binlog checkpoint
// only over transactions whose every message Kafka acknowledged; the sink side
// consumes as a consumer group, applies to Redis and commits offsets only
// after the Redis writes succeeded. The message format is documented in
// docs/kafka.md.
package kafka

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/binlogsync/binlogsync/change"
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
	dst = appendName(dst, t.DB)
	dst = append(dst, `,"table":`...)
	dst = appendName(dst, t.Name)
	dst = append(dst, `,"columns":[`...)
	for i, col := range t.Columns {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendName(dst, col)
	}
	dst = append(dst, `],"pk":[`...)
	for i, p := range t.PK {
		if p < 0 || p >= len(t.Columns) {
			return dst, fmt.Errorf("encoding a change of %s: primary-key index %d out of range", t.FullName(), p)
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendName(dst, t.Columns[p])
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
		dst = appendValue(dst, keyRow[p])
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
	dst = appendName(dst, src.File)
	dst = append(dst, `,"pos":`...)
	dst = strconv.AppendUint(dst, uint64(src.Pos), 10)
	if src.GTIDSet != "" {
		dst = append(dst, `,"gtid_set":`...)
		dst = appendName(dst, src.GTIDSet)
	}
	if src.Server != "" {
		dst = append(dst, `,"server":`...)
		dst = appendName(dst, src.Server)
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
		dst = appendName(dst, t.Columns[i])
		dst = append(dst, ':')
		dst = appendValue(dst, v)
	}
	return append(dst, '}')
}

// appendValue renders one column value: null, a string, or {"b64":...}.
func appendValue(dst []byte, v []byte) []byte {
	switch {
	case v == nil:
		return append(dst, "null"...)
	case utf8.Valid(v):
		return appendString(dst, v)
	default:
		dst = append(dst, `{"b64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, v)
		return append(dst, `"}`...)
	}
}

const hexDigits = "0123456789abcdef"

// appendString appends s, which must be valid UTF-8, as a JSON string,
// escaping only '"', '\', control characters and U+2028/U+2029 (which break
// JavaScript readers).
func appendString[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 0x20 && b != '"' && b != '\\' && b != 0xe2:
			continue
		case b == 0xe2:
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9) {
				dst = append(dst, s[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xf])
				i += 2
				start = i + 1
			}
			continue
		}
		dst = append(dst, s[start:i]...)
		switch b {
		case '"', '\\':
			dst = append(dst, '\\', b)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendName appends a database, table or column name (made valid UTF-8).
func appendName(dst []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\ufffd")
	}
	return appendString(dst, s)
}

// wire is the decoded shape of a message.
type wire struct {
	Format     *int                 `json:"format"`
	Op         string               `json:"op"`
	DB         *string              `json:"db"`
	Table      *string              `json:"table"`
	Columns    []string             `json:"columns"`
	PK         []string             `json:"pk"`
	PKValues   []wireValue          `json:"pk_values"`
	Before     map[string]wireValue `json:"before"`
	After      map[string]wireValue `json:"after"`
	Version    string               `json:"version"`
	Source     wireSource           `json:"source"`
	CommitTime string               `json:"commit_time"`
}

type wireSource struct {
	File    string `json:"file"`
	Pos     uint32 `json:"pos"`
	GTIDSet string `json:"gtid_set"`
	Server  string `json:"server"`
	Epoch   uint16 `json:"epoch"`
}

// wireValue is one column value: null, a string or {"b64": "..."}.
type wireValue struct {
	set  bool
	null bool
	b    []byte
}

func (v *wireValue) UnmarshalJSON(data []byte) error {
	v.set = true
	data = bytes.TrimSpace(data)
	switch {
	case string(data) == "null":
		v.null = true
		return nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		if !utf8.ValidString(s) {
			return errors.New("string value is not valid UTF-8")
		}
		v.b = []byte(s)
		return nil
	case len(data) > 0 && data[0] == '{':
		var o struct {
			B64 *string `json:"b64"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return fmt.Errorf("binary value: %w", err)
		}
		if o.B64 == nil {
			return errors.New(`binary value without "b64"`)
		}
		b, err := base64.StdEncoding.Strict().DecodeString(*o.B64)
		if err != nil {
			return fmt.Errorf("binary value: %w", err)
		}
		v.b = b
		return nil
	}
	return fmt.Errorf("a value must be null, a string or {\"b64\": ...}, not %.20s", data)
}

// Decoder turns messages back into changes. It keeps one *change.Table per
// distinct table shape, so the sink's per-table state is reused. It is safe
// for concurrent use.
type Decoder struct {
	mu     sync.Mutex
	tables map[string]*change.Table
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{tables: map[string]*change.Table{}} }

// Decode parses one message. The error says why a message cannot be used;
// such a message belongs in the dead-letter topic.
func (d *Decoder) Decode(data []byte) (change.Change, Source, error) {
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return change.Change{}, Source{}, fmt.Errorf("decoding the message JSON: %w", err)
	}
	if w.Format == nil || *w.Format != FormatVersion {
		return change.Change{}, Source{}, fmt.Errorf("message format is not %d (member \"format\")", FormatVersion)
	}
	op, ok := change.ParseOp(w.Op)
	if !ok {
		return change.Change{}, Source{}, fmt.Errorf("unknown op %q", w.Op)
	}
	if w.DB == nil || w.Table == nil || *w.DB == "" || *w.Table == "" {
		return change.Change{}, Source{}, errors.New(`message lacks "db" or "table"`)
	}
	t, err := d.table(*w.DB, *w.Table, w.Columns, w.PK)
	if err != nil {
		return change.Change{}, Source{}, err
	}
	c := change.Change{Op: op, Table: t}
	if c.Version, err = change.ParseVersion(w.Version); err != nil {
		return change.Change{}, Source{}, err
	}
	if w.Source.Epoch != c.Version.Epoch {
		return change.Change{}, Source{}, fmt.Errorf("source.epoch %d differs from the version's %d", w.Source.Epoch, c.Version.Epoch)
	}
	if w.Before != nil {
		if c.Before, err = row(t, "before", w.Before); err != nil {
			return change.Change{}, Source{}, err
		}
	}
	if w.After != nil {
		if c.After, err = row(t, "after", w.After); err != nil {
			return change.Change{}, Source{}, err
		}
	}
	switch op {
	case change.Insert:
		if c.After == nil || c.Before != nil {
			return change.Change{}, Source{}, errors.New(`an insert has "after" and no "before"`)
		}
	case change.Update:
		if c.After == nil {
			return change.Change{}, Source{}, errors.New(`an update lacks "after"`)
		}
	case change.Delete:
		if c.Before == nil || c.After != nil {
			return change.Change{}, Source{}, errors.New(`a delete has "before" and no "after"`)
		}
	}
	keyRow := c.After
	if op == change.Delete {
		keyRow = c.Before
	}
	if len(w.PKValues) != len(t.PK) {
		return change.Change{}, Source{}, fmt.Errorf("pk_values has %d values, pk %d", len(w.PKValues), len(t.PK))
	}
	for i, p := range t.PK {
		if keyRow[p] == nil {
			return change.Change{}, Source{}, fmt.Errorf("primary-key column %q is null", t.Columns[p])
		}
		pv := w.PKValues[i]
		if pv.null || !bytes.Equal(pv.b, keyRow[p]) {
			return change.Change{}, Source{}, fmt.Errorf("pk_values[%d] differs from column %q of the row", i, t.Columns[p])
		}
	}
	if w.CommitTime != "" {
		if c.CommitTime, err = time.Parse(time.RFC3339Nano, w.CommitTime); err != nil {
			return change.Change{}, Source{}, fmt.Errorf("commit_time: %w", err)
		}
		c.CommitTime = c.CommitTime.UTC()
	}
	src := Source{File: w.Source.File, Pos: w.Source.Pos, GTIDSet: w.Source.GTIDSet, Server: w.Source.Server}
	return c, src, nil
}

func row(t *change.Table, name string, m map[string]wireValue) (change.Row, error) {
	if len(m) != len(t.Columns) {
		return nil, fmt.Errorf("%q has %d members, the table %d columns", name, len(m), len(t.Columns))
	}
	r := make(change.Row, len(t.Columns))
	for i, col := range t.Columns {
		v, ok := m[col]
		if !ok || !v.set {
			return nil, fmt.Errorf("%q lacks column %q", name, col)
		}
		if !v.null {
			r[i] = v.b
			if r[i] == nil {
				r[i] = []byte{}
			}
		}
	}
	return r, nil
}

// maxTables bounds the decoder's table cache (table shapes multiply with DDL).
const maxTables = 10000

func (d *Decoder) table(db, name string, cols, pk []string) (*change.Table, error) {
	if len(cols) == 0 {
		return nil, fmt.Errorf("%s.%s: message lists no columns", db, name)
	}
	if len(pk) == 0 {
		return nil, fmt.Errorf("%s.%s: message lists no primary-key column", db, name)
	}
	var sig strings.Builder
	sig.WriteString(db)
	sig.WriteByte(0)
	sig.WriteString(name)
	for _, c := range cols {
		sig.WriteByte(0)
		sig.WriteString(c)
	}
	sig.WriteByte(1)
	for _, c := range pk {
		sig.WriteByte(0)
		sig.WriteString(c)
	}
	key := sig.String()
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.tables[key]; t != nil {
		return t, nil
	}
	idx := make(map[string]int, len(cols))
	for i, c := range cols {
		if c == "" {
			return nil, fmt.Errorf("%s.%s: empty column name", db, name)
		}
		if _, dup := idx[c]; dup {
			return nil, fmt.Errorf("%s.%s: column %q listed twice", db, name, c)
		}
		idx[c] = i
	}
	t := &change.Table{DB: db, Name: name, Columns: append([]string(nil), cols...)}
	seen := map[int]bool{}
	for _, c := range pk {
		i, ok := idx[c]
		if !ok {
			return nil, fmt.Errorf("%s.%s: primary-key column %q is not among the columns", db, name, c)
		}
		if seen[i] {
			return nil, fmt.Errorf("%s.%s: primary-key column %q listed twice", db, name, c)
		}
		seen[i] = true
		t.PK = append(t.PK, i)
	}
	if len(d.tables) >= maxTables {
		clear(d.tables)
	}
	d.tables[key] = t
	return t, nil
}
