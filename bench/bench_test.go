package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const narrowDDL = `CREATE TABLE narrow (
  id BIGINT PRIMARY KEY, name VARCHAR(40), qty INT, price DECIMAL(10,2), updated DATETIME)`

// narrowSelect renders rows seq_<lo>_to_<hi> of the narrow table.
func narrowSelect(lo, hi int) string {
	return fmt.Sprintf(`SELECT seq, CONCAT('user-', seq), seq %% 1000, (seq %% 100000) / 100,
  '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_%d_to_%d`, lo, hi)
}

// wideDDL has a column of every type SPEC section 2 names.
const wideDDL = `CREATE TABLE wide (
  id INT UNSIGNED PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, bi BIGINT, biu BIGINT UNSIGNED,
  dc DECIMAL(20,6), f FLOAT, d DOUBLE,
  dt DATE, dtm DATETIME(6), tsp TIMESTAMP(3) NULL DEFAULT NULL, tm TIME, yr YEAR,
  ch CHAR(10), vc VARCHAR(100) CHARACTER SET utf8mb4, tx TEXT,
  bn BINARY(8), vb VARBINARY(32), bl BLOB,
  en ENUM('red','green','blue'), st SET('a','b','c','d'), bt BIT(12), js JSON)`

// wideColumns is the number of columns of wideDDL; one (tsp) is NULL in a
// tenth of the rows.
const wideColumns = 28

func wideSelect(lo, hi int) string {
	return fmt.Sprintf(`SELECT seq, seq %% 128 - 64, seq %% 256, seq %% 32768 - 16384, seq %% 65536,
  seq %% 8000000 - 4000000, seq %% 16000000, seq - 50000, seq * 1000003 - 7, seq * 1000000007,
  seq * 1.234567, seq / 7, seq / 3,
  '2020-01-01' + INTERVAL (seq %% 3000) DAY, TIMESTAMP'2020-01-01 00:00:00.123456' + INTERVAL seq SECOND,
  IF(seq %% 10 = 0, NULL, FROM_UNIXTIME(1600000000 + seq + 0.125)), SEC_TO_TIME(seq %% 86400), 1990 + seq %% 50,
  CONCAT('c', seq %% 1000), CONCAT('héllo wörld ✓ €', seq), REPEAT(CONCAT('lorem ipsum ', seq, ' '), 12),
  UNHEX(LPAD(HEX(seq), 16, '0')), UNHEX(MD5(seq)), REPEAT(UNHEX(MD5(seq)), 8),
  ELT(1 + seq %% 3, 'red', 'green', 'blue'), ELT(1 + seq %% 4, 'a', 'a,b', 'b,c,d', ''), seq %% 4096,
  JSON_OBJECT('id', seq, 'name', CONCAT('n', seq), 'tags', JSON_ARRAY('x', 'y'), 'v', seq / 10)
  FROM (SELECT CAST(seq AS SIGNED) AS seq FROM seq_%d_to_%d) s`, lo, hi)
}

// loadChunks inserts rows 1..n of table in transactions of chunk rows and
// returns the binlog position before the first.
func (e *benv) loadChunks(table, ddl string, sel func(lo, hi int) string, n, chunk int) (string, uint32) {
	e.b.Helper()
	e.exec(ddl)
	file, pos := e.position()
	start := time.Now()
	for lo := 1; lo <= n; lo += chunk {
		e.exec("INSERT INTO " + table + " " + sel(lo, min(lo+chunk-1, n)))
	}
	e.b.Logf("loaded %d rows into %s in %d-row transactions in %.1fs", n, table, chunk, time.Since(start).Seconds())
	return file, pos
}

// loadOneRowTx inserts rows 1..n of the narrow table, one row per
// transaction (autocommit statements sent 500 per round trip).
func (e *benv) loadOneRowTx(n int) (string, uint32) {
	e.b.Helper()
	e.exec(narrowDDL)
	file, pos := e.position()
	start := time.Now()
	var sb strings.Builder
	for lo := 1; lo <= n; lo += 500 {
		sb.Reset()
		for id := lo; id <= min(lo+499, n); id++ {
			fmt.Fprintf(&sb, "INSERT INTO narrow VALUES (%d, 'user-%d', %d, %d.%02d, '2024-01-01 00:00:00' + INTERVAL %d SECOND);",
				id, id, id%1000, id%100000/100, id%100, id)
		}
		e.exec(sb.String())
	}
	e.b.Logf("loaded %d rows one per transaction in %.1fs", n, time.Since(start).Seconds())
	return file, pos
}

