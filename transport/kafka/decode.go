package kafka

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/binlogsync/binlogsync/change"
)

// The decoder is a hand-written parser of the message format (docs/kafka.md):
// it reads any valid JSON of that shape (members in any order, white space,
// escapes, unknown members skipped) without reflection, and its values alias
// the message's bytes unless they had escapes or were base64. It is the
// sink's hot path: a row costs a few small allocations.

// Decoder turns messages back into changes. It keeps one *change.Table per
// distinct table shape, so the sink's per-table state is reused. It is safe
// for concurrent use.
type Decoder struct {
	mu     sync.Mutex
	tables map[string]*tableEntry
	// The last source strings and commit time seen: consecutive messages
	// mostly share them, so they are not allocated again.
	file, gtid, server string
	commitRaw          string
	commit             time.Time
}

type tableEntry struct {
	t   *change.Table
	idx map[string]int // column name -> index
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{tables: map[string]*tableEntry{}} }

// maxTables bounds the decoder's table cache (table shapes multiply with DDL).
const maxTables = 10000

// maxDepth bounds the nesting of unknown members' values.
const maxDepth = 256

// strictB64 is built once: Strict returns a new Encoding on every call.
var strictB64 = base64.StdEncoding.Strict()

// message is what the top-level pass collects besides the rows.
type message struct {
	format             int64
	haveFormat         bool
	op                 []byte
	db, table          []byte
	haveDB, haveTable  bool
	cols, pk           [][]byte
	haveCols, havePK   bool
	pkVals             [][]byte
	before, after      []byte // raw JSON of the rows, when read before the table was known
	version            []byte
	file, gtid, server []byte
	pos                uint32
	epoch              uint16
	commit             []byte
}

// Decode parses one message. The error says why a message cannot be used;
// such a message belongs in the dead-letter topic. The returned rows may
// alias data.
func (d *Decoder) Decode(data []byte) (change.Change, Source, error) {
	c, src, err := d.decode(data)
	if err != nil {
		return change.Change{}, Source{}, err
	}
	return c, src, nil
}

