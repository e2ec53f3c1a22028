package source

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binlogsync/binlogsync/change"
)

// XA transactions (docs/architecture.md, "XA transactions").
//
// MySQL and MariaDB write an XA transaction's rows to the binlog when it is prepared (XA PREPARE), and its outcome
// later, in a group of its own: XA COMMIT or XA ROLLBACK. The rows of a prepared transaction are parked here, not
// handed out, until the outcome is read: XA COMMIT hands them out, XA ROLLBACK drops them. While any transaction is
// parked the boundaries handed out stay at the start of the oldest one, so a restart reads its rows again.
//
// Rows parked with prepare-time versions are safe to apply later: the server holds the transaction's row locks
// from prepare to commit, so no other transaction changes those rows in between.

// xaParkLimit bounds the rows held back for all prepared XA transactions together. A transaction that would pass
// it is handed out as it is read (as before its outcome is known); it is still tracked, so an XA ROLLBACK of it is
// logged as drift for the reconciler to repair.
const xaParkLimit = 100_000

// xaFlagPrepared is MariaDB's Gtid_log_event flag FL_PREPARED_XA: the group is an XA transaction ending in
// XA PREPARE.
const xaFlagPrepared = 64

// parkedXA is a prepared XA transaction whose outcome has not been read yet.
type parkedXA struct {
	xid     string
	changes []change.Change
	// early is set when the rows were handed out as read (xaParkLimit); changes is then empty.
	early bool
	// resume is the boundary before the transaction: a restart must read it again.
	resume change.Position
}

// xaState is the stream's XA bookkeeping.
type xaState struct {
	// open is set while the current transaction is an XA transaction (XA START, or MariaDB's flag).
	open bool
	// overflow is set once the open transaction passed xaParkLimit: its rows are handed out as read.
	overflow bool
	// changes are the open XA transaction's rows while it is not overflowing.
	changes []change.Change
	// parked are the prepared transactions in binlog order; parkedRows counts their rows.
	parked     []parkedXA
	parkedRows int
	// lastCommit is the newest transaction boundary read, whatever is parked.
	lastCommit change.Position
}

// xaBegin marks the current transaction as an XA transaction.
func (st *stream) xaBegin() {
	st.xa.open, st.xa.overflow = true, false
	st.xa.changes = st.xa.changes[:0]
}

// xaKeep takes a change of the open XA transaction. It returns false when the change goes to the pending batch
// as usual (the transaction overflowed).
func (st *stream) xaKeep(ctx context.Context, c change.Change) (bool, error) {
	if !st.xa.open || st.xa.overflow {
		return false, nil
	}
	if st.xa.parkedRows+len(st.xa.changes) < xaParkLimit {
		st.xa.changes = append(st.xa.changes, c)
		return true, nil
	}
	st.xa.overflow = true
	st.s.log.Warn("XA transactions hold more rows than are kept back until their outcome; this one's rows are "+
		"applied as read, and if it is rolled back they stay in Redis until the reconciler repairs them",
		slog.Int("limit", xaParkLimit), slog.String("file", st.file), slog.Uint64("pos", uint64(st.txStart)))
	held := st.xa.changes
	st.xa.changes = nil
	return false, st.handOut(ctx, held)
}

