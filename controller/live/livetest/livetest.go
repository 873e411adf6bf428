// Package livetest loads the controller's live page (controller/live)
// in a headless Chromium over the DevTools protocol (chromedp) and reads
// back what it shows, for the page's own test and the lab's.
package livetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium returns the path of a Chromium (or Chrome) binary, skipping
// the test when there is none.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("needs a headless Chromium: apt-get install -y chromium (Debian)")
	return ""
}

// State is what the page shows at one time, read from its DOM.
type State struct {
	// Snapshots is how many snapshots the page has rendered.
	Snapshots int `json:"snapshots"`
	// RPS is the header's requests per second (all the mesh).
	RPS float64 `json:"rps"`
	// Conn is the live-update indicator's text ("live", "reconnecting…").
	Conn string `json:"conn"`
	// Vertices are the graph's vertex IDs (svc:<host>, wl:<ns>/<name>).
	Vertices []string `json:"vertices"`
	// Labels are the texts drawn on the graph's vertices (their names).
	Labels []string `json:"labels"`
	// Edges are the traffic table's rows: "from>to rps".
	Edges []string `json:"edges"`
	// Nodes are the node cards: "name=state".
	Nodes []string `json:"nodes"`
}

// stateJS reads State from the page.
const stateJS = `(() => {
  const q = (s) => [...document.querySelectorAll(s)];
  const rps = document.getElementById("total-rps");
  return {
    snapshots: +(document.body.dataset.snapshots || 0),
    rps: +((rps && rps.dataset.value) || 0),
    conn: (document.getElementById("conn") || {}).textContent || "",
    vertices: q("#graph [data-vertex-id]").map((e) => e.dataset.vertexId),
    labels: q("#graph [data-vertex-id] text.name").map((e) => e.textContent),
    edges: q("#edges tbody tr[data-from]").map((r) => r.dataset.from + ">" + r.dataset.to + " " + r.querySelector(".rps").textContent),
    nodes: q("#node-cards .card").map((c) => c.dataset.node + "=" + c.querySelector(".state").textContent),
  };
})()`

// Result is the outcome of Watch.
type Result struct {
	// State is the last state read.
	State State
	// Console is every console message, exception and browser log entry
	// of type error (or exception) the page produced.
	Console []string
	// Screenshot is a PNG of the whole page at the end (nil if it
	// failed: ScreenshotErr says why).
	Screenshot    []byte
	ScreenshotErr error
}

// Watch opens url in a headless Chromium of width×height, reads the
// page's State every 200 ms until ready returns nil for it (or timeout:
// the test fails with ready's last error), then takes a full-page
// screenshot. Console errors are collected from the start to the end.
func Watch(t testing.TB, url string, width, height int, timeout time.Duration, ready func(State) error) Result {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Chromium(t)), chromedp.WindowSize(width, height))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()

	var mu sync.Mutex
	var res Result
	msgs := chromedp.Console(bctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError || m.Type == "error" || m.Type == "assert" {
				mu.Lock()
				res.Console = append(res.Console, fmt.Sprintf("%s (%s:%d)", m.String(), m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("chromium: open %s: %v", url, err)
	}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](stateJS))
		cancel()
		if err != nil {
			t.Fatalf("chromium: read the page's state: %v", err)
		}
		var st State
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("chromium: the page's state %s: %v", raw, err)
		}
		res.State = st
		if last = ready(st); last == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the page in Chromium, after %v: %v\nlast state: %+v", timeout, last, st)
			break
		}
		time.Sleep(200 * time.Millisecond) // the page's own pace: a snapshot every couple of seconds
	}
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	res.Screenshot, res.ScreenshotErr = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	cancel()
	cancelB()
	<-done
	mu.Lock()
	defer mu.Unlock()
	res.Console = slices.Clone(res.Console)
	return res
}
