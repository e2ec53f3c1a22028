package source

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
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

// xaParkLimit bounds the rows of one XA transaction held back until its outcome. A larger transaction is handed
// out as it is read (as before its outcome was known); an XA ROLLBACK of it is then logged as drift for the
// reconciler to repair.
const xaParkLimit = 100_000

// xaFlagPrepared is MariaDB's Gtid_log_event flag FL_PREPARED_XA: the group is an XA transaction ending in
// XA PREPARE.
const xaFlagPrepared = 64

// parkedXA is a prepared XA transaction whose outcome has not been read yet.
type parkedXA struct {
	xid     string
	changes []change.Change
	// resume is the boundary before the transaction: a restart must read it again.
	resume change.Position
}

// xaState is the stream's XA bookkeeping.
type xaState struct {
	// open is set while the current transaction is an XA transaction (XA START, or MariaDB's flag).
	open bool
	// overflow is set once the open transaction passed xaParkLimit rows: its rows are handed out as read.
	overflow bool
	// changes are the open XA transaction's rows while it is not overflowing.
	changes []change.Change
	// parked are the prepared transactions in binlog order.
	parked []parkedXA
	// early names prepared transactions whose rows were handed out at prepare (overflow).
	early map[string]bool
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
func (st *stream) xaKeep(c change.Change) bool {
	if !st.xa.open || st.xa.overflow {
		return false
	}
	if len(st.xa.changes) < xaParkLimit {
		st.xa.changes = append(st.xa.changes, c)
		return true
	}
	st.xa.overflow = true
	st.s.log.Warn("an XA transaction has more rows than are held back until its outcome; its rows are applied "+
		"as read, and if it is rolled back they stay in Redis until the reconciler repairs them",
		slog.Int("limit", xaParkLimit), slog.String("file", st.file), slog.Uint64("pos", uint64(st.txStart)))
	st.ensurePending()
	st.pending.Changes = append(st.pending.Changes, st.xa.changes...)
	st.xa.changes = nil
	return false
}

// xaUnpark hands the open XA transaction's rows to the pending batch and ends it.
func (st *stream) xaUnpark() {
	if len(st.xa.changes) > 0 {
		st.ensurePending()
		st.pending.Changes = append(st.pending.Changes, st.xa.changes...)
	}
	st.xa.open, st.xa.overflow, st.xa.changes = false, false, nil
}

// xaPrepared handles an XA_PREPARE_LOG_EVENT: the end of the prepared transaction's group.
func (st *stream) xaPrepared(ctx context.Context, data []byte, endPos uint32) error {
	xid, err := decodeXAPrepare(data)
	if err != nil {
		return permanent(fmt.Errorf("decoding an XA PREPARE event at %s:%d: %w", st.file, st.pos, err))
	}
	st.s.cfg.Metrics.Event("xa_prepare")
	if st.xa.overflow {
		if st.xa.early == nil {
			st.xa.early = map[string]bool{}
		}
		st.xa.early[xid] = true
	} else if st.xa.open {
		st.xa.parked = append(st.xa.parked, parkedXA{xid: xid, changes: st.xa.changes, resume: st.xa.lastCommit})
		st.xa.changes = nil
		st.s.cfg.Metrics.XAPrepared(len(st.xa.parked))
		st.s.log.Debug("XA transaction prepared; its rows wait for its XA COMMIT", slog.String("xid", xid),
			slog.Int("rows", len(st.xa.parked[len(st.xa.parked)-1].changes)))
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
		// XA COMMIT ... ONE PHASE: the open transaction's own rows.
		if commit {
			st.xaUnpark()
		}
	default:
		xid, err := parseXID(strings.TrimSpace(q[len(keyword):]))
		if err != nil {
			st.s.log.Warn("an XA statement whose transaction cannot be named; its rows, if any, are not applied "+
				"and the reconciler repairs them", slog.String("query", truncate(q, 200)), slog.String("error", err.Error()))
			break
		}
		st.xaResolve(xid, commit, q)
	}
	st.s.cfg.Metrics.Event("xa_outcome")
	st.xa.open, st.xa.overflow, st.xa.changes = false, false, nil
	st.setPos(endPos)
	return st.commit(ctx)
}

// xaResolve hands out (commit) or drops the parked rows of transaction xid.
func (st *stream) xaResolve(xid string, commit bool, q string) {
	for i, p := range st.xa.parked {
		if p.xid != xid {
			continue
		}
		if commit {
			for i := range p.changes {
				p.changes[i].CommitTime = st.eventTime // committed now; the version stays the prepare's
			}
			st.ensurePending()
			st.pending.Changes = append(st.pending.Changes, p.changes...)
		}
		st.xa.parked = append(st.xa.parked[:i], st.xa.parked[i+1:]...)
		st.s.cfg.Metrics.XAPrepared(len(st.xa.parked))
		return
	}
	switch {
	case st.xa.early[xid]:
		delete(st.xa.early, xid)
		if !commit {
			st.s.log.Warn("a large XA transaction was rolled back after its rows were applied: they stay in Redis "+
				"until the reconciler repairs them (run `reconciler run`)", slog.String("xid", xid))
		}
	case commit:
		st.s.log.Warn("XA COMMIT of a transaction prepared before the position binlogsync started from: its rows "+
			"were not read; run `reconciler run` to load them", slog.String("xid", xid),
			slog.String("query", truncate(q, 200)))
	}
}

// boundaryNow is the boundary to hand out at the current position: the start of the oldest parked XA
// transaction while any is parked.
func (st *stream) boundaryNow(p change.Position) change.Position {
	st.xa.lastCommit = p
	if len(st.xa.parked) > 0 {
		return st.xa.parked[0].resume
	}
	return p
}

// decodeXAPrepare reads the XID of an XA_PREPARE_LOG_EVENT body (MySQL and MariaDB): one_phase (1 byte),
// formatID (4), gtrid_length (4), bqual_length (4), then gtrid and bqual.
func decodeXAPrepare(data []byte) (string, error) {
	if len(data) < 13 {
		return "", fmt.Errorf("event body of %d bytes is too short", len(data))
	}
	format := int32(binary.LittleEndian.Uint32(data[1:]))
	gl := binary.LittleEndian.Uint32(data[5:])
	bl := binary.LittleEndian.Uint32(data[9:])
	if gl > 64 || bl > 64 || uint64(13+gl+bl) > uint64(len(data)) {
		return "", fmt.Errorf("XID lengths %d and %d do not fit the event body of %d bytes", gl, bl, len(data))
	}
	return xidKey(int64(format), data[13:13+gl], data[13+gl:13+gl+bl]), nil
}

func xidKey(format int64, gtrid, bqual []byte) string {
	return strconv.FormatInt(format, 10) + ":" + hex.EncodeToString(gtrid) + ":" + hex.EncodeToString(bqual)
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
			if format, err = strconv.ParseInt(s[:end], 10, 32); err != nil {
				return "", fmt.Errorf("XID format id: %w", err)
			}
		}
	}
	return xidKey(format, gtrid, bqual), nil
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
