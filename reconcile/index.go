package reconcile

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/sink"
)

// pruneIndex removes KEYS[1] from the key-index set KEYS[2] when the key does not exist: an entry left by a key
// that expired or was deleted outside the pipeline. The check and the removal are one step, so a row the stream
// creates meanwhile keeps its entry.
var pruneIndex = redis.NewScript(`if redis.call('EXISTS', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], KEYS[1]) end
return 0`)

// countIndexed records, for a table with a key index, how many of a range's row keys exist in Redis, by slot.
func (tr *tableRun) countIndexed(c *chunk, d *digestResult) {
	if !tr.tb.opts.KeyIndex {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.slotKeys == nil {
		tr.slotKeys = make([]int64, sink.SlotCount)
	}
	for i, k := range c.keys {
		if d.hashes[i].exists {
			tr.slotKeys[sink.Slot(k)]++
		}
	}
}

// indexOrphans finds orphans through the sink's key index (sink.TableOptions.KeyIndex): in each slot whose index
// set holds more keys than the pass found rows with a key there, the set's members are looked up in MySQL and
// those without a row are settled and deleted like any orphan (fenced). The sets of the other slots are not read,
// so a pass without orphans reads one SCARD per slot. Members whose key no longer exists are pruned.
func (tr *tableRun) indexOrphans(ctx context.Context, cn *conn) error {
	tb := tr.tb
	pat, err := parsePattern(tr.r.cfg.Prefix, tb.opts.KeyTemplate, tb)
	if err != nil {
		tr.r.log.WarnContext(ctx, "the key index cannot be used: the key template cannot be parsed back into primary keys",
			slog.String("table", tb.name()), slog.String("error", err.Error()))
		return nil
	}
	idx := func(slot int) string { return sink.IndexKey(tr.r.cfg.Prefix, tb.t, slot) }
	pipe := tr.r.cfg.Redis.Pipeline()
	cards := make([]*redis.IntCmd, sink.SlotCount)
	for slot := range sink.SlotCount {
		cards[slot] = pipe.SCard(ctx, idx(slot))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("reading the key index of %s: %w", tb.name(), err)
	}
	tr.mu.Lock()
	var flagged []int
	for slot, c := range cards {
		var found int64
		if tr.slotKeys != nil {
			found = tr.slotKeys[slot]
		}
		if c.Val() > found {
			flagged = append(flagged, slot)
		}
	}
	tr.mu.Unlock()
	var members []string
	flush := func() error {
		keys := members
		members = nil
		if err := tr.checkOrphans(ctx, cn, pat, keys); err != nil {
			return err
		}
		if tr.dry {
			return nil
		}
		for _, k := range keys {
			if err := pruneIndex.Run(ctx, tr.r.cfg.Redis, []string{k, idx(sink.Slot(k))}).Err(); err != nil {
				return fmt.Errorf("pruning the key index of %s: %w", tb.name(), err)
			}
		}
		return nil
	}
	for _, slot := range flagged {
		it := tr.r.cfg.Redis.SScan(ctx, idx(slot), 0, "", 1000).Iterator()
		for it.Next(ctx) {
			members = append(members, it.Val())
			if len(members) >= fetchBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("reading the key index of %s: %w", tb.name(), err)
		}
	}
	if len(members) > 0 {
		return flush()
	}
	if len(flagged) > 0 {
		tr.r.log.DebugContext(ctx, "key index checked", slog.String("table", tb.name()), slog.Int("slots", len(flagged)))
	}
	return nil
}
