package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestProbe checks the container health check: 0 only for a 200 answer.
func TestProbe(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	if got := probe(srv.URL + "/readyz"); got != 0 {
		t.Errorf("ready: exit %d, want 0", got)
	}
	status = http.StatusServiceUnavailable
	if got := probe(srv.URL + "/readyz"); got != 1 {
		t.Errorf("not ready (503): exit %d, want 1", got)
	}
	addr := srv.URL
	srv.Close()
	if got := probe(addr + "/readyz"); got != 1 {
		t.Errorf("nothing listening: exit %d, want 1", got)
	}
}
