package livetest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Page is what Serve runs: controller/live's Page. It is an interface so
// that the page's own tests (package live) can use livetest without an
// import cycle.
type Page interface {
	// Run refreshes the page until ctx is done.
	Run(ctx context.Context)
	// Register adds the page's handlers to mux.
	Register(mux *http.ServeMux)
}

// Served is a Page running and served over HTTP for a test.
type Served struct {
	// URL is the page's server, without a trailing slash.
	URL string
	// Server serves the page's handlers.
	Server *httptest.Server

	cancel context.CancelFunc
	ran    chan struct{}
}

// Serve runs p.Run in a goroutine and serves p's handlers on a local
// HTTP server. When the test ends, Run is stopped (and waited for) and
// the server closed.
func Serve(t testing.TB, p Page) *Served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Served{cancel: cancel, ran: make(chan struct{})}
	go func() { p.Run(ctx); close(s.ran) }()
	mux := http.NewServeMux()
	p.Register(mux)
	s.Server = httptest.NewServer(mux)
	s.URL = s.Server.URL
	t.Cleanup(func() {
		s.Server.Close()
		s.StopRun()
	})
	return s
}

// StopRun stops the page's Run and returns once it has returned; the
// server keeps serving. It may be called more than once.
func (s *Served) StopRun() {
	s.cancel()
	<-s.ran
}

// Agent is a fake agent's metrics endpoint: its n-th request (from 1) is
// answered with text(n) in Prometheus's text format. It is closed when
// the test ends.
func Agent(t testing.TB, text func(n int) string) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		io.WriteString(w, text(k))
	}))
	t.Cleanup(srv.Close)
	return srv
}
