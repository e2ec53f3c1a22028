package reconcile

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/change"
)

// Hashing rows in the reconciler (Config.HashRows "reconciler", the default on a single Redis).
//
// A full pass must hash every row from its fields. In a Lua script that costs Redis at least about 4.5 µs a row
// (turning each field into a Lua string), 7 µs in practice, and Redis's single thread then bounds the pass. A
// pipelined HGETALL costs Redis about 1.8 µs a row, so a full pass reads the rows over connections of its own
// and hashes them in Go: the rows' bytes cross the network (the report's Redis bytes), in return Redis spends a
// quarter of the time. go-redis would decode every field into a string of its own (5 µs of reconciler CPU a
// row), so the replies are parsed here, straight from the read buffer.

// pullBatchBytes bounds the reply bytes one pipelined batch is sized for, and pullBatchKeys its keys. Two batches
// of a connection are in flight at a time (pull.run), so Redis buffers at most about twice that for it.
const (
	pullBatchBytes = 4 << 20
	pullBatchKeys  = 512
)

// rawConn is one RESP2 connection to a Redis server, outside go-redis's pool.
type rawConn struct {
	nc  net.Conn
	rd  *respBuf
	wr  *bufio.Writer
	out []byte
}

// dialRaw connects and authenticates the way go-redis does with o (its Dialer, so TLS and byte counting apply).
func dialRaw(ctx context.Context, o *redis.Options) (*rawConn, error) {
	dial := o.Dialer
	if dial == nil {
		dial = redis.NewDialer(o)
	}
	network := o.Network
	if network == "" {
		network = "tcp"
	}
	nc, err := dial(ctx, network, o.Addr)
	if err != nil {
		return nil, err
	}
	// 256 KiB reads: a full pass reads about 400 bytes a row.
	c := &rawConn{nc: nc, rd: &respBuf{src: nc, b: make([]byte, 256<<10)}, wr: bufio.NewWriterSize(nc, 64<<10)}
	user, pass := o.Username, o.Password
	switch {
	case o.CredentialsProviderContext != nil:
		if user, pass, err = o.CredentialsProviderContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
	case o.CredentialsProvider != nil:
		user, pass = o.CredentialsProvider()
	}
	var hello [][]string
	if pass != "" {
		if user != "" {
			hello = append(hello, []string{"AUTH", user, pass})
		} else {
			hello = append(hello, []string{"AUTH", pass})
		}
	}
	if o.DB != 0 {
		hello = append(hello, []string{"SELECT", strconv.Itoa(o.DB)})
	}
	if len(hello) > 0 {
		stop := c.watch(ctx, o)
		defer stop()
		for _, cmd := range hello {
			c.command(cmd...)
		}
		err := c.wr.Flush()
		for _, cmd := range hello {
			if err != nil {
				break
			}
			var typ byte
			var next int
			if typ, _, next, err = c.rd.header(0); err == nil {
				if typ != '+' {
					err = fmt.Errorf("%s: %s", cmd[0], c.rd.text(1, next-2))
				}
				c.rd.consume(next)
			}
		}
		if err != nil {
			nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// watch sets the connection's deadline from o's timeouts (at least 10 s: a batch's reply is large) and ends any
// blocked read or write when ctx ends; stop undoes the latter.
func (c *rawConn) watch(ctx context.Context, o *redis.Options) (stop func()) {
	d := max(o.ReadTimeout, 10*time.Second)
	dl := time.Now().Add(d)
	if t, ok := ctx.Deadline(); ok && t.Before(dl) {
		dl = t
	}
	_ = c.nc.SetDeadline(dl)
	s := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	return func() { s() }
}

// command appends one command to the write buffer.
func (c *rawConn) command(args ...string) {
	b := c.out[:0]
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	c.out = b
	_, _ = c.wr.Write(b) // a write error shows at Flush
}

// respBuf reads RESP2 replies straight from its buffer. Positions are offsets from r, the start of the reply
// being parsed, so they stay valid when the buffer is compacted or grown to read more of the reply.
type respBuf struct {
	src  io.Reader
	b    []byte
	r, w int
}

// ensure reads until at least n bytes from r are buffered.
func (rb *respBuf) ensure(n int) error {
	for rb.w-rb.r < n {
		if rb.r+n > len(rb.b) {
			if n > len(rb.b) {
				nb := make([]byte, max(n, 2*len(rb.b)))
				rb.w = copy(nb, rb.b[rb.r:rb.w])
				rb.b = nb
			} else {
				rb.w = copy(rb.b, rb.b[rb.r:rb.w])
			}
			rb.r = 0
		}
		m, err := rb.src.Read(rb.b[rb.w:])
		rb.w += m
		if err != nil && rb.w-rb.r < n {
			return err
		}
	}
	return nil
}

// text is the buffered bytes [from, to), valid until the next ensure.
func (rb *respBuf) text(from, to int) []byte { return rb.b[rb.r+from : rb.r+to : rb.r+to] }

// consume ends the reply being parsed at n.
func (rb *respBuf) consume(n int) { rb.r += n }

// header parses the reply line at off: its type byte, its number (for ':', '*' and '$') and where the next
// line starts.
func (rb *respBuf) header(off int) (typ byte, n, next int, err error) {
	from := off
	for {
		if i := bytes.IndexByte(rb.b[rb.r+from:rb.w], '\n'); i >= 0 {
			next = from + i + 1
			break
		}
		from = rb.w - rb.r
		if err := rb.ensure(from + 1); err != nil {
			return 0, 0, 0, err
		}
	}
	l := rb.text(off, next)
	if len(l) < 3 || l[len(l)-2] != '\r' {
		return 0, 0, 0, fmt.Errorf("malformed reply line %q", l)
	}
	l = l[:len(l)-2]
	typ = l[0]
	if typ == ':' || typ == '*' || typ == '$' {
		if n, err = parseNumber(l[1:]); err != nil {
			return 0, 0, 0, fmt.Errorf("malformed reply line %q", l)
		}
	}
	return typ, n, next, nil
}

// parseNumber parses a RESP integer.
func parseNumber(b []byte) (int, error) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, strconv.ErrSyntax
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, strconv.ErrSyntax
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// bulkAt parses the bulk string at off: its bytes are [span[0], span[1]), the next reply line starts at next.
func (rb *respBuf) bulkAt(off int) (span [2]int, next int, err error) {
	if start, end, next := bulkIn(rb.b[rb.r:rb.w], off); next > 0 {
		return [2]int{start, end}, next, nil
	}
	return rb.bulkSlow(off)
}

// bulkIn parses the bulk string at p of buf when buf holds it whole: its bytes are buf[start:end] and the next
// reply starts at next; next is 0 otherwise (not all buffered, or not a bulk string: bulkSlow tells which). A full
// pass parses 24 bulk strings a row, and the general path took two thirds of the parsing time.
func bulkIn(buf []byte, p int) (start, end, next int) {
	n, i := 0, p+1
	for i < len(buf) && buf[i]-'0' <= 9 && i-p < 10 {
		n = n*10 + int(buf[i]-'0')
		i++
	}
	// i > p+1: p is inside buf and a digit follows; end+1 < len(buf): every index below is inside buf too.
	if end = i + 2 + n; i == p+1 || end+1 >= len(buf) || buf[p] != '$' || buf[i] != '\r' || buf[i+1] != '\n' ||
		buf[end] != '\r' || buf[end+1] != '\n' {
		return 0, 0, 0
	}
	return i + 2, end, end + 2
}

// bulkSlow is bulkAt for a bulk string not buffered whole, or not a bulk string.
func (rb *respBuf) bulkSlow(off int) (span [2]int, next int, err error) {
	typ, n, next, err := rb.header(off)
	if err != nil {
		return span, 0, err
	}
	if typ != '$' || n < 0 {
		return span, 0, fmt.Errorf("want a bulk string, got %q", rb.text(off, next-2))
	}
	if err := rb.ensure(next + n + 2); err != nil {
		return span, 0, err
	}
	if end := rb.text(next+n, next+n+2); end[0] != '\r' || end[1] != '\n' {
		return span, 0, fmt.Errorf("malformed bulk string of %d bytes", n)
	}
	return [2]int{next, next + n}, next + n + 2, nil
}

// puller hashes rows read with pipelined HGETALLs over connections of its own.
type puller struct {
	opts *redis.Options
	pool chan *rawConn
	// sizes holds, per table ("db.table"), the mean reply bytes of its rows read so far (*atomic.Int64), which
	// sizes its batches. Per table: a table of large rows read after one of small rows must not get batches sized
	// for those (Redis would buffer their replies whole).
	sizes sync.Map
}

func newPuller(o *redis.Options) *puller {
	return &puller{opts: o, pool: make(chan *rawConn, 4)}
}

func (p *puller) get(ctx context.Context) (*rawConn, error) {
	select {
	case c := <-p.pool:
		return c, nil
	default:
		return dialRaw(ctx, p.opts)
	}
}

func (p *puller) put(c *rawConn) {
	select {
	case p.pool <- c:
	default:
		c.nc.Close()
	}
}

// close closes the idle connections (at the end of a pass).
func (p *puller) close() {
	for {
		select {
		case c := <-p.pool:
			c.nc.Close()
		default:
			return
		}
	}
}

// rowSig is the signature of the column list that prefixes cached row hashes (the script's sig).
func (tb *table) rowSig() string {
	tb.sigOnce.Do(func() {
		args := scriptArgs(tb, false, 0)[4:]
		names := make([]string, len(tb.cols))
		kinds := make([]string, len(tb.cols))
		for i := range tb.cols {
			names[i] = args[i].(string)
			kinds[i] = args[len(tb.cols)+i].(string)
		}
		sum := sha1.Sum([]byte(strings.Join(names, "\x00") + "|" + strings.Join(kinds, "")))
		tb.sig = hex.EncodeToString(sum[:])[:8]
		tb.fieldNames = names
		tb.fieldIndex = make(map[string]int, len(names))
		for i, n := range names {
			tb.fieldIndex[n] = i
		}
	})
	return tb.sig
}

// digest hashes the row keys and checks which probe keys exist, like the digest script in "f" mode, and caches
// the rows' hashes in "_h" where they are missing or stale.
func (p *puller) digest(ctx context.Context, rdb redis.UniversalClient, tb *table, rows, probes []string) (*digestResult, error) {
	pl := &pull{p: p, tb: tb, sig: tb.rowSig(), rows: rows, probes: probes, rowBytes: p.rowBytes(tb.name()),
		d: &digestResult{hashes: make([]keyHash, len(rows))}}
	for attempt, from := 0, -1; pl.lo < len(rows)+len(probes); attempt++ {
		if pl.lo > from { // progress since the last error: a fresh count of attempts
			attempt, from = 0, pl.lo
		}
		err := pl.run(ctx)
		if err == nil {
			break
		}
		var ne net.Error
		if ctx.Err() != nil || attempt == 2 || !(errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil, fmt.Errorf("reading rows of %s in Redis: %w", tb.name(), err)
		}
	}
	if len(pl.refresh) > 0 {
		if err := cacheHashes(ctx, rdb, pl.refresh); err != nil {
			return nil, fmt.Errorf("caching row hashes of %s in Redis: %w", tb.name(), err)
		}
	}
	return pl.d, nil
}

// rowBytes is the mean reply bytes of the rows of table name read so far, 0 before the first.
func (p *puller) rowBytes(name string) *atomic.Int64 {
	if v, ok := p.sizes.Load(name); ok {
		return v.(*atomic.Int64)
	}
	v, _ := p.sizes.LoadOrStore(name, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// pull is the reading of one range's keys: rows followed by probes, in pipelined batches.
type pull struct {
	p            *puller
	tb           *table
	sig          string
	rows, probes []string
	lo           int // keys before lo are done
	d            *digestResult
	refresh      []string      // key, version, cached hash triples
	rowBytes     *atomic.Int64 // the table's mean reply bytes of a row (puller.rowBytes)
	// scratch of recv
	spans [][2]int
	row   change.Row
	hbuf  []byte
}

// next is the end of the batch that starts at lo.
func (pl *pull) next(lo int) int {
	n := firstCallKeys // until a row was read: its size is unknown
	if rb := pl.rowBytes.Load(); rb > 0 {
		n = int(min(max(pullBatchBytes/rb, 1), pullBatchKeys))
	}
	return min(lo+n, len(pl.rows)+len(pl.probes))
}

// run reads the keys from pl.lo on over one connection. The next batch is sent before the replies of the
// current one are parsed, so Redis has the next commands at hand while the reconciler hashes rows.
func (pl *pull) run(ctx context.Context) (err error) {
	c, err := pl.p.get(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.nc.Close()
		} else {
			pl.p.put(c)
		}
	}()
	stop := c.watch(ctx, pl.p.opts)
	defer stop()
	total := len(pl.rows) + len(pl.probes)
	hi := pl.next(pl.lo)
	if err := pl.send(c, pl.lo, hi); err != nil {
		return err
	}
	for {
		hi2 := hi
		if hi < total {
			hi2 = pl.next(hi)
			if err := pl.send(c, hi, hi2); err != nil {
				return err
			}
		}
		if err := pl.recv(c.rd, hi); err != nil {
			return err
		}
		if hi == total {
			return nil
		}
		hi = hi2
	}
}

// send writes the commands of keys [lo, hi): HGETALL for rows, EXISTS for probes.
func (pl *pull) send(c *rawConn, lo, hi int) error {
	for i := lo; i < hi; i++ {
		if i < len(pl.rows) {
			c.command("HGETALL", pl.rows[i])
		} else {
			c.command("EXISTS", pl.probes[i-len(pl.rows)])
		}
	}
	return c.wr.Flush()
}

// recv parses the replies of keys [pl.lo, hi) and adds them to pl.d; pl.lo moves to hi once all are parsed.
func (pl *pull) recv(rb *respBuf, hi int) error {
	tb, rows, probes := pl.tb, pl.rows, pl.probes
	if pl.spans == nil {
		pl.spans, pl.row = make([][2]int, len(tb.cols)), make(change.Row, len(tb.cols))
	}
	var (
		spans, row = pl.spans, pl.row
		count      int64
		xor        uint64
		hits       []int
		refresh    []string
		nread      int64 // reply bytes of the rows that exist
		nrows      int64
	)
	for i := pl.lo; i < hi; i++ {
		typ, n, pos, err := rb.header(0)
		if err != nil {
			return err
		}
		if i >= len(rows) {
			if typ != ':' {
				return fmt.Errorf("EXISTS %s: %q", probes[i-len(rows)], rb.text(0, pos-2))
			}
			if n != 0 {
				hits = append(hits, i-len(rows))
			}
			rb.consume(pos)
			continue
		}
		switch {
		case typ == '-':
			msg := rb.text(1, pos-2)
			if !bytes.HasPrefix(msg, []byte("WRONGTYPE")) {
				return fmt.Errorf("HGETALL %s: %s", rows[i], msg)
			}
			pl.d.hashes[i] = keyHash{exists: true, bad: true}
			count++
			xor ^= badRowHash
			rb.consume(pos)
			continue
		case typ != '*':
			return fmt.Errorf("HGETALL %s: unexpected reply %q", rows[i], rb.text(0, pos-2))
		}
		if n <= 0 {
			pl.d.hashes[i] = keyHash{}
			rb.consume(pos)
			continue
		}
		for j := range spans {
			spans[j] = [2]int{-1, -1}
		}
		extra := false
		ver, cached := [2]int{-1, -1}, [2]int{-1, -1}
		guess := 0 // fields are usually stored in column order
		for f := 0; f < n/2; f++ {
			var name, val [2]int
			buf := rb.b[rb.r:rb.w] // (re-taken: the general path may move the buffer)
			if ns, ne, p := bulkIn(buf, pos); p > 0 {
				if vs, ve, p := bulkIn(buf, p); p > 0 {
					name, val, pos = [2]int{ns, ne}, [2]int{vs, ve}, p
				}
			}
			if name == val { // not both buffered whole
				if name, pos, err = rb.bulkAt(pos); err != nil {
					return err
				}
				if val, pos, err = rb.bulkAt(pos); err != nil {
					return err
				}
			}
			nb := rb.text(name[0], name[1])
			j, ok := guess, guess < len(tb.fieldNames) && string(nb) == tb.fieldNames[guess]
			if !ok && (len(nb) == 0 || nb[0] != '_') { // no column's field starts with '_' (loadTable)
				j, ok = tb.fieldIndex[string(nb)]
			}
			if ok {
				spans[j] = val
				guess = j + 1
				continue
			}
			switch string(nb) {
			case "_v":
				ver = val
			case "_h":
				cached = val
			default:
				extra = true
			}
		}
		if ver[0] < 0 {
			extra = true // as in the digest script: a row of the pipeline always has "_v"
		}
		nread += int64(pos)
		nrows++
		for j, s := range spans {
			row[j] = nil
			if s[0] >= 0 {
				row[j] = rb.text(s[0], s[1])
			}
		}
		var h uint64
		h, pl.hbuf = tb.rowHashBuf(pl.hbuf, row, extra)
		pl.d.hashes[i] = keyHash{exists: true, hash: h}
		count++
		xor ^= h
		var hx [24]byte
		var hb [8]byte
		copy(hx[:8], pl.sig)
		binary.BigEndian.PutUint64(hb[:], h)
		hex.Encode(hx[8:], hb[:])
		if ver[0] >= 0 && (cached[0] < 0 || !bytes.Equal(rb.text(cached[0], cached[1]), hx[:])) {
			refresh = append(refresh, rows[i], string(rb.text(ver[0], ver[1])), string(hx[:]))
		}
		rb.consume(pos)
	}
	if nrows > 0 {
		// Up at once, down slowly: a batch sized for small rows must not meet large ones.
		mean := nread / int64(nrows)
		if old := pl.rowBytes.Load(); old > mean {
			mean = (old*3 + mean) / 4
		}
		pl.rowBytes.Store(max(mean, 1))
	}
	pl.d.count += count
	pl.d.xor ^= xor
	pl.d.hits = append(pl.d.hits, hits...)
	pl.refresh = append(pl.refresh, refresh...)
	pl.lo = hi
	return nil
}

// cacheScript stores row hashes in "_h": KEYS are row keys, ARGV (version, "_h") pairs; a row whose "_v" is no
// longer the version read was rewritten by the stream since (which dropped "_h") and is left alone.
var cacheScript = redis.NewScript(`
for i = 1, #KEYS do
  if redis.pcall('HGET', KEYS[i], '_v') == ARGV[2 * i - 1] then
    redis.pcall('HSET', KEYS[i], '_h', ARGV[2 * i])
  end
end
return 0
`)

// cacheHashes runs cacheScript over key, version, hash triples, in calls of at most 200 keys.
func cacheHashes(ctx context.Context, rdb redis.UniversalClient, triples []string) error {
	const perCall = 200
	for attempt := 0; ; attempt++ {
		pipe := rdb.Pipeline()
		var cmds []*redis.Cmd
		for lo := 0; lo < len(triples); lo += 3 * perCall {
			hi := min(lo+3*perCall, len(triples))
			keys := make([]string, 0, (hi-lo)/3)
			args := make([]any, 0, 2*(hi-lo)/3)
			for i := lo; i < hi; i += 3 {
				keys = append(keys, triples[i])
				args = append(args, triples[i+1], triples[i+2])
			}
			cmds = append(cmds, cacheScript.EvalSha(ctx, pipe, keys, args...))
		}
		_, _ = pipe.Exec(ctx)
		noScript := false
		for _, cmd := range cmds {
			if err := cmd.Err(); redis.HasErrorPrefix(err, "NOSCRIPT") && attempt == 0 {
				noScript = true
			} else if err != nil {
				return err
			}
		}
		if !noScript {
			return nil
		}
		if err := cacheScript.Load(ctx, rdb).Err(); err != nil {
			return err
		}
	}
}