// drainAll drains the backlog at file:pos with the baseline, the binlogsync
// binary and binlogsync in process under the CPU profiler, and reports.
func (e *benv) drainAll(name, table, file string, pos uint32, rows, fields int) {
	b := e.b
	b.ResetTimer()
	var base, serial, bin, prof drainResult
	load := load1()
	for range b.N {
		base = e.drainBaseline(file, pos, rows, false)
		b.Logf("baseline (go-mysql + one HSET pipeline): %s", base)
		serial = e.drainBaseline(file, pos, rows, true)
		b.Logf("serial baseline (go-mysql + one HSET pipeline, one goroutine): %s", serial)
		bin = e.drainBinary(name, file, pos, rows)
		e.checkSample([]string{e.db + ":" + table + ":1", fmt.Sprintf("%s:%s:%d", e.db, table, rows)}, fields)
		b.Logf("binlogsync (binary): %s", bin)
		prof = e.drainProfiled(name, file, pos, rows)
		b.Logf("binlogsync (in process, CPU profile on): %s", prof)
	}
	b.StopTimer()
	b.ReportMetric(bin.rowsPerSec(), "rows/s")
	b.ReportMetric(bin.streamRowsPerSec(), "stream-rows/s")
	b.ReportMetric(base.rowsPerSec(), "baseline-rows/s")
	b.ReportMetric(bin.rowsPerSec()/base.rowsPerSec(), "x-baseline")
	b.ReportMetric(serial.rowsPerSec(), "serial-baseline-rows/s")
	b.ReportMetric(bin.rowsPerSec()/serial.rowsPerSec(), "x-serial-baseline")
	b.ReportMetric(prof.rowsPerSec(), "profiled-rows/s")
	b.ReportMetric(float64(bin.startup.Milliseconds()), "startup-ms")
	b.ReportMetric(float64(bin.maxRSS)/1024, "peak-RSS-MiB")
	b.ReportMetric(bin.cpu/float64(rows)*1e6, "cpu-us/row")
	b.ReportMetric(base.cpu/float64(rows)*1e6, "baseline-cpu-us/row")
	b.ReportMetric(bin.redisUs/float64(rows), "redis-us/row")
	b.ReportMetric(base.redisUs/float64(rows), "baseline-redis-us/row")
	b.ReportMetric(bin.batchRows, "rows/batch")
	b.ReportMetric(max(load, load1()), "load1")
}

// BenchmarkDrainNarrow drains 1,000,000 narrow rows written in 10,000-row
// transactions.
func BenchmarkDrainNarrow(b *testing.B) {
	e := newEnv(b)
	const n = 1_000_000
	file, pos := e.loadChunks("narrow", narrowDDL, narrowSelect, n, 10_000)
	e.drainAll("narrow", "narrow", file, pos, n, 6)
}

// BenchmarkDrainNarrowOneRowTx drains 100,000 narrow rows written one per
// transaction (per-transaction overhead: GTID, BEGIN, table map, XID events).
func BenchmarkDrainNarrowOneRowTx(b *testing.B) {
	e := newEnv(b)
	const n = 100_000
	file, pos := e.loadOneRowTx(n)
	e.drainAll("narrow-1rowtx", "narrow", file, pos, n, 6)
}

// BenchmarkDrainWide drains 100,000 rows of a table with every column type,
// written in 10,000-row transactions.
func BenchmarkDrainWide(b *testing.B) {
	e := newEnv(b)
	const n = 100_000
	file, pos := e.loadChunks("wide", wideDDL, wideSelect, n, 10_000)
	e.drainAll("wide", "wide", file, pos, n, wideColumns) // 27 or 28 columns + _v
}
