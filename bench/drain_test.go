package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/redis/go-redis/v9"

	"github.com/binlogsync/binlogsync/app"
	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/internal/testenv"
)

// drainResult is one drain of a backlog into an empty Redis.
type drainResult struct {
	rows    int
	total   time.Duration // process (or reader) start -> last row in Redis
	startup time.Duration // process start -> "streaming" logged
	cpu     float64       // CPU seconds of binlogsync (or the baseline)
	maxRSS  int64         // KiB, binlogsync subprocess only
	servers cpuTimes      // CPU seconds of MariaDB and Redis during the drain
	redisUs float64       // microseconds Redis spent in the write commands
	// batchRows is the mean number of rows per Apply (binlogsync binary only).
	batchRows float64
}

func (r drainResult) rowsPerSec() float64 { return float64(r.rows) / r.total.Seconds() }

// streamRowsPerSec excludes start-up (connecting, preflight checks).
func (r drainResult) streamRowsPerSec() float64 {
	return float64(r.rows) / (r.total - r.startup).Seconds()
}

func (r drainResult) String() string {
	s := fmt.Sprintf("%d rows in %.2fs = %.0f rows/s", r.rows, r.total.Seconds(), r.rowsPerSec())
	if r.startup > 0 {
		s += fmt.Sprintf(" (start-up %.0fms; %.0f rows/s after it)", float64(r.startup.Milliseconds()), r.streamRowsPerSec())
	}
	s += fmt.Sprintf("; CPU s: self %.2f, MariaDB %.2f, Redis %.2f (in write commands %.2f)",
		r.cpu, r.servers.maria, r.servers.redis, r.redisUs/1e6)
	if r.maxRSS > 0 {
		s += fmt.Sprintf("; peak RSS %.1f MiB; %.0f rows per applied batch", float64(r.maxRSS)/1024, r.batchRows)
	}
	return s
}

func (e *benv) writeUsec() float64 {
	var us float64
	for name, v := range e.commandStats() {
		if name == "evalsha" || name == "eval" || name == "hset" {
			us += v[1]
		}
	}
	return us
}

// proc is a running binlogsync binary.
type proc struct {
	b     *testing.B
	cmd   *exec.Cmd
	log   testenv.LogBuffer
	done  chan struct{}
	start time.Time
}

// startBinary runs the binlogsync binary from file:pos.
func (e *benv) startBinary(file string, pos uint32) *proc {
	e.b.Helper()
	p := &proc{b: e.b, done: make(chan struct{})}
	ckpt := filepath.Join(e.b.TempDir(), "checkpoint")
	p.cmd = exec.Command(binPath, "--start-file", file, "--start-pos", strconv.FormatUint(uint64(pos), 10))
	p.cmd.Env = append(os.Environ(), e.environ(ckpt)...)
	if os.Getenv("BENCH_GCTRACE") != "" { // diagnostics: the child's GC trace goes to its log
		p.cmd.Env = append(p.cmd.Env, "GODEBUG=gctrace=1")
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	p.start = time.Now()
	mustf(e.b, p.cmd.Start(), "starting binlogsync")
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	e.b.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// metrics reads the process's /metrics: name (with labels) -> value, summed
// over the label sets of one name.
func (p *proc) metrics() map[string]float64 {
	out := map[string]float64{}
	var addr string
	for _, line := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(line, `msg="http listening"`) {
			if i := strings.Index(line, "addr="); i >= 0 {
				addr = strings.Fields(line[i+5:])[0]
			}
		}
	}
	if addr == "" {
		return out
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		out[name] += v
	}
	return out
}

func (p *proc) why() string { return "binlogsync log:\n" + tail(p.log.String(), 4000) }

func (p *proc) streaming() bool { return strings.Contains(p.log.String(), "msg=streaming") }

// vmHWM is the process's peak resident set size so far (KiB), from
// /proc/<pid>/status. The rusage of a child is no good for this: its
// ru_maxrss keeps the high-water mark of the parent's address space it ran in
// before exec, so it reports the benchmark process's RSS when that is larger.
func (p *proc) vmHWM() int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// stop sends SIGTERM, waits for a clean exit and returns peak RSS (KiB, read
// just before the signal) and CPU seconds.
func (p *proc) stop() (int64, float64) {
	p.b.Helper()
	rss := p.vmHWM()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.b.Fatalf("binlogsync did not stop after SIGTERM: %s", p.why())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.b.Fatalf("binlogsync exited with %d: %s", code, p.why())
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return rss, 0
	}
	return rss, tvSec(ru.Utime) + tvSec(ru.Stime)
}

