package live

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestScrapeOne(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    []string // series names kept
		wantErr string
	}{{
		name: "text format, only the page's series kept",
		handler: func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.Header.Get("Accept"), "text/plain") {
				http.Error(w, "asked for "+r.Header.Get("Accept"), http.StatusNotAcceptable)
				return
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores")
			w.Write([]byte("# TYPE go_goroutines gauge\ngo_goroutines 12\n# TYPE fibmesh_agent_fib_flows gauge\nfibmesh_agent_fib_flows 3\n"))
		},
		want: []string{"fibmesh_agent_fib_flows"},
	}, {
		name: "not the text format",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited")
			w.Write([]byte{1, 2, 3})
		},
		wantErr: `Content-Type "application/vnd.google.protobuf`,
	}, {
		name:    "an error status",
		handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
		wantErr: "404 Not Found: 404 page not found",
	}, {
		name: "garbage",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("fibmesh_agent_fib_flows{ 3\n"))
		},
		wantErr: "text format parsing error",
	}, {
		name: "too large",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(strings.Repeat("# padding\n", 200)))
		},
		wantErr: "more than 1024 bytes of metrics",
	}, {
		name: "a body that stalls",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("fibmesh_agent_fib_flows 3\n"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		},
		wantErr: "the body did not arrive within 1s",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			s := scraper{client: srv.Client(), timeout: time.Second, concurrency: 1, maxBody: 1024, now: time.Now}
			got, err := s.one(context.Background(), srv.URL+"/metrics")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), srv.URL) {
					t.Fatalf("err %v, want one naming the URL and saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for n := range got {
				names = append(names, n)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Errorf("kept %v, want %v", names, tc.want)
			}
		})
	}
	t.Run("nothing listening", func(t *testing.T) {
		s := scraper{client: http.DefaultClient, timeout: time.Second, concurrency: 1, maxBody: 1024, now: time.Now}
		if _, err := s.one(context.Background(), "http://127.0.0.1:1/metrics"); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("err %v, want connection refused", err)
		}
	})
}

// TestScrapeAllBounded: agents that never answer are scraped at most
// concurrency at once, each given up after the timeout, so a round
// takes about ceil(n/concurrency) timeouts.
func TestScrapeAllBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	// Counted on the client's side: the server sees a cancelled request
	// end only some time after the client gave up on it.
	ct := &countingTransport{next: srv.Client().Transport}
	var ts []target
	for i := range 6 {
		ts = append(ts, target{node: fmt.Sprint("n", i), url: srv.URL + "/metrics"})
	}
	ts = append(ts, target{node: "no-agent", state: StateNoAgent})
	const timeout = 200 * time.Millisecond
	s := scraper{client: &http.Client{Transport: ct}, timeout: timeout, concurrency: 2, maxBody: 1 << 20, now: time.Now}
	start := time.Now()
	res := s.all(context.Background(), ts)
	took := time.Since(start)
	if took < 3*timeout || took > 3*timeout+2*time.Second {
		t.Errorf("6 hung agents, 2 at once, %v each: took %v, want about %v", timeout, took, 3*timeout)
	}
	if most := ct.most(); most > 2 {
		t.Errorf("%d scrapes at once, want at most 2", most)
	}
	for i, r := range res[:6] {
		if r.err == nil || !strings.Contains(r.err.Error(), "no answer within 200ms") {
			t.Errorf("%s: %v", ts[i].node, r.err)
		}
	}
	if res[6].err != nil || res[6].samples != nil {
		t.Errorf("a target without an agent was scraped: %+v", res[6])
	}
}

// countingTransport counts the requests in flight through it.
type countingTransport struct {
	next           http.RoundTripper
	mu             sync.Mutex
	inFlight, peak int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.inFlight++
	c.peak = max(c.peak, c.inFlight)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	return c.next.RoundTrip(r)
}

func (c *countingTransport) most() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak
}