func (d *Decoder) decode(data []byte) (change.Change, Source, error) {
	var c change.Change
	var m message
	// Kept out of m: escape analysis would move them to the heap with it.
	var colsBuf [32][]byte
	var pkBuf, pkValsBuf [4][]byte
	cols, pk, pkVals := colsBuf[:0], pkBuf[:0], pkValsBuf[:0]
	s := scanner{data: data}
	var e *tableEntry
	var rows change.Row // backing of before and after
	// readRow reads a row image now that the table is known.
	readRow := func(sc *scanner, name string) (change.Row, error) {
		n := len(e.t.Columns)
		if len(rows) < n {
			k := 1
			if m.op != nil && string(m.op) == "update" {
				k = 2
			}
			rows = make(change.Row, k*n)
		}
		r := rows[:n:n]
		rows = rows[n:]
		return r, sc.row(e, r, name)
	}
	resolve := func() error {
		if e != nil || !m.haveDB || !m.haveTable || !m.haveCols || !m.havePK || len(m.db) == 0 || len(m.table) == 0 {
			return nil
		}
		var err error
		e, err = d.table(m.db, m.table, cols, pk)
		return err
	}

	s.ws()
	if err := s.open('{'); err != nil {
		return c, Source{}, err
	}
	seen := 0 // bit per known member, to refuse duplicates
	for first := true; ; first = false {
		name, ok, err := s.member(first)
		if err != nil {
			return c, Source{}, err
		}
		if !ok {
			break
		}
		bit := 0
		switch string(name) {
		case "format":
			bit = 1 << 0
			m.format, m.haveFormat, err = s.intOrNull(-1<<63, 1<<63-1)
		case "op":
			bit = 1 << 1
			m.op, _, err = s.strOrNull()
		case "db":
			bit = 1 << 2
			m.db, m.haveDB, err = s.strOrNull()
			if err == nil {
				err = resolve()
			}
		case "table":
			bit = 1 << 3
			m.table, m.haveTable, err = s.strOrNull()
			if err == nil {
				err = resolve()
			}
		case "columns":
			bit = 1 << 4
			cols, m.haveCols, err = s.strings(cols)
			if err == nil {
				err = resolve()
			}
		case "pk":
			bit = 1 << 5
			pk, m.havePK, err = s.strings(pk)
			if err == nil {
				err = resolve()
			}
		case "pk_values":
			bit = 1 << 6
			pkVals, _, err = s.values(pkVals)
		case "before", "after":
			bit = 1 << 7
			if name[0] == 'a' {
				bit = 1 << 8
			}
			row, raw := &c.Before, &m.before
			if name[0] == 'a' {
				row, raw = &c.After, &m.after
			}
			if e == nil { // the table comes later: read the row then
				*raw, _, err = s.rawOrNull()
			} else if present, nerr := s.notNull(); nerr != nil {
				err = nerr
			} else if present {
				*row, err = readRow(&s, string(name))
			}
		case "version":
			bit = 1 << 9
			m.version, _, err = s.strOrNull()
		case "source":
			bit = 1 << 10
			err = s.source(&m)
		case "commit_time":
			bit = 1 << 11
			m.commit, _, err = s.strOrNull()
		default:
			err = s.skip(0)
		}
		if err != nil {
			return c, Source{}, err
		}
		if seen&bit != 0 {
			return c, Source{}, fmt.Errorf("member %q appears twice", name)
		}
		seen |= bit
	}
	s.ws()
	if s.i != len(s.data) {
		return c, Source{}, s.errf("data after the message")
	}

	if !m.haveFormat || m.format != FormatVersion {
		return c, Source{}, fmt.Errorf("message format is not %d (member \"format\")", FormatVersion)
	}
	op, ok := change.ParseOp(string(m.op))
	if !ok {
		return c, Source{}, fmt.Errorf("unknown op %q", m.op)
	}
	c.Op = op
	if len(m.db) == 0 || len(m.table) == 0 {
		return c, Source{}, errors.New(`message lacks "db" or "table"`)
	}
	m.haveDB, m.haveTable, m.haveCols, m.havePK = true, true, true, true
	if err := resolve(); err != nil {
		return c, Source{}, err
	}
	c.Table = e.t
	var err error
	if c.Version, err = parseVersion(m.version); err != nil {
		return c, Source{}, err
	}
	if m.epoch != c.Version.Epoch {
		return c, Source{}, fmt.Errorf("source.epoch %d differs from the version's %d", m.epoch, c.Version.Epoch)
	}
	if m.before != nil {
		rs := scanner{data: m.before}
		if c.Before, err = readRow(&rs, "before"); err != nil {
			return c, Source{}, err
		}
	}
	if m.after != nil {
		rs := scanner{data: m.after}
		if c.After, err = readRow(&rs, "after"); err != nil {
			return c, Source{}, err
		}
	}
	switch op {
	case change.Insert:
		if c.After == nil || c.Before != nil {
			return c, Source{}, errors.New(`an insert has "after" and no "before"`)
		}
	case change.Update:
		if c.After == nil {
			return c, Source{}, errors.New(`an update lacks "after"`)
		}
	case change.Delete:
		if c.Before == nil || c.After != nil {
			return c, Source{}, errors.New(`a delete has "before" and no "after"`)
		}
	}
	keyRow := c.After
	if op == change.Delete {
		keyRow = c.Before
	}
	t := e.t
	if len(pkVals) != len(t.PK) {
		return c, Source{}, fmt.Errorf("pk_values has %d values, pk %d", len(pkVals), len(t.PK))
	}
	for i, p := range t.PK {
		if keyRow[p] == nil {
			return c, Source{}, fmt.Errorf("primary-key column %q is null", t.Columns[p])
		}
		if pv := pkVals[i]; pv == nil || !bytes.Equal(pv, keyRow[p]) {
			return c, Source{}, fmt.Errorf("pk_values[%d] differs from column %q of the row", i, t.Columns[p])
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(m.commit) > 0 {
		if string(m.commit) != d.commitRaw {
			ct, err := time.Parse(time.RFC3339Nano, string(m.commit))
			if err != nil {
				return c, Source{}, fmt.Errorf("commit_time: %w", err)
			}
			d.commitRaw, d.commit = string(m.commit), ct.UTC()
		}
		c.CommitTime = d.commit
	}
	src := Source{File: intern(&d.file, m.file), Pos: m.pos, GTIDSet: intern(&d.gtid, m.gtid), Server: intern(&d.server, m.server)}
	return c, src, nil
}

// intern returns b as a string, reusing *last when it is the same.
func intern(last *string, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if string(b) != *last {
		*last = string(b)
	}
	return *last
}

// parseVersion is change.ParseVersion without converting b to a string.
func parseVersion(b []byte) (change.Version, error) {
	if len(b) != change.VersionLen {
		return change.ParseVersion(string(b))
	}
	var raw [14]byte
	for i := range raw {
		hi, ok1 := unhex(b[2*i])
		lo, ok2 := unhex(b[2*i+1])
		if !ok1 || !ok2 {
			return change.ParseVersion(string(b)) // for its error
		}
		raw[i] = hi<<4 | lo
	}
	return change.Version{
		Epoch: binary.BigEndian.Uint16(raw[0:]),
		File:  binary.BigEndian.Uint32(raw[2:]),
		Pos:   binary.BigEndian.Uint32(raw[6:]),
		Seq:   binary.BigEndian.Uint32(raw[10:]),
	}, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// table returns the cached table of this shape, building it on first sight.
func (d *Decoder) table(db, name []byte, cols, pk [][]byte) (*tableEntry, error) {
	if len(cols) == 0 {
		return nil, fmt.Errorf("%s.%s: message lists no columns", string(db), string(name))
	}
	if len(pk) == 0 {
		return nil, fmt.Errorf("%s.%s: message lists no primary-key column", string(db), string(name))
	}
	// The cache key: every name, length-prefixed.
	var keyBuf [512]byte
	key := keyBuf[:0]
	add := func(b []byte) {
		key = binary.AppendUvarint(key, uint64(len(b)))
		key = append(key, b...)
	}
	add(db)
	add(name)
	key = binary.AppendUvarint(key, uint64(len(cols)))
	for _, c := range cols {
		add(c)
	}
	for _, c := range pk {
		add(c)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.tables[string(key)]; e != nil {
		return e, nil
	}
	idx := make(map[string]int, len(cols))
	t := &change.Table{DB: string(db), Name: string(name), Columns: make([]string, len(cols))}
	for i, c := range cols {
		if len(c) == 0 {
			return nil, fmt.Errorf("%s.%s: empty column name", string(db), string(name))
		}
		if c[0] == '_' {
			// Metadata fields (_v and the like) are never columns: the source refuses such a column at start.
			return nil, fmt.Errorf("%s.%s: column %q starts with '_', which is reserved for metadata fields; "+
				"binlogsync's source never publishes such a column", string(db), string(name), string(c))
		}
		if _, dup := idx[string(c)]; dup {
			return nil, fmt.Errorf("%s.%s: column %q listed twice", string(db), string(name), string(c))
		}
		t.Columns[i] = string(c)
		idx[t.Columns[i]] = i
	}
	seen := map[int]bool{}
	for _, c := range pk {
		i, ok := idx[string(c)]
		if !ok {
			return nil, fmt.Errorf("%s.%s: primary-key column %q is not among the columns", string(db), string(name), string(c))
		}
		if seen[i] {
			return nil, fmt.Errorf("%s.%s: primary-key column %q listed twice", string(db), string(name), string(c))
		}
		seen[i] = true
		t.PK = append(t.PK, i)
	}
	if len(d.tables) >= maxTables {
		clear(d.tables)
	}
	e := &tableEntry{t: t, idx: idx}
	d.tables[string(key)] = e
	return e, nil
}

// scanner reads JSON from data at i. Strings with escapes and base64 values
// are decoded into arena, allocated once per message.
type scanner struct {
	data  []byte
	i     int
	arena []byte
}

func (s *scanner) errf(format string, args ...any) error {
	return fmt.Errorf("decoding the message JSON: "+format+" at offset %d", append(args, s.i)...)
}

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

// open consumes c (and white space after it).
func (s *scanner) open(c byte) error {
	if s.peek() != c {
		return s.errf("expected %q", c)
	}
	s.i++
	s.ws()
	return nil
}

// member reads the next member name of an object and the ':' after it;
// ok is false at the closing '}'. The cursor is at a value.
func (s *scanner) member(first bool) (name []byte, ok bool, err error) {
	s.ws()
	if s.peek() == '}' {
		s.i++
		return nil, false, nil
	}
	if !first {
		if s.peek() != ',' {
			return nil, false, s.errf("expected ',' or '}'")
		}
		s.i++
		s.ws()
	}
	if name, err = s.str(); err != nil {
		return nil, false, err
	}
	s.ws()
	if s.peek() != ':' {
		return nil, false, s.errf("expected ':'")
	}
	s.i++
	s.ws()
	return name, true, nil
}

// element is member's counterpart for arrays: ok is false at the closing ']'.
func (s *scanner) element(first bool) (bool, error) {
	s.ws()
	if s.peek() == ']' {
		s.i++
		return false, nil
	}
	if !first {
		if s.peek() != ',' {
			return false, s.errf("expected ',' or ']'")
		}
		s.i++
		s.ws()
	}
	return true, nil
}

// plain marks the bytes a string holds as they are: not '"', '\', control
// characters or non-ASCII (which needs a UTF-8 check).
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string (valid UTF-8). The result aliases data unless the
// string has escapes; it is never nil.
func (s *scanner) str() ([]byte, error) {
	if s.peek() != '"' {
		return nil, s.errf("expected a string")
	}
	s.i++
	start := s.i
	ascii := true
	for {
		for s.i < len(s.data) && plain[s.data[s.i]] {
			s.i++
		}
		if s.i >= len(s.data) {
			return nil, s.errf("unterminated string")
		}
		switch c := s.data[s.i]; {
		case c == '"':
			b := s.data[start:s.i:s.i]
			s.i++
			if !ascii && !utf8.Valid(b) {
				return nil, errors.New("a string is not valid UTF-8")
			}
			return b, nil
		case c == '\\':
			return s.escaped(start)
		case c < 0x20:
			return nil, s.errf("control character in a string")
		default:
			ascii = false
			s.i++
		}
	}
}

// escaped finishes reading a string with escapes, decoding it into the arena.
func (s *scanner) escaped(start int) ([]byte, error) {
	if s.arena == nil {
		s.arena = make([]byte, 0, len(s.data)) // decoded text is never longer
	}
	off := len(s.arena)
	s.arena = append(s.arena, s.data[start:s.i]...)
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			s.i++
			b := s.arena[off:len(s.arena):len(s.arena)]
			if !utf8.Valid(b) {
				return nil, errors.New("a string is not valid UTF-8")
			}
			return b, nil
		case c < 0x20:
			return nil, s.errf("control character in a string")
		case c != '\\':
			s.arena = append(s.arena, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.data) {
			break
		}
		e := s.data[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			s.arena = append(s.arena, e)
		case 'b':
			s.arena = append(s.arena, '\b')
		case 'f':
			s.arena = append(s.arena, '\f')
		case 'n':
			s.arena = append(s.arena, '\n')
		case 'r':
			s.arena = append(s.arena, '\r')
		case 't':
			s.arena = append(s.arena, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, s.errf("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if s.i+1 < len(s.data) && s.data[s.i] == '\\' && s.data[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					if lo, ok := s.hex4(); ok {
						if r2 = utf16.DecodeRune(r, lo); r2 == utf8.RuneError {
							s.i = save // not a pair: the second escape stands alone
						}
					} else {
						return nil, s.errf("bad \\u escape")
					}
				}
				r = r2
			}
			s.arena = utf8.AppendRune(s.arena, r)
		default:
			return nil, s.errf("bad escape")
		}
	}
	return nil, s.errf("unterminated string")
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[s.i : s.i+4] {
		v, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	s.i += 4
	return r, true
}

// null consumes a null literal if there is one.
func (s *scanner) null() (bool, error) {
	if s.peek() != 'n' {
		return false, nil
	}
	if !bytes.HasPrefix(s.data[s.i:], []byte("null")) {
		return false, s.errf("invalid literal")
	}
	s.i += 4
	return true, nil
}

// notNull consumes a null (false) or reports that a value follows (true).
func (s *scanner) notNull() (bool, error) {
	isNull, err := s.null()
	return !isNull && err == nil, err
}

// strOrNull reads a string; null counts as absent.
func (s *scanner) strOrNull() ([]byte, bool, error) {
	if present, err := s.notNull(); !present {
		return nil, false, err
	}
	b, err := s.str()
	return b, err == nil, err
}

// intOrNull reads an integer in [lo, hi]; null counts as absent (0).
func (s *scanner) intOrNull(lo, hi int64) (int64, bool, error) {
	if present, err := s.notNull(); !present {
		return 0, false, err
	}
	start := s.i
	if err := s.number(); err != nil {
		return 0, false, err
	}
	v, err := strconv.ParseInt(string(s.data[start:s.i]), 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, false, fmt.Errorf("number %s is not an integer in [%d, %d]", s.data[start:s.i], lo, hi)
	}
	return v, true, nil
}

// strings reads an array of strings into dst; null counts as absent. It and values are kept as two copies of the
// same loop: one loop taking the element reader as a function value costs an allocation per message (measured with
// -bench Decode -benchmem).
func (s *scanner) strings(dst [][]byte) ([][]byte, bool, error) {
	if present, err := s.notNull(); !present {
		return dst, false, err
	}
	if err := s.open('['); err != nil {
		return dst, false, err
	}
	for first := true; ; first = false {
		ok, err := s.element(first)
		if err != nil || !ok {
			return dst, err == nil, err
		}
		b, err := s.str()
		if err != nil {
			return dst, false, err
		}
		dst = append(dst, b)
	}
}

// values reads an array of column values into dst; null counts as absent.
func (s *scanner) values(dst [][]byte) ([][]byte, bool, error) {
	if present, err := s.notNull(); !present {
		return dst, false, err
	}
	if err := s.open('['); err != nil {
		return dst, false, err
	}
	for first := true; ; first = false {
		ok, err := s.element(first)
		if err != nil || !ok {
			return dst, err == nil, err
		}
		v, err := s.value()
		if err != nil {
			return dst, false, err
		}
		dst = append(dst, v)
	}
}

// value reads a column value: null (nil), a string, or {"b64": "..."}. A
// non-null value is never nil.
func (s *scanner) value() ([]byte, error) {
	switch s.peek() {
	case 'n':
		_, err := s.null()
		return nil, err
	case '"':
		return s.str()
	case '{':
		s.i++
		var b []byte
		for first := true; ; first = false {
			name, ok, err := s.member(first)
			if err != nil {
				return nil, fmt.Errorf("binary value: %w", err)
			}
			if !ok {
				break
			}
			if string(name) != "b64" || b != nil {
				return nil, fmt.Errorf("binary value: unexpected member %q", name)
			}
			if s.peek() != '"' {
				return nil, errors.New(`binary value: "b64" is not a string`)
			}
			enc, err := s.str()
			if err != nil {
				return nil, err
			}
			if s.arena == nil {
				s.arena = make([]byte, 0, len(s.data))
			}
			off := len(s.arena)
			s.arena = append(s.arena, make([]byte, strictB64.DecodedLen(len(enc)))...)
			n, err := strictB64.Decode(s.arena[off:], enc)
			if err != nil {
				return nil, fmt.Errorf("binary value: %w", err)
			}
			s.arena = s.arena[:off+n]
			b = s.arena[off : off+n : off+n]
		}
		if b == nil {
			return nil, errors.New(`binary value without "b64"`)
		}
		return b, nil
	}
	return nil, fmt.Errorf("a value must be null, a string or {\"b64\": ...}, not %.20q", s.data[s.i:])
}

// row reads a row image object into r (len(r) = the table's columns).
func (s *scanner) row(e *tableEntry, r change.Row, name string) error {
	cols := e.t.Columns
	var seenBuf [64]bool
	var seen []bool
	if len(cols) <= len(seenBuf) {
		seen = seenBuf[:len(cols)]
	} else {
		seen = make([]bool, len(cols))
	}
	if err := s.open('{'); err != nil {
		return err
	}
	n := 0
	for first := true; ; first = false {
		col, ok, err := s.member(first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		j := n // members normally come in column order
		if j >= len(cols) || string(col) != cols[j] {
			if j, ok = e.idx[string(col)]; !ok {
				return fmt.Errorf("%q has member %q, not a column of the table", name, col)
			}
		}
		if seen[j] {
			return fmt.Errorf("%q has column %q twice", name, col)
		}
		if r[j], err = s.value(); err != nil {
			return err
		}
		seen[j] = true
		n++
	}
	if n != len(cols) {
		for j, ok := range seen {
			if !ok {
				return fmt.Errorf("%q lacks column %q", name, cols[j])
			}
		}
	}
	return nil
}

// source reads the "source" object into m; null counts as absent.
func (s *scanner) source(m *message) error {
	if present, err := s.notNull(); !present {
		return err
	}
	if err := s.open('{'); err != nil {
		return err
	}
	seen := 0
	for first := true; ; first = false {
		name, ok, err := s.member(first)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		bit := 0
		var v int64
		switch string(name) {
		case "file":
			bit = 1
			m.file, _, err = s.strOrNull()
		case "pos":
			bit = 2
			v, _, err = s.intOrNull(0, 1<<32-1)
			m.pos = uint32(v)
		case "gtid_set":
			bit = 4
			m.gtid, _, err = s.strOrNull()
		case "server":
			bit = 8
			m.server, _, err = s.strOrNull()
		case "epoch":
			bit = 16
			v, _, err = s.intOrNull(0, 1<<16-1)
			m.epoch = uint16(v)
		default:
			err = s.skip(0)
		}
		if err != nil {
			return fmt.Errorf("source.%s: %w", name, err)
		}
		if seen&bit != 0 {
			return fmt.Errorf("member source.%s appears twice", name)
		}
		seen |= bit
	}
}

// rawOrNull skips a value and returns its bytes; null counts as absent.
func (s *scanner) rawOrNull() ([]byte, bool, error) {
	if present, err := s.notNull(); !present {
		return nil, false, err
	}
	start := s.i
	if err := s.skip(0); err != nil {
		return nil, false, err
	}
	return s.data[start:s.i:s.i], true, nil
}

// number consumes a JSON number.
func (s *scanner) number() error {
	start := s.i
	digits := func() int {
		n := 0
		for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.peek() == '-' {
		s.i++
	}
	if s.peek() == '0' {
		s.i++
	} else if digits() == 0 {
		s.i = start
		return s.errf("invalid number")
	}
	if s.peek() == '.' {
		s.i++
		if digits() == 0 {
			return s.errf("invalid number")
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if digits() == 0 {
			return s.errf("invalid number")
		}
	}
	return nil
}

// skip consumes any JSON value.
func (s *scanner) skip(depth int) error {
	if depth > maxDepth {
		return s.errf("nesting too deep")
	}
	switch c := s.peek(); {
	case c == '"':
		_, err := s.str()
		return err
	case c == '{':
		s.i++
		for first := true; ; first = false {
			_, ok, err := s.member(first)
			if err != nil || !ok {
				return err
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
		}
	case c == '[':
		s.i++
		for first := true; ; first = false {
			ok, err := s.element(first)
			if err != nil || !ok {
				return err
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	for _, lit := range []string{"null", "true", "false"} {
		if bytes.HasPrefix(s.data[s.i:], []byte(lit)) {
			s.i += len(lit)
			return nil
		}
	}
	return s.errf("invalid value")
}
