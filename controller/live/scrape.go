package live

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds"
)

// acceptText asks promhttp for the text exposition format.
const acceptText = "text/plain;version=0.0.4;q=1,*/*;q=0.1"

// target is a node whose agent the page scrapes (URL empty: it cannot).
type target struct {
	node      string
	url       string
	state     string // StateNoAddress, StateNoAgent, StateNotScraped, or "" (scrape it)
	connected bool   // the controller has an xDS stream from its agent
	workloads int
}

// result is one scrape's outcome.
type result struct {
	samples Samples
	at      time.Time
	took    time.Duration
	err     error
}

// agentURL is where the agent of a model node serves its metrics: its
// InternalIP and port, or "" without an address.
func agentURL(n *model.Node, port int) string {
	if n == nil || n.InternalIP == "" || port <= 0 {
		return ""
	}
	return "http://" + net.JoinHostPort(n.InternalIP, strconv.Itoa(port)) + "/metrics"
}

// targets are the nodes to show: the model's nodes and every agent the
// xDS server has seen for them. An agent is scraped once it has
// connected (a DaemonSet may leave nodes without one); a node of the
// model no agent connected for is listed as StateNoAgent. Agents whose
// node is not in the model (a debugging client on the plaintext port)
// appear only in the control plane's list.
func targets(m *model.Model, st []xds.NodeStatus, url func(*model.Node) string, scrape bool) []target {
	seen := map[string]xds.NodeStatus{}
	for _, s := range st {
		seen[s.Node] = s
	}
	var out []target
	if m == nil {
		return nil
	}
	pods := map[string]int{}
	for _, w := range m.Workloads {
		pods[w.Node]++
	}
	for _, n := range m.Nodes {
		t := target{node: n.Name, workloads: pods[n.Name]}
		s, ok := seen[n.Name]
		t.connected = ok && s.Streams > 0
		switch {
		case !scrape:
			t.state = StateNotScraped
		case !ok:
			t.state = StateNoAgent
		default:
			if t.url = url(n); t.url == "" {
				t.state = StateNoAddress
			}
		}
		out = append(out, t)
	}
	return out
}

// scraper fetches agents' metrics, a bounded number at once, each
// within a timeout.
type scraper struct {
	client      *http.Client
	timeout     time.Duration
	concurrency int
	maxBody     int64
	now         func() time.Time
}

// all scrapes every target with a URL; results are in targets' order
// (zero for the others). It returns when every scrape has ended, within
// about ceil(n/concurrency) timeouts.
func (s *scraper) all(ctx context.Context, ts []target) []result {
	out := make([]result, len(ts))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(s.concurrency, len(ts)) {
		wg.Go(func() {
			for i := range work {
				start := s.now()
				smp, err := s.one(ctx, ts[i].url)
				out[i] = result{samples: smp, err: err, at: s.now()}
				out[i].took = out[i].at.Sub(start)
			}
		})
	}
	for i, t := range ts {
		if t.url != "" && t.state == "" {
			work <- i
		}
	}
	close(work)
	wg.Wait()
	return out
}

// one scrapes url.
func (s *scraper) one(ctx context.Context, url string) (Samples, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	req.Header.Set("Accept", acceptText)
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("scrape %s: no answer within %s", url, s.timeout)
		}
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return nil, fmt.Errorf("scrape %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("scrape %s: Content-Type %q, want the text format (text/plain)", url, ct)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.maxBody+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("scrape %s: the body did not arrive within %s", url, s.timeout)
		}
		return nil, fmt.Errorf("scrape %s: reading the body: %w", url, err)
	}
	if int64(len(body)) > s.maxBody {
		return nil, fmt.Errorf("scrape %s: more than %d bytes of metrics", url, s.maxBody)
	}
	smp, err := ParseText(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	for name := range smp {
		if !agentNames[name] {
			delete(smp, name)
		}
	}
	return smp, nil
}
