package live

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/controller/live/livetest"
	"github.com/fibmesh/fibmesh/controller/xds"
)

// TestPageInChromium loads the page in a headless Chromium against a
// fake agent: it must render the model's services and the agent's
// traffic, keep updating, and log no error (a script error, or a
// resource the Content-Security-Policy refused, such as anything from
// the internet). The screenshot goes to $LIVE_SCREENSHOT if set.
func TestPageInChromium(t *testing.T) {
	livetest.Chromium(t)
	srv := servePage(t, "http://127.0.0.1:1/metrics", func(o *Options) { // nothing listens there: node2 is down
		o.Agents = func() []xds.NodeStatus {
			return []xds.NodeStatus{{Node: "node1", InModel: true, Streams: 1}, {Node: "node2", InModel: true}}
		}
		o.Interval, o.Timeout = 300*time.Millisecond, 200*time.Millisecond
	})

	res := livetest.Watch(t, srv.URL+"/", 1400, 1000, 60*time.Second, func(s livetest.State) error {
		switch {
		case s.Snapshots < 3:
			return fmt.Errorf("%d snapshots rendered, want 3", s.Snapshots)
		case s.RPS <= 0:
			return errors.New("no requests per second shown")
		case !slices.Contains(s.Vertices, "svc:reviews.prod.svc.cluster.local") || !slices.Contains(s.Labels, "reviews-v1"):
			return fmt.Errorf("graph %v (%v): want the reviews service and the reviews-v1 workload", s.Vertices, s.Labels)
		case !slices.Contains(s.Nodes, "node1=up") || !slices.Contains(s.Nodes, "node2=down"):
			return fmt.Errorf("nodes %v: want node1=up node2=down", s.Nodes)
		case s.Conn != "live":
			return fmt.Errorf("live indicator %q", s.Conn)
		}
		return nil
	})
	if len(res.Console) > 0 {
		t.Errorf("console errors:\n%v", res.Console)
	}
	if res.ScreenshotErr != nil || !bytes.HasPrefix(res.Screenshot, []byte("\x89PNG")) {
		t.Fatalf("screenshot: %v (%d bytes)", res.ScreenshotErr, len(res.Screenshot))
	}
	out := os.Getenv("LIVE_SCREENSHOT")
	if out == "" {
		out = filepath.Join(t.TempDir(), "live-page.png")
	}
	if err := os.WriteFile(out, res.Screenshot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("state %+v; screenshot %s", res.State, out)
}