// drainBinary runs the binlogsync binary from file:pos into an empty Redis
// until it holds want keys, then stops it (SIGTERM) and reads its rusage.
// Its log is kept in outDir/<name>.binlogsync.log.
func (e *benv) drainBinary(name, file string, pos uint32, want int) drainResult {
	e.b.Helper()
	e.flushRedis()
	cpu0 := e.serverCPU()
	p := e.startBinary(file, pos)
	var streaming, end time.Time
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if streaming.IsZero() && p.streaming() {
			streaming = time.Now()
		}
		if n := e.dbsize(); n >= int64(want) {
			end = time.Now()
			break
		}
		select {
		case <-p.done:
			e.b.Fatalf("binlogsync exited before Redis held %d keys: %s", want, p.why())
		default:
		}
		if time.Now().After(deadline) {
			e.b.Fatalf("Redis holds %d keys, want %d: %s", e.dbsize(), want, p.why())
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := drainResult{rows: want, total: end.Sub(p.start), servers: e.serverCPU().sub(cpu0), redisUs: e.writeUsec()}
	if m := p.metrics(); m["binlogsync_batch_rows_count"] > 0 {
		r.batchRows = m["binlogsync_batch_rows_sum"] / m["binlogsync_batch_rows_count"]
	}
	if !streaming.IsZero() {
		r.startup = streaming.Sub(p.start)
	}
	r.maxRSS, r.cpu = p.stop()
	if err := os.WriteFile(filepath.Join(outDir, name+".binlogsync.log"), []byte(p.log.String()), 0o644); err != nil {
		e.b.Log(err)
	}
	return r
}

func tvSec(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return tvSec(ru.Utime) + tvSec(ru.Stime)
}

// drainProfiled runs app.Run in this process with a CPU profile written to
// outDir/<name>.cpu.pprof, from file:pos until Redis holds want keys.
func (e *benv) drainProfiled(name, file string, pos uint32, want int) drainResult {
	e.b.Helper()
	e.flushRedis()
	// BINLOGSYNC_* variables of this process tune both runs (the binary
	// inherits them too), e.g. BINLOGSYNC_SINK_ROWS_PER_CALL=500.
	var environ []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BINLOGSYNC_") {
			environ = append(environ, kv)
		}
	}
	environ = append(environ, e.environ(filepath.Join(e.b.TempDir(), "checkpoint"))...)
	cfg, err := config.Load("", environ)
	mustf(e.b, err, "loading the configuration")
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	profPath := filepath.Join(outDir, name+".cpu.pprof")
	f, err := os.Create(profPath)
	mustf(e.b, err, "creating the profile")
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cpu0, self0 := e.serverCPU(), selfCPU()
	start := time.Now()
	mustf(e.b, pprof.StartCPUProfile(f), "starting the CPU profile")
	profiling := true
	defer func() {
		if profiling {
			pprof.StopCPUProfile()
		}
	}()
	runErr := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		runErr <- app.Run(ctx, cfg, log, app.Options{Start: config.Start{File: file, Pos: pos}})
		close(stopped)
	}()
	heapDone := make(chan struct{})
	heapStop := make(chan struct{})
	var peakHeap uint64
	go func() { // heap at its peak: a heap profile whenever the in-use heap grew by a tenth
		defer close(heapDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-heapStop:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap+peakHeap/10 {
				peakHeap = ms.HeapInuse
				if hf, err := os.Create(filepath.Join(outDir, name+".heap.pprof")); err == nil {
					_ = pprof.Lookup("heap").WriteTo(hf, 0)
					hf.Close()
				}
			}
		}
	}()
	end := e.waitKeys(int64(want), 10*time.Minute, stopped, func() string {
		select {
		case err := <-runErr:
			return fmt.Sprint(err)
		default:
			return "still running"
		}
	})
	pprof.StopCPUProfile()
	profiling = false
	close(heapStop)
	<-heapDone
	e.b.Logf("peak in-use heap (sampled every 100ms): %.1f MiB; heap profile near it: %s",
		float64(peakHeap)/(1<<20), filepath.Join(outDir, name+".heap.pprof"))
	r := drainResult{rows: want, total: end.Sub(start), cpu: selfCPU() - self0, servers: e.serverCPU().sub(cpu0),
		redisUs: e.writeUsec()}
	cancel()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		e.b.Fatalf("app.Run: %v", err)
	}
	e.b.Logf("CPU profile: %s", profPath)
	return r
}

