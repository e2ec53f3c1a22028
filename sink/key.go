package sink

import (
	"fmt"
	"strings"
	"sync"

	"github.com/binlogsync/binlogsync/change"
)

// DefaultKeyTemplate is the key template of a table that sets none.
const DefaultKeyTemplate = "${db}:${table}:${pk}"

type segKind uint8

const (
	segLit segKind = iota
	segDB
	segTable
	segPK  // all primary-key values joined with ':'
	segCol // one primary-key column
)

type segment struct {
	kind segKind
	lit  string
	col  int // index into Table.Columns, for segCol
}

// CheckKeyTemplate reports whether tmpl is a key template t's rows can use: it parses and it determines the whole
// primary key (the check Apply makes on a table's first change).
func CheckKeyTemplate(t *change.Table, tmpl string) error {
	_, err := parseTemplate(t, tmpl)
	return err
}

// parseTemplate checks tmpl against t and splits it into segments.
func parseTemplate(t *change.Table, tmpl string) ([]segment, error) {
	if tmpl == "" {
		tmpl = DefaultKeyTemplate
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: key template %q of table %s: %s", ErrConfig, tmpl, t.FullName(), fmt.Sprintf(format, args...))
	}
	if len(t.PK) == 0 {
		return nil, bad("the table has no primary key")
	}
	var segs []segment
	hasPK := false
	seen := make(map[int]bool)
	rest := tmpl
	for rest != "" {
		i := strings.Index(rest, "${")
		if i < 0 {
			segs = append(segs, segment{kind: segLit, lit: rest})
			break
		}
		if i > 0 {
			segs = append(segs, segment{kind: segLit, lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, bad("unterminated placeholder %q", rest[i:])
		}
		name := rest[i+2 : i+j]
		rest = rest[i+j+1:]
		switch name {
		case "db":
			segs = append(segs, segment{kind: segDB})
		case "table":
			segs = append(segs, segment{kind: segTable})
		case "pk":
			segs = append(segs, segment{kind: segPK})
			hasPK = true
		default:
			col := -1
			for c, n := range t.Columns {
				if n == name {
					col = c
					break
				}
			}
			if col < 0 {
				return nil, bad("unknown placeholder ${%s} (use ${db}, ${table}, ${pk} or a primary-key column)", name)
			}
			if !isPK(t, col) {
				return nil, bad("${%s} is not a primary-key column (only primary-key columns may appear in a key)", name)
			}
			segs = append(segs, segment{kind: segCol, col: col})
			seen[col] = true
		}
	}
	if !hasPK {
		for _, c := range t.PK {
			if !seen[c] {
				return nil, bad("it does not determine the whole primary key (use ${pk} or every primary-key column; ${%s} is missing)",
					t.Columns[c])
			}
		}
	}
	return segs, nil
}

func isPK(t *change.Table, col int) bool {
	for _, c := range t.PK {
		if c == col {
			return true
		}
	}
	return false
}

// renderKey renders the key of row.
func renderKey(prefix string, segs []segment, t *change.Table, row change.Row) (string, error) {
	if len(row) != len(t.Columns) {
		return "", fmt.Errorf("rendering key of %s: row has %d values, table has %d columns", t.FullName(), len(row), len(t.Columns))
	}
	for _, c := range t.PK {
		if row[c] == nil {
			return "", fmt.Errorf("rendering key of %s: primary-key column %s is NULL", t.FullName(), t.Columns[c])
		}
	}
	b := make([]byte, 0, 64)
	b = append(b, prefix...)
	for _, s := range segs {
		switch s.kind {
		case segLit:
			b = append(b, s.lit...)
		case segDB:
			b = append(b, t.DB...)
		case segTable:
			b = append(b, t.Name...)
		case segPK:
			for i, c := range t.PK {
				if i > 0 {
					b = append(b, ':')
				}
				b = append(b, row[c]...)
			}
		case segCol:
			b = append(b, row[s.col]...)
		}
	}
	if len(b) == 0 {
		return "", fmt.Errorf("rendering key of %s: the key is empty", t.FullName())
	}
	return string(b), nil
}

// SlotCount is the number of Redis Cluster hash slots.
const SlotCount = 16384

// Slot returns the Redis Cluster hash slot of key (CRC16/XMODEM of the key, or of its hash tag, modulo 16384),
// as the Redis Cluster specification defines it: the hash tag is the text between the first '{' and the first '}'
// after it, when that text is not empty.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) & (SlotCount - 1))
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[i]]
	}
	return crc
}

// slotTags holds, for every slot, the shortest string over [0-9A-Za-z] (first in enumeration order) that hashes
// to it. It is deterministic, so every process and version computes the same tombstone keys.
var slotTags = sync.OnceValue(func() *[SlotCount]string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var tags [SlotCount]string
	left := SlotCount
	buf := make([]byte, 0, 8)
	var walk func(n int)
	walk = func(n int) {
		if left == 0 {
			return
		}
		if n == 0 {
			s := int(crc16(string(buf)) & (SlotCount - 1))
			if tags[s] == "" {
				tags[s] = string(buf)
				left--
			}
			return
		}
		for i := 0; i < len(alphabet) && left > 0; i++ {
			buf = append(buf, alphabet[i])
			walk(n - 1)
			buf = buf[:len(buf)-1]
		}
	}
	for n := 1; left > 0; n++ {
		walk(n)
	}
	return &tags
})

// TombstonePrefix starts every tombstone key.
const TombstonePrefix = "__bls:tomb:"

// TombstoneKey returns the key of the tombstone of rowKey: TombstonePrefix + "{" + tag + "}:" + rowKey, where tag
// is a short string whose slot is rowKey's slot, so the tombstone always lives in the row's cluster slot.
func TombstoneKey(rowKey string) string {
	return tombstoneKey(rowKey, Slot(rowKey))
}

func tombstoneKey(rowKey string, slot int) string {
	return TombstonePrefix + "{" + slotTags()[slot] + "}:" + rowKey
}

// IndexPrefix starts every key-index key.
const IndexPrefix = "__bls:idx:"

// IndexKey returns the key of the set that indexes the row keys of table (prefix = Options.Prefix) that live in
// cluster slot slot: IndexPrefix + "{" + tag + "}:" + prefix + "db.table", with the tag of TombstoneKey, so that it
// shares the slot of its members. The sink adds a row key when it creates the row and removes it when it deletes
// the row; the reconciler reads the sets to find orphans (keys whose MySQL row is gone) without scanning the
// keyspace. Every slot has its own set, on one Redis as on a cluster.
func IndexKey(prefix string, table *change.Table, slot int) string {
	return IndexPrefix + "{" + slotTags()[slot] + "}:" + prefix + table.DB + "." + table.Name
}
