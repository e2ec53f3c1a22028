package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/sink"
)

// keyPattern is a table's key template with ${db} and ${table} filled in, split at the row placeholders.
type keyPattern struct {
	lits  []string // literal text before each placeholder, then the text after the last one
	names []string // placeholder names: "pk" or a primary-key column
}

// parsePattern splits prefix+template for tb.
func parsePattern(prefix, template string, tb *table) (*keyPattern, error) {
	if template == "" {
		template = sink.DefaultKeyTemplate
	}
	p := &keyPattern{}
	lit := prefix
	rest := template
	for rest != "" {
		i := strings.Index(rest, "${")
		if i < 0 {
			lit += rest
			break
		}
		lit += rest[:i]
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("key template %q: unterminated placeholder", template)
		}
		name := rest[i+2 : i+j]
		rest = rest[i+j+1:]
		switch name {
		case "db":
			lit += tb.t.DB
		case "table":
			lit += tb.t.Name
		default:
			p.lits = append(p.lits, lit)
			p.names = append(p.names, name)
			lit = ""
		}
	}
	p.lits = append(p.lits, lit)
	return p, nil
}

// glob is the SCAN MATCH pattern of the table's keys.
func (p *keyPattern) glob() string {
	esc := func(s string) string {
		var b strings.Builder
		for _, c := range s {
			if strings.ContainsRune(`*?[]\`, c) {
				b.WriteByte('\\')
			}
			b.WriteRune(c)
		}
		return b.String()
	}
	var b strings.Builder
	for i, l := range p.lits {
		b.WriteString(esc(l))
		if i < len(p.names) {
			b.WriteByte('*')
		}
	}
	return b.String()
}

// maxReadings bounds the readings parse gives of one key; a key with more is left alone.
const maxReadings = 64

// parse extracts the primary-key values of key: every reading of it. Values may hold the template's separators:
// the default ${pk} of a composite key joins them with ':' ("a:b:c" of two columns is (a, b:c) or (a:b, c)), and
// a template like "t:${a}:${b}" has the same ambiguity, so every place a separator can fall is tried; the row whose
// key this is is among the readings. ok is false when key does not have the pattern's shape, or has more than
// maxReadings readings.
func (p *keyPattern) parse(key string, tb *table) (readings [][][]byte, ok bool) {
	if !strings.HasPrefix(key, p.lits[0]) {
		return nil, false
	}
	if len(p.names) == 1 && len(tb.t.PK) == 1 && (p.names[0] == "pk" || p.names[0] == tb.t.Columns[tb.t.PK[0]]) {
		// One placeholder, one key column: one reading (the common case, on every key a SCAN finds).
		rest := key[len(p.lits[0]):]
		if !strings.HasSuffix(rest, p.lits[1]) {
			return nil, false
		}
		return [][][]byte{{[]byte(rest[:len(rest)-len(p.lits[1])])}}, true
	}
	cols := make([]int, len(p.names)) // the key column of each placeholder, -1 for ${pk}
	for i, name := range p.names {
		cols[i] = -1
		if name == "pk" {
			continue
		}
		for k, c := range tb.t.PK {
			if tb.t.Columns[c] == name {
				cols[i] = k
			}
		}
		if cols[i] < 0 {
			return nil, false
		}
	}
	pk := make([][]byte, len(tb.t.PK))
	overflow, steps := false, 0
	var walk func(i int, rest string)
	// set assigns v to key column k for the rest of the walk; false when the template gave it another value.
	set := func(k int, v string) (undo func(), ok bool) {
		if pk[k] != nil {
			return func() {}, string(pk[k]) == v
		}
		pk[k] = []byte(v)
		return func() { pk[k] = nil }, true
	}
	value := func(i int, v, rest string) {
		if cols[i] >= 0 {
			if undo, ok := set(cols[i], v); ok {
				walk(i+1, rest)
				undo()
			}
			return
		}
		splits, ok := splitPK(v, len(tb.t.PK))
		if !ok {
			overflow = true
			return
		}
		for _, parts := range splits {
			var undos []func()
			good := true
			for k, part := range parts {
				undo, ok := set(k, part)
				undos = append(undos, undo)
				if !ok {
					good = false
					break
				}
			}
			if good {
				walk(i+1, rest)
			}
			for _, undo := range slices.Backward(undos) {
				undo()
			}
		}
	}
	walk = func(i int, rest string) {
		if overflow {
			return
		}
		if steps++; steps > maxReadings*64 {
			overflow = true // a key made of separators: not worth the search
			return
		}
		if i == len(p.names) {
			if rest != "" || slices.ContainsFunc(pk, func(v []byte) bool { return v == nil }) {
				return
			}
			if len(readings) == maxReadings {
				overflow = true
				return
			}
			r := make([][]byte, len(pk))
			copy(r, pk)
			readings = append(readings, r)
			return
		}
		next := p.lits[i+1]
		if i == len(p.names)-1 {
			if strings.HasSuffix(rest, next) {
				value(i, rest[:len(rest)-len(next)], "")
			}
			return
		}
		if next == "" {
			return // two placeholders side by side: no way to tell where one ends
		}
		for j := 0; ; {
			k := strings.Index(rest[j:], next)
			if k < 0 {
				return
			}
			value(i, rest[:j+k], rest[j+k+len(next):])
			j += k + 1
		}
	}
	walk(0, key[len(p.lits[0]):])
	if overflow || len(readings) == 0 {
		return nil, false
	}
	return readings, true
}

// splitPK gives every way of cutting v at n-1 of its colons (none when it has fewer); ok is false when there are
// more than maxReadings.
func splitPK(v string, n int) ([][]string, bool) {
	var colons []int
	for i := range len(v) {
		if v[i] == ':' {
			colons = append(colons, i)
		}
	}
	if len(colons) < n-1 {
		return nil, true
	}
	var out [][]string
	cut := make([]int, 0, n-1)
	var walk func(from int) bool
	walk = func(from int) bool {
		if len(cut) == n-1 {
			if len(out) == maxReadings {
				return false
			}
			parts := make([]string, 0, n)
			start := 0
			for _, c := range cut {
				parts = append(parts, v[start:c])
				start = c + 1
			}
			out = append(out, append(parts, v[start:]))
			return true
		}
		for i := from; i <= len(colons)-(n-1-len(cut)); i++ {
			cut = append(cut, colons[i])
			ok := walk(i + 1)
			cut = cut[:len(cut)-1]
			if !ok {
				return false
			}
		}
		return true
	}
	if !walk(0) {
		return nil, false
	}
	return out, true
}

// scanOrphans SCANs the table's key pattern and removes the keys whose MySQL row does not exist, as drift of
// kind extra. It catches keys written outside the pipeline, which the range comparison cannot see.
func (tr *tableRun) scanOrphans(ctx context.Context, cn *conn) error {
	tb := tr.tb
	pat, err := parsePattern(tr.r.cfg.Prefix, tb.opts.KeyTemplate, tb)
	if err != nil {
		return err
	}
	match := pat.glob()
	var mu sync.Mutex // the SCAN callbacks of a cluster's masters run concurrently
	batch := make([]string, 0, fetchBatch)
	flush := func() error {
		keys := batch
		batch = make([]string, 0, fetchBatch)
		return tr.checkOrphans(ctx, cn, pat, keys)
	}
	scan := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, match, 1000).Iterator()
		for it.Next(ctx) {
			k := it.Val()
			if strings.HasPrefix(k, sink.TombstonePrefix) {
				continue
			}
			mu.Lock()
			batch = append(batch, k)
			var err error
			if len(batch) == fetchBatch {
				err = flush()
			}
			mu.Unlock()
			if err != nil {
				return err
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("scanning %s for keys of %s: %w", match, tb.name(), err)
		}
		return nil
	}
	switch rdb := tr.r.cfg.Redis.(type) {
	case *redis.ClusterClient:
		err = rdb.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, rdb)
	default:
		return fmt.Errorf("scanning for orphans: unsupported Redis client %T", rdb)
	}
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return flush()
}

// checkOrphans looks up the rows of scanned keys and settles the keys without a row as orphans.
func (tr *tableRun) checkOrphans(ctx context.Context, cn *conn, pat *keyPattern, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	tb := tr.tb
	tr.mu.Lock()
	tr.rep.OrphanScan += int64(len(keys))
	tr.mu.Unlock()
	var pks [][][]byte
	var cands []string
	spanLo, spanHi, inSpan := tr.probedSpan()
	for _, k := range keys {
		readings, ok := pat.parse(k, tb)
		if !ok {
			continue // not a key of this table's shape (or one of too many readings: left alone)
		}
		if inSpan && len(readings) == 1 {
			// Every integer of the span was compared with its row or probed for an orphan in this pass.
			pk := readings[0]
			v, err := strconv.ParseInt(string(pk[0]), 10, 64)
			if err == nil && v >= spanLo && v <= spanHi && string(strconv.AppendInt(nil, v, 10)) == string(pk[0]) {
				continue // (a key like "007" was not probed: "7" was)
			}
		}
		valid := 0
		for _, pk := range readings {
			ok := true
			for i, v := range pk {
				if _, err := tb.cols[tb.t.PK[i]].literal(v); err != nil {
					ok = false
				}
			}
			if ok {
				pks = append(pks, pk)
				valid++
			}
		}
		if valid == 0 {
			// No row of the table can have these values (a letter in an integer key): the key is not the
			// table's, or is an orphan nobody can attribute. Leave it.
			continue
		}
		// The key is an orphan when no reading's row has it as its key.
		cands = append(cands, k)
	}
	if len(cands) == 0 {
		return nil
	}
	snap, err := cn.begin(ctx, tr.r.cfg.DB, tr.r.cfg.Flavor, tr.epoch)
	if err != nil {
		return err
	}
	in, err := tb.in(pks)
	if err != nil {
		return err
	}
	rows, err := cn.query(ctx, "SELECT "+tb.pkSelect()+" FROM "+tb.quoted+" WHERE "+in)
	if err != nil {
		return fmt.Errorf("looking up rows of %s: %w", tb.name(), err)
	}
	if err := cn.commit(ctx); err != nil {
		return err
	}
	exists := make(map[string]bool, len(rows))
	for _, r := range rows {
		k, err := tb.key(tr.r.cfg.Sink, r)
		if err != nil {
			return err
		}
		exists[k] = true
	}
	it := &settleItem{snap: snap}
	for _, k := range cands {
		if !exists[k] {
			it.cands = append(it.cands, cand{key: k})
		}
	}
	return tr.settle(ctx, it)
}
