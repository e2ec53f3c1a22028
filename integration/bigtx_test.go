package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

const (
	bigTxRows = 1_000_000
	// bigTxMaxRSS bounds binlogsync's peak resident set (KiB) while it applies
	// one 1,000,000-row transaction. Measured 90-105 MiB; a process holding the
	// transaction's 1,000,000 change.Change values at once peaks at over 400 MiB.
	bigTxMaxRSS = 250 << 10
)

// checkAllScript scans a slice of the keyspace and counts the row keys whose
// fields are not what the phase wrote: name = <prefix><id>, g = id%1000 + add.
// KEYS[1] is the key pattern; ARGV: cursor, name prefix, add. Returns
// {next cursor, keys seen, bad keys, first bad key}.
const checkAllScript = `
local r = redis.call('SCAN', ARGV[1], 'MATCH', KEYS[1], 'COUNT', 20000)
local seen, bad, first = 0, 0, ''
for _, k in ipairs(r[2]) do
  seen = seen + 1
  local id = tonumber(string.match(k, ':(%d+)$'))
  local v = redis.call('HMGET', k, 'name', 'g', '_v')
  if id == nil or v[1] ~= ARGV[2] .. id or tonumber(v[2]) ~= id % 1000 + tonumber(ARGV[3]) or not v[3] then
    bad = bad + 1
    if first == '' then first = k end
  end
end
return {r[1], seen, bad, first}
`

// checkAllRows runs checkAllScript over the whole keyspace: how many row keys
// exist, how many hold other values than expected, and one of those.
func (e *env) checkAllRows(t *testing.T, table, namePrefix string, add int) (seen, bad int64, firstBad string) {
	t.Helper()
	ctx := context.Background()
	cursor := "0"
	for {
		res, err := e.rdb.Eval(ctx, checkAllScript, []string{e.db + ":" + table + ":*"}, cursor, namePrefix, add).Slice()
		if err != nil {
			t.Fatalf("checking the rows in Redis: %v", err)
		}
		seen += res[1].(int64)
		bad += res[2].(int64)
		if s := res[3].(string); s != "" && firstBad == "" {
			firstBad = s
		}
		if cursor = res[0].(string); cursor == "0" {
			return seen, bad, firstBad
		}
	}
}

// compareSample compares n distinct random rows of table (key id in [1, max], all present)
// between MySQL (exact text-protocol bytes) and Redis.
func (e *env) compareSample(t *testing.T, table string, max, n int) []string {
	t.Helper()
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	picked := map[int]bool{}
	ids := make([]string, 0, n)
	for len(ids) < n {
		if id := 1 + r.Intn(max); !picked[id] {
			picked[id] = true
			ids = append(ids, fmt.Sprint(id))
		}
	}
	cols, rows, err := testenv.SelectText(e.my.Addr(), "root", e.my.RootPassword, e.db,
		"SELECT * FROM `"+table+"` WHERE id IN ("+strings.Join(ids, ",")+")")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{}
	for _, row := range rows {
		m := map[string]string{}
		for i, v := range row {
			if v != nil {
				m[cols[i]] = string(v)
			}
		}
		want[e.db+":"+table+":"+m["id"]] = m
	}
	got := map[string]map[string]string{}
	ctx := context.Background()
	pipe := e.rdb.Pipeline()
	for k := range want {
		pipe.HGetAll(ctx, k)
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		t.Fatalf("reading the sample from Redis: %v", err)
	}
	for _, c := range cmds {
		h := c.(interface{ Val() map[string]string }).Val()
		if len(h) == 0 {
			continue
		}
		k := c.Args()[1].(string)
		m := map[string]string{}
		for f, v := range h {
			if !strings.HasPrefix(f, "_") {
				m[f] = v
			}
		}
		got[k] = m
	}
	if len(want) != n {
		t.Fatalf("MySQL returned %d of the %d sampled rows", len(want), n)
	}
	return diff(want, got, nil)
}