// handOut appends held changes to the pending batch, handing batches off at BatchRows or BatchBytes as rows()
// does (a batch must fit the transports' windows).
func (st *stream) handOut(ctx context.Context, changes []change.Change) error {
	for _, c := range changes {
		st.ensurePending()
		st.pending.Changes = append(st.pending.Changes, c)
		st.pending.Bytes += change.RowBytes(c.Before) + change.RowBytes(c.After)
		if len(st.pending.Changes) >= st.s.cfg.BatchRows || st.pending.Bytes >= st.s.cfg.BatchBytes {
			if err := st.flush(ctx, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// xaUnpark hands the open XA transaction's rows out and ends it (a one-phase commit).
func (st *stream) xaUnpark(ctx context.Context) error {
	held := st.xa.changes
	st.xa.open, st.xa.overflow, st.xa.changes = false, false, nil
	return st.handOut(ctx, held)
}

// xaPrepared handles an XA_PREPARE_LOG_EVENT: the end of the prepared transaction's group, or, with one_phase
// set (MySQL's XA COMMIT ... ONE PHASE), its commit.
func (st *stream) xaPrepared(ctx context.Context, data []byte, endPos uint32) error {
	xid, onePhase, err := decodeXAPrepare(data)
	if err != nil {
		return permanent(fmt.Errorf("decoding an XA PREPARE event at %s:%d: %w", st.file, st.pos, err))
	}
	st.s.cfg.Metrics.Event("xa_prepare")
	switch {
	case onePhase:
		if err := st.xaUnpark(ctx); err != nil {
			return err
		}
	case st.xa.open:
		p := parkedXA{xid: xid, changes: st.xa.changes, early: st.xa.overflow, resume: st.xa.lastCommit}
		st.xa.parked = append(st.xa.parked, p)
		st.xa.parkedRows += len(p.changes)
		st.xa.changes = nil
		st.s.cfg.Metrics.XAPrepared(len(st.xa.parked))
		st.s.log.Debug("XA transaction prepared; its rows wait for its XA COMMIT", slog.String("xid", xid),
			slog.Int("rows", len(p.changes)), slog.Bool("applied_as_read", p.early))
	}
	st.xa.open, st.xa.overflow = false, false
	st.setPos(endPos)
	return st.commit(ctx)
}

// xaOutcome handles XA COMMIT and XA ROLLBACK statements (q, trimmed).
func (st *stream) xaOutcome(ctx context.Context, q string, endPos uint32) error {
	commit, keyword := true, "XA COMMIT"
	if !hasPrefixFold(q, keyword) {
		commit, keyword = false, "XA ROLLBACK"
	}
	switch {
	case st.xa.open:
		// XA COMMIT ... ONE PHASE logged as a statement: the open transaction's own rows.
		if commit {
			if err := st.xaUnpark(ctx); err != nil {
				return err
			}
		}
	default:
		if !st.inTx {
			st.beginTx() // the outcome's own group: its position versions the rows it commits
		}
		xid, err := parseXID(strings.TrimSpace(q[len(keyword):]))
		if err != nil {
			return permanent(fmt.Errorf("reading the XID of %q at %s:%d (binlogsync cannot tell which prepared "+
				"transaction it ends; please report it): %w", truncate(q, 200), st.file, st.pos, err))
		}
		if err := st.xaResolve(ctx, xid, commit, q); err != nil {
			return err
		}
	}
	st.s.cfg.Metrics.Event("xa_outcome")
	st.xa.open, st.xa.overflow, st.xa.changes = false, false, nil
	st.setPos(endPos)
	return st.commit(ctx)
}

// xaResolve hands out (commit) or drops the parked rows of transaction xid.
func (st *stream) xaResolve(ctx context.Context, xid string, commit bool, q string) error {
	i := slices.IndexFunc(st.xa.parked, func(p parkedXA) bool { return p.xid == xid })
	if i < 0 {
		// Prepared before the position this stream started from. After a checkpoint or a reconnect its rows
		// went out when its outcome was read before; after a first start they were never read.
		log := st.s.log.Debug
		if st.fresh && commit {
			log = st.s.log.Warn
		}
		log("XA outcome of a transaction prepared before the start position: after a first start its rows were "+
			"not read (run `reconciler run`); after a restart from a checkpoint they were applied then",
			slog.String("xid", xid), slog.String("query", truncate(q, 200)))
		return nil
	}
	p := st.xa.parked[i]
	st.xa.parked = slices.Delete(st.xa.parked, i, i+1)
	st.xa.parkedRows -= len(p.changes)
	st.s.cfg.Metrics.XAPrepared(len(st.xa.parked))
	switch {
	case p.early && !commit:
		st.s.log.Warn("an XA transaction was rolled back after its rows were applied (it was too large to hold "+
			"back): they stay in Redis until the reconciler repairs them (run `reconciler run`)", slog.String("xid", xid))
	case commit:
		// Versioned at the commit, where the server committed them: a reconciler snapshot taken between prepare
		// and commit does not hold them, so its repairs must not fence them out. The row locks held from
		// prepare to commit mean no other transaction's change to these rows lies between the two.
		for j := range p.changes {
			c := &p.changes[j]
			c.Version.File, c.Version.Pos = st.txFile, st.txStart
			c.CommitTime = st.eventTime
		}
		return st.handOut(ctx, p.changes)
	}
	return nil
}

// boundaryNow is the boundary to hand out at the current position: the start of the oldest parked XA
// transaction while any is parked.
func (st *stream) boundaryNow(p change.Position) change.Position {
	st.xa.lastCommit = p
	for _, x := range st.xa.parked {
		if len(x.changes) > 0 || x.early { // one without rows (only excluded tables) has nothing to read again
			return x.resume
		}
	}
	return p
}

// decodeXAPrepare reads the XID of an XA_PREPARE_LOG_EVENT body (MySQL and MariaDB): one_phase (1 byte),
// formatID (4), gtrid_length (4), bqual_length (4), then gtrid and bqual.
func decodeXAPrepare(data []byte) (xid string, onePhase bool, err error) {
	if len(data) < 13 {
		return "", false, fmt.Errorf("event body of %d bytes is too short", len(data))
	}
	format := binary.LittleEndian.Uint32(data[1:])
	gl := binary.LittleEndian.Uint32(data[5:])
	bl := binary.LittleEndian.Uint32(data[9:])
	if gl > 64 || bl > 64 || uint64(13+gl+bl) > uint64(len(data)) {
		return "", false, fmt.Errorf("XID lengths %d and %d do not fit the event body of %d bytes", gl, bl, len(data))
	}
	return xidKey(format, data[13:13+gl], data[13+gl:13+gl+bl]), data[0] != 0, nil
}

// xidKey names an XID. The format id is the 4 bytes the server stores (a statement's larger or negative value
// wraps as it does there).
func xidKey(format uint32, gtrid, bqual []byte) string {
	return strconv.FormatUint(uint64(format), 10) + ":" + hex.EncodeToString(gtrid) + ":" + hex.EncodeToString(bqual)
}

// parseXID parses the XID of an XA COMMIT or XA ROLLBACK statement as the binlog writes it
// (X'6774726964',X”,1) or as a client may ('gtrid'[, 'bqual'[, formatID]]), followed by ONE PHASE or nothing.
func parseXID(s string) (string, error) {
	gtrid, s, err := xidLiteral(s)
	if err != nil {
		return "", err
	}
	var bqual []byte
	format := int64(1)
	if s, ok := strings.CutPrefix(strings.TrimSpace(s), ","); ok {
		if bqual, s, err = xidLiteral(strings.TrimSpace(s)); err != nil {
			return "", err
		}
		if s, ok := strings.CutPrefix(strings.TrimSpace(s), ","); ok {
			s = strings.TrimSpace(s)
			end := 0
			for end < len(s) && (s[end] >= '0' && s[end] <= '9' || end == 0 && s[end] == '-') {
				end++
			}
			if format, err = strconv.ParseInt(s[:end], 10, 64); err != nil {
				return "", fmt.Errorf("XID format id: %w", err)
			}
		}
	}
	return xidKey(uint32(format), gtrid, bqual), nil
}

// xidLiteral reads one string literal of an XID: X'hex', 0xhex or a quoted string; it returns the rest.
func xidLiteral(s string) ([]byte, string, error) {
	switch {
	case len(s) >= 2 && (s[0] == 'X' || s[0] == 'x') && s[1] == '\'':
		end := strings.IndexByte(s[2:], '\'')
		if end < 0 {
			return nil, "", fmt.Errorf("unterminated X'' literal in XID")
		}
		b, err := hex.DecodeString(s[2 : 2+end])
		if err != nil {
			return nil, "", fmt.Errorf("XID literal: %w", err)
		}
		return b, s[3+end:], nil
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		end := 2
		for end < len(s) && strings.IndexByte("0123456789abcdefABCDEF", s[end]) >= 0 {
			end++
		}
		b, err := hex.DecodeString(s[2:end])
		if err != nil {
			return nil, "", fmt.Errorf("XID literal: %w", err)
		}
		return b, s[end:], nil
	case len(s) >= 1 && (s[0] == '\'' || s[0] == '"'):
		q := s[0]
		var b []byte
		for i := 1; i < len(s); i++ {
			switch {
			case s[i] == '\\' && i+1 < len(s):
				i++
				b = append(b, s[i])
			case s[i] == q && i+1 < len(s) && s[i+1] == q:
				i++
				b = append(b, q)
			case s[i] == q:
				return b, s[i+1:], nil
			default:
				b = append(b, s[i])
			}
		}
		return nil, "", fmt.Errorf("unterminated string literal in XID")
	}
	return nil, "", fmt.Errorf("no XID literal at %q", truncate(s, 40))
}

// isXAPrepare reports whether ev is an XA_PREPARE_LOG_EVENT, which go-mysql hands over undecoded.
func isXAPrepare(ev *replication.BinlogEvent) ([]byte, bool) {
	g, ok := ev.Event.(*replication.GenericEvent)
	if !ok || ev.Header.EventType != replication.XA_PREPARE_LOG_EVENT {
		return nil, false
	}
	return g.Data, true
}
