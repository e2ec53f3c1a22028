package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Two sources run active/passive: the standby waits on the lease and takes
// over from the shared checkpoint within seconds of the leader's death.
func TestIntegrationLeaderFailover(t *testing.T) {
	e := sharedEnv(t)
	e.exec(usersDDL)
	e.extra["BINLOGSYNC_LEADER_ENABLED"] = "true"
	e.extra["BINLOGSYNC_LEADER_TTL"] = "1500ms"
	e.extra["BINLOGSYNC_CHECKPOINT_STORE"] = "redis"
	leader := e.start("--config", "../config.example.yaml")

	standby := e.spawn("--config", "../config.example.yaml")
	waitLog(t, standby, "standby: another source holds the leader lease", 30*time.Second)
	// A standby is observable: /healthz answers, /readyz says it is not streaming, /metrics is served.
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200} {
		resp, err := http.Get("http://" + standby.httpAddr(t) + path)
		if err != nil {
			t.Fatalf("standby %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("standby %s = %d, want %d", path, resp.StatusCode, want)
		}
	}

	for i := 0; i < 50; i++ {
		e.exec(fmt.Sprintf("INSERT INTO users VALUES (%d,'a',%d,NULL,NOW(6))", i, i))
	}
	e.waitSame("users", 20*time.Second, nil, "id")
	if strings.Contains(standby.Log(), "msg=streaming") {
		t.Fatalf("the standby streamed while the leader held the lease")
	}

	load := startLoad(e, 2)
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	leader.kill9(t)
	waitLog(t, standby, "msg=streaming", 30*time.Second)
	takeover := time.Since(killed)
	time.Sleep(time.Second)
	txs := load.finish(t)
	e.waitSame("users", 60*time.Second, nil, "id")
	t.Logf("standby took over %.2fs after the leader's kill -9; %d transactions during the failover, Redis equals MySQL",
		takeover.Seconds(), txs)
	if takeover > 10*time.Second {
		t.Errorf("takeover took %s, want within a few seconds of the 1.5s lease", takeover)
	}
	if !strings.Contains(standby.Log(), "resuming from the checkpoint") {
		t.Errorf("the standby should resume from the shared checkpoint")
	}

	// A clean stop releases the lease: a new standby takes over at once.
	third := e.spawn("--config", "../config.example.yaml")
	waitLog(t, third, "standby", 30*time.Second)
	stopped := time.Now()
	if code := standby.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	waitLog(t, third, "msg=streaming", 30*time.Second)
	t.Logf("after a clean stop the next standby led within %.2fs", time.Since(stopped).Seconds())
	third.stop(t, 15*time.Second)
}

func waitLog(t *testing.T, p *proc, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.Log(), want) {
		select {
		case <-p.done:
			t.Fatalf("binlogsync exited while waiting for %q:\n%s", want, tail(p.Log(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s:\n%s", want, within, tail(p.Log(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
