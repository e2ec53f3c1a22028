package reconcile

import (
	"context"
	"fmt"
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

// parse extracts the primary-key values of key; ok is false when key does not have the pattern's shape.
func (p *keyPattern) parse(key string, tb *table) (pk [][]byte, ok bool) {
	pk = make([][]byte, len(tb.t.PK))
	if !strings.HasPrefix(key, p.lits[0]) {
		return nil, false
	}
	rest := key[len(p.lits[0]):]
	for i, name := range p.names {
		next := p.lits[i+1]
		var v string
		if i == len(p.names)-1 {
			if !strings.HasSuffix(rest, next) {
				return nil, false
			}
			v = rest[:len(rest)-len(next)]
		} else {
			j := strings.Index(rest, next)
			if j < 0 || next == "" {
				return nil, false
			}
			v, rest = rest[:j], rest[j+len(next):]
		}
		if name == "pk" {
			parts := strings.SplitN(v, ":", len(tb.t.PK))
			if len(parts) != len(tb.t.PK) {
				return nil, false
			}
			for k, s := range parts {
				pk[k] = []byte(s)
			}
			continue
		}
		found := false
		for k, c := range tb.t.PK {
			if tb.t.Columns[c] == name {
				pk[k], found = []byte(v), true
			}
		}
		if !found {
			return nil, false
		}
	}
	for _, v := range pk {
		if v == nil {
			return nil, false
		}
	}
	return pk, true
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
		pk, ok := pat.parse(k, tb)
		if !ok {
			continue // not a key of this table's shape
		}
		if inSpan {
			// Every integer of the span was compared with its row or probed for an orphan in this pass.
			v, err := strconv.ParseInt(string(pk[0]), 10, 64)
			if err == nil && v >= spanLo && v <= spanHi && string(strconv.AppendInt(nil, v, 10)) == string(pk[0]) {
				continue // (a key like "007" was not probed: "7" was)
			}
		}
		valid := true
		for i, v := range pk {
			if _, err := tb.cols[tb.t.PK[i]].literal(v); err != nil {
				valid = false
			}
		}
		if !valid {
			// No row of the table can have these values (a letter in an integer key): the key is not the
			// table's, or is an orphan nobody can attribute. Leave it.
			continue
		}
		pks = append(pks, pk)
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