// waitAllRows waits until Redis holds exactly bigTxRows row keys, all with the
// phase's values, then compares a random sample with MySQL.
func (e *env) waitAllRows(t *testing.T, namePrefix string, add int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var seen, bad int64
	var first string
	for {
		seen, bad, first = e.checkAllRows(t, "t", namePrefix, add)
		if seen == bigTxRows && bad == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s Redis has %d row keys (want %d), %d with other values (e.g. %s)",
				timeout, seen, bigTxRows, bad, first)
		}
		time.Sleep(time.Second)
	}
	if d := e.compareSample(t, "t", bigTxRows, 2000); len(d) > 0 {
		if len(d) > 20 {
			d = d[:20]
		}
		t.Fatalf("a sample of Redis differs from MySQL:\n%s", strings.Join(d, "\n"))
	}
	if n, err := e.rdb.DBSize(context.Background()).Result(); err != nil || n != bigTxRows {
		t.Fatalf("DBSIZE = %d (%v), want exactly %d (no stray keys)", n, err, bigTxRows)
	}
}

// rowsApplied is binlogsync_rows_applied_total, 0 while no row was applied
// yet (a counter vector shows no series until its first label set).
func rowsApplied(t *testing.T, p *proc) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr(t) + "/metrics")
	if err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "binlogsync_rows_applied_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func TestIntegrationMillionRowTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("applies two 1,000,000-row transactions")
	}
	e := sharedEnv(t)
	e.extra["BINLOGSYNC_LOG_LEVEL"] = "info"
	e.exec("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, g INT NOT NULL)")

	phase := func(name, stmt, namePrefix string, add int) {
		p := e.start("--config", "../config.example.yaml")
		began := time.Now()
		e.exec(stmt)
		committed := time.Since(began)
		// The metric is cheap to poll; the full check below blocks Redis
		// for a moment each pass, so it runs once the rows are in.
		deadline := time.Now().Add(150 * time.Second)
		for rowsApplied(t, p) < bigTxRows && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		applied := time.Since(began)
		checkStart := time.Now()
		e.waitAllRows(t, namePrefix, add, 30*time.Second)
		t.Logf("%s: full check and sample comparison took %s", name, time.Since(checkStart).Round(time.Millisecond))
		if code := p.stop(t, 30*time.Second); code != 0 {
			t.Fatalf("%s: exit code %d after SIGTERM", name, code)
		}
		t.Logf("%s: committed in %s, %d rows applied after %s; binlogsync peak RSS %d MiB",
			name, committed.Round(time.Millisecond), bigTxRows, applied.Round(time.Millisecond), p.hwm>>10)
		if p.hwm <= 0 || p.hwm > bigTxMaxRSS {
			t.Errorf("%s: binlogsync peak RSS %d KiB, want (0, %d] (is the transaction buffered whole?)",
				name, p.hwm, bigTxMaxRSS)
		}
	}
	phase("INSERT", fmt.Sprintf("INSERT INTO t SELECT seq, CONCAT('n', seq), seq %% 1000 FROM seq_1_to_%d", bigTxRows), "n", 0)
	phase("UPDATE", "UPDATE t SET name = CONCAT('u', id), g = g + 1000", "u", 1000)
}

// bigRowsMaxRSS bounds binlogsync's peak resident set (KiB) while it applies one transaction of 300 rows of 1 MiB.
// Measured 357 MiB. Batches were bounded by rows only and go-mysql buffered 256 events: 766 MiB.
const bigRowsMaxRSS = 512 << 10

func TestIntegrationLargeRowsTransaction(t *testing.T) {
	e := sharedEnv(t)
	e.extra["BINLOGSYNC_LOG_LEVEL"] = "info"
	e.exec("CREATE TABLE big (id INT PRIMARY KEY, v LONGBLOB NOT NULL)")
	p := e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO big SELECT seq, REPEAT(CHAR(65 + seq % 26), 1048576) FROM seq_1_to_300")
	ctx := context.Background()
	waitFor(t, 120*time.Second, "300 rows of 1 MiB in Redis", func() bool {
		n := 0
		for id := 1; id <= 300; id++ {
			if l, _ := e.rdb.HStrLen(ctx, e.db+":big:"+strconv.Itoa(id), "v").Result(); l == 1<<20 {
				n++
			}
		}
		return n == 300
	})
	if v, _ := e.rdb.HGet(ctx, e.db+":big:27", "v").Result(); v != strings.Repeat("B", 1<<20) {
		t.Fatalf("row 27 holds %d bytes starting %.10q", len(v), v)
	}
	if code := p.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("binlogsync peak RSS %d MiB", p.hwm>>10)
	if p.hwm <= 0 || p.hwm > bigRowsMaxRSS {
		t.Errorf("binlogsync peak RSS %d KiB, want (0, %d] (is the transaction gathered in one batch?)", p.hwm, bigRowsMaxRSS)
	}
}
