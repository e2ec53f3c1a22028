package integration

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestIntegrationBootstrapOnStart starts binlogsync with bootstrap: true and no checkpoint over a table that
// already holds rows, while a write load runs: the initial load and the stream that follows it leave Redis equal
// to MySQL (nothing written during the load is missed). A restart resumes from the checkpoint and does not load
// again.
func TestIntegrationBootstrapOnStart(t *testing.T) {
	e := sharedEnv(t)
	e.exec("CREATE TABLE b (id INT PRIMARY KEY, v INT NOT NULL, w VARCHAR(40) NULL, d DATETIME(3) NULL)",
		"INSERT INTO b SELECT seq, seq % 97, IF(seq % 10 = 0, NULL, CONCAT('w', seq)), "+
			"'2020-01-01' + INTERVAL seq SECOND FROM seq_1_to_30000")
	e.extra["BINLOGSYNC_BOOTSTRAP"] = "true"

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	var ops atomic.Int64
	wg.Go(func() {
		r := rand.New(rand.NewPCG(3, 5))
		next := 100_000
		for ctx.Err() == nil {
			var err error
			switch r.IntN(6) {
			case 0:
				_, err = e.sqldb.ExecContext(ctx, "DELETE FROM b WHERE id = ?", 1+r.IntN(30000))
			case 1:
				next++
				_, err = e.sqldb.ExecContext(ctx, "INSERT INTO b (id, v, w) VALUES (?, 1, 'new')", next)
			default:
				_, err = e.sqldb.ExecContext(ctx, "UPDATE b SET v = v + 1, w = IF(w IS NULL, 'was null', NULL) WHERE id = ?",
					1+r.IntN(30000))
			}
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("write load: %v", err)
				}
				return
			}
			ops.Add(1)
			time.Sleep(time.Millisecond)
		}
	})

	p := e.start("--config", "../config.example.yaml")
	time.Sleep(300 * time.Millisecond) // some writes after the stream started, too
	stopLoad()
	wg.Wait()
	if ops.Load() < 20 {
		t.Fatalf("the write load ran only %d statements", ops.Load())
	}
	log := p.Log()
	if !strings.Contains(log, "msg=\"bootstrap finished\"") || !strings.Contains(log, "bootstrap pass's position") {
		t.Fatalf("binlogsync did not bootstrap:\n%s", tail(log, 4000))
	}
	e.waitSame("b", time.Minute, nil, "id")
	t.Logf("bootstrap of 30000 rows under %d concurrent writes: Redis equals MySQL", ops.Load())
	if code := p.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("binlogsync exited with %d", code)
	}

	// The restart resumes from the checkpoint; it does not load the table again.
	e.exec("UPDATE b SET w = 'after restart' WHERE id = 5")
	p = e.start("--config", "../config.example.yaml")
	if log := p.Log(); strings.Contains(log, "bootstrap") || !strings.Contains(log, "resuming from the checkpoint") {
		t.Fatalf("the restart did not resume from the checkpoint:\n%s", tail(log, 4000))
	}
	e.waitSame("b", time.Minute, nil, "id")
	if code := p.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("binlogsync exited with %d", code)
	}
}