// drainBaseline is the yardstick of issue 2: a bare go-mysql BinlogSyncer
// reading from file:pos, feeding plain HSETs (no version, no script) to Redis,
// 1000 rows per pipeline, until want rows are written. Values go to Redis as
// go-mysql decodes them (go-redis formats numbers); NULLs are left out.
//
// With serial false, one goroutine turns events into HSETs while another
// sends the pipelines (up to 16 batches between them), so Redis never waits
// for the reader. With serial true, one goroutine does both: it sends each
// pipeline when it has 1000 rows and reads on once Redis has answered, the
// plainest reading of the "bare reader feeding one HSET pipeline"
// (go-mysql still parses the binlog in a goroutine of its own).
func (e *benv) drainBaseline(file string, pos uint32, want int, serial bool) drainResult {
	e.b.Helper()
	e.flushRedis()
	host, port, _ := strings.Cut(e.my.Addr(), ":")
	p, _ := strconv.Atoi(port)
	cpu0, self0 := e.serverCPU(), selfCPU()
	start := time.Now()
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: 4000000001, Flavor: mysql.MariaDBFlavor, Host: host, Port: uint16(p),
		User: "root", Password: e.my.RootPassword, Charset: "utf8mb4",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer syncer.Close()
	st, err := syncer.StartSync(mysql.Position{Name: file, Pos: pos})
	mustf(e.b, err, "starting the baseline binlog dump")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const batch = 1000
	type hset struct {
		key  string
		args []any
	}
	written := 0
	write := func(hs []hset) {
		pipe := e.rdb.Pipeline()
		for _, h := range hs {
			pipe.HSet(ctx, h.key, h.args...)
		}
		_, err := pipe.Exec(ctx)
		mustf(e.b, err, "baseline pipeline")
		written += len(hs)
	}
	// read turns events into batches of HSETs and hands each to emit.
	read := func(emit func([]hset)) error {
		names := map[uint64][]string{}
		cur := make([]hset, 0, batch)
		sent := 0
		for sent < want {
			ev, err := st.GetEvent(ctx)
			if err != nil {
				return err
			}
			switch ev := ev.Event.(type) {
			case *replication.TableMapEvent:
				if string(ev.Schema) == e.db {
					names[ev.TableID] = ev.ColumnNameString()
				}
			case *replication.RowsEvent:
				cols, ok := names[ev.TableID]
				if !ok || ev.Table == nil {
					continue
				}
				prefix := e.db + ":" + string(ev.Table.Table) + ":"
				for _, row := range ev.Rows {
					args := make([]any, 0, 2*len(row))
					for i, v := range row {
						if v != nil {
							args = append(args, cols[i], v)
						}
					}
					cur = append(cur, hset{key: prefix + fmt.Sprint(row[0]), args: args})
					sent++
					if len(cur) == batch {
						emit(cur)
						cur = make([]hset, 0, batch)
					}
				}
			}
		}
		if len(cur) > 0 {
			emit(cur)
		}
		return nil
	}
	if serial {
		if err := read(write); err != nil {
			e.b.Fatalf("baseline reader: %v", err)
		}
	} else {
		batches := make(chan []hset, 16)
		readErr := make(chan error, 1)
		go func() {
			defer close(batches)
			readErr <- read(func(hs []hset) { batches <- hs })
		}()
		for hs := range batches {
			write(hs)
		}
		if err := <-readErr; err != nil {
			e.b.Fatalf("baseline reader: %v", err)
		}
	}
	end := time.Now()
	if written != want {
		e.b.Fatalf("baseline wrote %d rows, want %d", written, want)
	}
	if n := e.dbsize(); n != int64(want) {
		e.b.Fatalf("baseline: Redis holds %d keys, want %d", n, want)
	}
	return drainResult{rows: want, total: end.Sub(start), cpu: selfCPU() - self0, servers: e.serverCPU().sub(cpu0),
		redisUs: e.writeUsec()}
}

// checkSample compares a few keys written by binlogsync against the baseline's
// field set, so a drain that wrote empty or partial hashes cannot pass.
func (e *benv) checkSample(keys []string, wantFields int) {
	e.b.Helper()
	for _, k := range keys {
		n, err := e.rdb.HLen(context.Background(), k).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			e.b.Fatal(err)
		}
		if n < int64(wantFields) {
			e.b.Fatalf("key %s has %d fields, want at least %d", k, n, wantFields)
		}
	}
}
