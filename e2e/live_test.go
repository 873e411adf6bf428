package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/controller/live"
	"github.com/fibmesh/fibmesh/controller/live/livetest"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

// livePrefix is the network namespace prefix of this file's lab.
const livePrefix = "fm-tc-"

// liveScreenshot is where TestLivePage leaves its screenshot (perf/out
// is not committed: it is for the closing note of a change).
const liveScreenshot = "../perf/out/live-page.png"

// TestLivePage runs examples/ with traffic (frontend → reviews and
// ratings, client → reviews answered 403 by the authorization policy)
// and opens the controller's live page in a headless Chromium: the page
// loads without a console error (nothing refused by its
// Content-Security-Policy, no script error), shows the lab's services
// and workloads, both nodes' agents up, and a non-zero request rate;
// /api/mesh agrees. The screenshot goes to perf/out/live-page.png.
func TestLivePage(t *testing.T) {
	livetest.Chromium(t)
	testenv.NeedBPFFS(t)
	l := upMesh(t, livePrefix, manifestsIn(t, "../examples"))
	diagnoseOnFailure(t, l, "node1", "node2")
	for _, n := range []string{"node1", "node2"} {
		l.agentReady(t, n, 60*time.Second)
	}
	frontend := newPodClient(t, l.podNamed(t, "production", "frontend-"))
	client := newPodClient(t, l.pod(t, "production", "client"))
	reviews := l.serviceVIP(t, "production", "reviews", 9080)
	ratings := l.serviceVIP(t, "production", "ratings", 9080)
	waitL7(t, frontend, reviews, call{path: "/api/reviews/0", host: "reviews:9080"}, 200)
	waitL7(t, frontend, ratings, call{path: "/api/ratings/0", host: "ratings:9080"}, 200)

	ctx, stop := context.WithCancel(context.Background())
	// reviews' split route delays 1% of its requests by 5 s (the
	// example's fault), which stalls a caller for most of the time: the
	// canary testers' route (x-canary-user, to v2, no fault) keeps
	// frontend's rate up.
	calls := []liveCall{
		{frontend, ratings, call{path: "/api/ratings/1", host: "ratings:9080"}},
		{client, reviews, call{path: "/api/reviews/3", host: "reviews:9080"}},
	}
	for i := range 3 {
		calls = append(calls, liveCall{frontend, reviews, call{path: fmt.Sprintf("/api/reviews/%d", i), host: "reviews:9080"}},
			liveCall{frontend, reviews, call{path: fmt.Sprintf("/api/reviews/%d", i), host: "reviews:9080", hdr: []string{"X-Canary-User", "true"}}})
	}
	tr := runLiveTraffic(ctx, calls)
	defer tr.stop(t, stop)

	base := netnsProxy(t, l.fabricNetns(), kubelet.ControllerMonitoring)
	const (
		reviewsSvc = "svc:reviews.production.svc.cluster.local"
		ratingsSvc = "svc:ratings.production.svc.cluster.local"
		feWl       = "wl:production/frontend"
	)

	// The JSON endpoint: the graph has the traffic on frontend's edges.
	c := &http.Client{Timeout: 20 * time.Second}
	testenv.Eventually(t, 90*time.Second, "/api/mesh shows frontend → reviews and ratings with traffic", func() error {
		if err := tr.err(); err != nil {
			t.Fatalf("traffic: %v", err)
		}
		resp, err := c.Get(base + live.PathAPI)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		var s live.Snapshot
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		for _, n := range s.Nodes {
			if n.State != live.StateUp {
				return fmt.Errorf("node %s: %s %s", n.Name, n.State, n.Error)
			}
		}
		if len(s.Nodes) != 2 {
			return fmt.Errorf("%d nodes, want 2", len(s.Nodes))
		}
		rps := map[string]float64{}
		for _, e := range s.Graph.Edges {
			rps[e.From+">"+e.To] = e.RPS
		}
		for _, e := range []string{feWl + ">" + reviewsSvc, feWl + ">" + ratingsSvc} {
			if rps[e] <= 0 {
				return fmt.Errorf("edge %s: %v rps (total %v; edges %v)", e, rps[e], s.Totals.RPS, rps)
			}
		}
		for _, n := range s.Nodes {
			if n.XDP["rx"] <= 0 {
				return fmt.Errorf("node %s: no XDP packets counted (%v)", n.Name, n.XDP)
			}
		}
		return nil
	})

	res := livetest.Watch(t, base+"/", 1600, 1100, 60*time.Second, func(s livetest.State) error {
		if err := tr.err(); err != nil {
			return fmt.Errorf("traffic: %w", err)
		}
		switch {
		case s.Snapshots < 2:
			return fmt.Errorf("%d snapshots rendered, want 2", s.Snapshots)
		case s.RPS <= 0:
			return errors.New("the page shows no requests per second")
		case s.Conn != "live":
			return fmt.Errorf("live indicator %q", s.Conn)
		}
		for _, v := range []string{reviewsSvc, ratingsSvc, "svc:frontend.production.svc.cluster.local", feWl, "wl:production/reviews-v1", "wl:production/reviews-v2", "wl:production/client"} {
			if !slices.Contains(s.Vertices, v) {
				return fmt.Errorf("graph %v: no %s", s.Vertices, v)
			}
		}
		for _, n := range []string{"node1=up", "node2=up"} {
			if !slices.Contains(s.Nodes, n) {
				return fmt.Errorf("nodes %v: want %s", s.Nodes, n)
			}
		}
		return nil
	})
	for _, m := range res.Console {
		t.Errorf("console: %s", m)
	}
	if res.ScreenshotErr != nil {
		t.Fatalf("screenshot: %v", res.ScreenshotErr)
	}
	if err := os.MkdirAll(filepath.Dir(liveScreenshot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(liveScreenshot, res.Screenshot, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(liveScreenshot)
	t.Logf("page: %d snapshots, %.1f rps, edges %v; screenshot %s", res.State.Snapshots, res.State.RPS, res.State.Edges, abs)
}

// liveCall is one stream of requests TestLivePage keeps up.
type liveCall struct {
	pc   *podClient
	addr netip.AddrPort
	c    call
}

// liveTraffic is the requests running while the page is watched.
type liveTraffic struct {
	wg    sync.WaitGroup
	sent  atomic.Int64
	mu    sync.Mutex
	first error
}

// runLiveTraffic sends each call in a loop, one at a time per call,
// until ctx ends.
func runLiveTraffic(ctx context.Context, calls []liveCall) *liveTraffic {
	tr := &liveTraffic{}
	for _, lc := range calls {
		tr.wg.Go(func() {
			for ctx.Err() == nil {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := lc.pc.do(rctx, lc.addr, lc.c)
				cancel()
				if err != nil && ctx.Err() == nil {
					tr.mu.Lock()
					if tr.first == nil {
						tr.first = err
					}
					tr.mu.Unlock()
					return
				}
				tr.sent.Add(1)
			}
		})
	}
	return tr
}

func (tr *liveTraffic) err() error {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.first
}

func (tr *liveTraffic) stop(t *testing.T, cancel func()) {
	cancel()
	tr.wg.Wait()
	t.Logf("traffic: %d requests answered", tr.sent.Load())
}

// netnsProxy serves, on 127.0.0.1 in the test's namespace (where
// Chromium runs), what addr serves inside netns (the controller's
// monitoring address in the lab's fabric), streaming responses as they
// come (the page's server-sent events).
func netnsProxy(t *testing.T, netns, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: "http", Host: addr}) },
		Transport:     kubelet.NetnsHTTPClient(netns, 0).Transport,
		FlushInterval: -1,
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
