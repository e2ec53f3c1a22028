package reconcile

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/source"
)

// MySQLConfig is how the reconciler opens its own connections: the text protocol of go-mysql's client, whose
// rows are the server's bytes (go-sql-driver converts numbers and reformats them).
type MySQLConfig struct {
	Addr     string
	User     string
	Password string
	TLS      *tls.Config // nil: no TLS
	// Timeout bounds dialing (default 10s).
	Timeout time.Duration
}

// conn is one reconciler connection: utf8mb4, time zone +00:00, REPEATABLE READ.
type conn struct {
	c     *client.Conn
	bytes *atomic.Int64 // bytes read from the server, shared by the reconciler's connections
}

// countingConn counts the bytes read through a net.Conn.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func dial(ctx context.Context, cfg MySQLConfig, counter *atomic.Int64) (*conn, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &net.Dialer{Timeout: timeout}
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: nc, n: counter}, nil
	}
	var opts []client.Option
	if cfg.TLS != nil {
		opts = append(opts, func(c *client.Conn) error { c.SetTLSConfig(cfg.TLS); return nil })
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := client.ConnectWithDialer(dctx, "tcp", cfg.Addr, cfg.User, cfg.Password, "", dialer, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to MySQL at %s as %s: %w", cfg.Addr, cfg.User, err)
	}
	cn := &conn{c: c, bytes: counter}
	for _, q := range []string{
		"SET NAMES utf8mb4",
		"SET time_zone = '+00:00'",
		// No PAD_CHAR_TO_FULL_LENGTH (CHAR prints without trailing spaces, as the binlog renderer does) and no
		// NO_BACKSLASH_ESCAPES or ANSI_QUOTES, which would change how literals and names are read.
		"SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
		"SET SESSION group_concat_max_len = 1073741824",
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
	} {
		if _, err := cn.query(ctx, q); err != nil {
			c.Close()
			return nil, fmt.Errorf("setting up the MySQL session (%s): %w", q, err)
		}
	}
	return cn, nil
}

func (cn *conn) close() { _ = cn.c.Close() }

// query runs q over the text protocol and returns its rows as the server sent them (nil = NULL). When ctx ends
// the connection is closed, which aborts the query.
func (cn *conn) query(ctx context.Context, q string) ([][][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The network connection itself: go-mysql's Close also resets the packet sequence, which the query's goroutine
	// may be writing.
	nc := cn.c.Conn.Conn
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	res, err := cn.c.Execute(q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("running %.300s: %w", q, err)
	}
	defer res.Close()
	if res.Resultset == nil {
		return nil, nil
	}
	n := len(res.Fields)
	rows := make([][][]byte, 0, len(res.RowDatas))
	for _, packet := range res.RowDatas {
		row := make([][]byte, n)
		p := []byte(packet)
		for j := range n {
			v, isNull, size, err := mysql.LengthEncodedString(p)
			if err != nil {
				return nil, fmt.Errorf("parsing a row of %.300s: %w", q, err)
			}
			p = p[size:]
			if !isNull {
				row[j] = append([]byte{}, v...) // the packet buffer is reused
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// snapshot is a consistent read view and where it sits in the binlog.
type snapshot struct {
	// version is the version repairs made from this view carry: {epoch, file, pos, 0} of a transaction boundary
	// at or before the view (change.Version documents why this is safe).
	version change.Version
	// pos is that boundary.
	pos change.Position
	// settle is a boundary at or after the view: once the stream has applied everything up to it, Redis holds
	// every change the view holds.
	settle change.Position
}

// begin opens a consistent snapshot on cn. MariaDB (and Percona Server) name the view's binlog position exactly:
// binlog_snapshot_file/position. Elsewhere (Oracle MySQL) the current position is read before and after START
// TRANSACTION WITH CONSISTENT SNAPSHOT: the first is a lower bound (the version), the second an upper bound (the
// settle position).
func (cn *conn) begin(ctx context.Context, sdb *sql.DB, flavor string, epoch uint16) (snapshot, error) {
	var before change.Position
	if flavor != "mariadb" {
		p, err := source.CurrentPosition(ctx, sdb, flavor)
		if err != nil {
			return snapshot{}, err
		}
		before = p
	}
	if _, err := cn.query(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		return snapshot{}, fmt.Errorf("starting a consistent snapshot: %w", err)
	}
	var s snapshot
	rows, err := cn.query(ctx, "SHOW STATUS LIKE 'binlog_snapshot_%'")
	if err != nil {
		return snapshot{}, fmt.Errorf("reading the snapshot's binlog position: %w", err)
	}
	for _, r := range rows {
		switch string(r[0]) {
		case "Binlog_snapshot_file":
			s.pos.File = string(r[1])
		case "Binlog_snapshot_position":
			p, err := strconv.ParseUint(string(r[1]), 10, 32)
			if err != nil {
				return snapshot{}, fmt.Errorf("reading the snapshot's binlog position: %q: %w", r[1], err)
			}
			s.pos.Pos = uint32(p)
		}
	}
	switch {
	case s.pos.File != "":
		s.pos.Flavor = flavor
		s.settle = s.pos
	case flavor == "mariadb":
		return snapshot{}, errors.New("reading the snapshot's binlog position: the server writes no binlog; " +
			"start it with log_bin")
	default:
		after, err := source.CurrentPosition(ctx, sdb, flavor)
		if err != nil {
			return snapshot{}, err
		}
		s.pos, s.settle = before, after
	}
	s.pos.Epoch, s.settle.Epoch = epoch, epoch
	v, err := positionVersion(s.pos)
	if err != nil {
		return snapshot{}, err
	}
	s.version = v
	return s, nil
}

// commit ends the snapshot.
func (cn *conn) commit(ctx context.Context) error {
	_, err := cn.query(ctx, "COMMIT")
	return err
}

// positionVersion is the version of a snapshot at boundary p: {Epoch, File(p), Pos(p), 0}.
func positionVersion(p change.Position) (change.Version, error) {
	seq, err := change.FileSeq(p.File)
	if err != nil {
		return change.Version{}, err
	}
	return change.Version{Epoch: p.Epoch, File: seq, Pos: p.Pos}, nil
}

// reached reports whether the stream position cur is at or past p (same binlog numbering).
func reached(cur, p change.Position) bool {
	a, err1 := change.FileSeq(cur.File)
	b, err2 := change.FileSeq(p.File)
	if err1 != nil || err2 != nil {
		return false
	}
	if cur.Epoch != p.Epoch {
		return cur.Epoch > p.Epoch
	}
	return a > b || (a == b && cur.Pos >= p.Pos)
}
