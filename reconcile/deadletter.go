package reconcile

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
)

// maxDeadLetters bounds the dead-letter entries one pass resolves; the rest wait for the next pass.
const maxDeadLetters = 100_000

// DeadLetterReport is what a pass did with the sink's dead-letter stream (Config.DeadLetterStream).
type DeadLetterReport struct {
	Stream string `json:"stream"`
	// Entries is the entries read; Resolved those whose row now equals MySQL (repaired from MySQL, or already
	// equal, or owned by a newer stream change): they are removed from the stream. Repaired counts the rows
	// written or deleted to get there.
	Entries  int64 `json:"entries"`
	Resolved int64 `json:"resolved"`
	Repaired int64 `json:"repaired"`
	// Remaining entries stay in the stream: their table is not part of the pass or not supported, their key
	// cannot be built, or Redis still refuses the row (the reason is logged).
	Remaining int64 `json:"remaining"`
}

// deadLetter is one entry of the stream, as app.RedisDeadLetter writes it.
type deadLetter struct {
	id    string
	table string
	pk    map[string]any // column -> string, nil, or {"b64": ...}
}

// resolveDeadLetters reads the dead-letter stream and settles each entry's row against MySQL like a
// difference found by a range: the row is read at a snapshot, and once the stream has passed it the key is
// repaired with a fenced write (or deleted when the row is gone). Entries whose row then equals MySQL are
// removed from the stream. only, when not empty, limits the tables.
func (r *Reconciler) resolveDeadLetters(ctx context.Context, st *stateStore, epoch uint16, opts PassOptions, only map[string]bool) (*DeadLetterReport, error) {
	stream := r.cfg.DeadLetterStream
	rep := &DeadLetterReport{Stream: stream}
	byTable := map[string][]deadLetter{}
	start := "-"
	for rep.Entries < maxDeadLetters {
		msgs, err := r.cfg.Redis.XRangeN(ctx, stream, start, "+", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("reading the dead-letter stream %s: %w", stream, err)
		}
		for _, m := range msgs {
			rep.Entries++
			dl := deadLetter{id: m.ID}
			dl.table, _ = m.Values["table"].(string)
			pk, _ := m.Values["pk"].(string)
			if dl.table == "" || pk == "" || json.Unmarshal([]byte(pk), &dl.pk) != nil {
				r.log.WarnContext(ctx, "dead letter without a readable table and primary key; left in the stream",
					slog.String("stream", stream), slog.String("id", m.ID))
				rep.Remaining++
				continue
			}
			byTable[dl.table] = append(byTable[dl.table], dl)
		}
		if len(msgs) < 1000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	names := make([]string, 0, len(byTable))
	for n := range byTable {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		entries := byTable[name]
		db, tname, _ := cut(name)
		if (len(only) > 0 && !only[name]) || (r.cfg.Selected != nil && !r.cfg.Selected(db, tname)) {
			rep.Remaining += int64(len(entries))
			continue
		}
		resolved, repaired, err := r.resolveTable(ctx, st, epoch, opts, db, tname, entries)
		if err != nil {
			return rep, fmt.Errorf("resolving dead letters of %s: %w", name, err)
		}
		if len(resolved) > 0 && !(opts.DryRun || r.cfg.ReportOnly) {
			if err := r.cfg.Redis.XDel(ctx, stream, resolved...).Err(); err != nil {
				return rep, fmt.Errorf("removing resolved entries from %s: %w", stream, err)
			}
		}
		rep.Resolved += int64(len(resolved))
		rep.Repaired += repaired
		rep.Remaining += int64(len(entries) - len(resolved))
	}
	if rep.Entries > 0 {
		r.log.InfoContext(ctx, "dead letters", slog.String("stream", stream), slog.Int64("entries", rep.Entries),
			slog.Int64("resolved", rep.Resolved), slog.Int64("repaired", rep.Repaired), slog.Int64("remaining", rep.Remaining))
	}
	return rep, nil
}

// resolveTable settles the dead-lettered rows of one table and returns the ids of the entries resolved.
func (r *Reconciler) resolveTable(ctx context.Context, st *stateStore, epoch uint16, opts PassOptions, db, name string,
	entries []deadLetter,
) (resolved []string, repaired int64, err error) {
	tb, err := loadTable(ctx, r.cfg.DB, db, name, r.cfg.Table(db, name))
	if err != nil {
		r.log.WarnContext(ctx, "dead letters of a table that cannot be reconciled; left in the stream",
			slog.String("table", db+"."+name), slog.String("reason", err.Error()))
		return nil, 0, nil
	}
	if err := r.cfg.Sink.CheckTable(tb.t); err != nil {
		return nil, 0, fmt.Errorf("table %s: %w", tb.name(), err)
	}
	cn, err := dial(ctx, r.cfg.MySQL, &r.mysqlN)
	if err != nil {
		return nil, 0, err
	}
	defer cn.close()
	tr := &tableRun{r: r, tb: tb, st: st, opts: opts, epoch: epoch, rep: &TableReport{Table: tb.name()},
		found: map[string]int64{}, repaired: map[string]int64{}, dry: opts.DryRun || r.cfg.ReportOnly}

	// Entries by key: several entries may name the same row.
	var keys []string
	var pks [][][]byte
	ids := map[string][]string{}
	for _, e := range entries {
		pk, ok := tb.deadLetterPK(e.pk)
		var k string
		if ok {
			k, err = tb.key(r.cfg.Sink, pk)
			ok = err == nil && k != ""
		}
		if !ok {
			r.log.WarnContext(ctx, "dead letter whose key cannot be built; left in the stream",
				slog.String("table", tb.name()), slog.String("id", e.id))
			continue
		}
		if _, seen := ids[k]; !seen {
			keys = append(keys, k)
			pks = append(pks, pk)
		}
		ids[k] = append(ids[k], e.id)
	}
	for i := 0; i < len(keys); i += fetchBatch {
		bk, bpk := keys[i:min(i+fetchBatch, len(keys))], pks[i:min(i+fetchBatch, len(keys))]
		snap, err := cn.begin(ctx, r.cfg.DB, r.cfg.Flavor, epoch)
		if err != nil {
			return resolved, repaired, err
		}
		in, err := tb.in(bpk)
		if err != nil {
			return resolved, repaired, err
		}
		rows, err := cn.query(ctx, "SELECT "+tb.rowSelect()+" FROM "+tb.quoted+" WHERE "+in)
		if err != nil {
			return resolved, repaired, fmt.Errorf("reading rows of %s: %w", tb.name(), err)
		}
		if err := cn.commit(ctx); err != nil {
			return resolved, repaired, err
		}
		want := make(map[string]cand, len(rows))
		for _, vals := range rows {
			row, err := tb.render(vals)
			if err != nil {
				return resolved, repaired, err
			}
			k, err := tb.key(r.cfg.Sink, tb.pkOf(row))
			if err != nil {
				return resolved, repaired, err
			}
			want[k] = cand{key: k, want: row}
		}
		it := &settleItem{snap: snap}
		for _, k := range bk {
			c, ok := want[k]
			if !ok {
				c = cand{key: k} // no row: the key must not exist
			}
			it.cands = append(it.cands, c)
		}
		if err := tr.settle(ctx, it); err != nil {
			return resolved, repaired, err
		}
		// Decide each entry on what Redis holds now.
		got, err := r.redis.read(ctx, tb, bk)
		if err != nil {
			return resolved, repaired, err
		}
		ver := snap.version.String()
		for j, c := range it.cands {
			s := &got[j]
			var ok bool
			switch {
			case s.bad:
				ok = false // Redis still refuses the row
			case s.ver > ver || (!s.exists && s.tomb > ver):
				ok = true // a newer stream change owns the row
			case c.want == nil:
				ok = !s.exists
			case !s.exists:
				ok = tb.opts.TTL > 0 && !tb.opts.RestoreExpired && !opts.RestoreExpired // expired, not drift
			default:
				ok = tb.sameRow(c.want, s.fields)
			}
			if ok {
				resolved = append(resolved, ids[c.key]...)
			} else {
				r.log.WarnContext(ctx, "dead-lettered row still differs from MySQL; left in the stream",
					slog.String("table", tb.name()), slog.String("key", c.key), slog.Bool("wrong_type", s.bad))
			}
		}
	}
	rp := tr.rep
	repaired = rp.Missing.Repaired + rp.Stale.Repaired + rp.Extra.Repaired
	return resolved, repaired, nil
}

// deadLetterPK returns the primary-key values of a dead letter's "pk" object, in the table's key order.
func (tb *table) deadLetterPK(m map[string]any) ([][]byte, bool) {
	pk := make([][]byte, len(tb.t.PK))
	for i, c := range tb.t.PK {
		v, ok := m[tb.t.Columns[c]]
		if !ok {
			return nil, false
		}
		switch v := v.(type) {
		case string:
			pk[i] = []byte(v)
		case map[string]any:
			s, _ := v["b64"].(string)
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, false
			}
			pk[i] = b
		default:
			return nil, false // primary-key columns are never NULL
		}
	}
	return pk, true
}
