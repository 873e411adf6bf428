package live

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/fibmesh/fibmesh/controller/live/livetest"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds"
)

// agentText is what a fake agent on node1 serves at its n-th scrape:
// frontend → reviews-v1 at 20 requests per scrape (2 of them 503), and
// the fast path's counters growing by fixed steps.
func agentText(n int) string {
	lbl := `reporter="destination",source_workload="frontend",source_workload_namespace="prod",source_principal="spiffe://cluster.local/ns/prod/sa/frontend",` +
		`destination_workload="reviews-v1",destination_workload_namespace="prod",destination_service="reviews.prod.svc.cluster.local",` +
		`destination_service_name="reviews",destination_service_namespace="prod",request_protocol="http",response_flags="-",connection_security_policy="mutual_tls"`
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE istio_requests_total counter\n")
	fmt.Fprintf(&b, "istio_requests_total{%s,response_code=\"200\"} %d\n", lbl, 18*n)
	fmt.Fprintf(&b, "istio_requests_total{%s,response_code=\"503\"} %d\n", lbl, 2*n)
	fmt.Fprintf(&b, "# TYPE istio_request_duration_milliseconds histogram\n")
	for _, le := range []struct {
		le string
		k  int
	}{{"1", 0}, {"5", 10}, {"10", 20}, {"+Inf", 20}} {
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket{%s,response_code=\"200\",le=%q} %d\n", lbl, le.le, le.k*n)
	}
	fmt.Fprintf(&b, "istio_request_duration_milliseconds_sum{%s,response_code=\"200\"} %d\n", lbl, 100*n)
	fmt.Fprintf(&b, "istio_request_duration_milliseconds_count{%s,response_code=\"200\"} %d\n", lbl, 20*n)
	fmt.Fprintf(&b, "# TYPE fibmesh_agent_fib_packets_total counter\n")
	for reason, k := range map[string]int{"rx": 1000, "redirect": 800, "tx": 0, "pass_route_miss": 60, "pass_ipv6": 40, "punt": 50, "drop_strict_plaintext": 40, "drop_punt_no_socket": 10} {
		fmt.Fprintf(&b, "fibmesh_agent_fib_packets_total{reason=%q} %d\n", reason, k*n)
	}
	b.WriteString(`# TYPE fibmesh_agent_fib_flows gauge
fibmesh_agent_fib_flows 12
# TYPE fibmesh_agent_ready gauge
fibmesh_agent_ready 1
# TYPE fibmesh_agent_proxy_offloaded_connections gauge
fibmesh_agent_proxy_offloaded_connections{mode="splice"} 3
fibmesh_agent_proxy_offloaded_connections{mode="sockmap"} 0
# TYPE fibmesh_agent_offload_flow_connections gauge
fibmesh_agent_offload_flow_connections 3
# TYPE fibmesh_agent_proxy_active_connections gauge
fibmesh_agent_proxy_active_connections{direction="inbound"} 4
fibmesh_agent_proxy_active_connections{direction="outbound"} 1
`)
	fmt.Fprintf(&b, "# TYPE fibmesh_agent_proxy_offloaded_bytes_total counter\nfibmesh_agent_proxy_offloaded_bytes_total{mode=\"splice\"} %d\n", 4096*n)
	fmt.Fprintf(&b, "# TYPE fibmesh_agent_proxy_offload_decisions_total counter\nfibmesh_agent_proxy_offload_decisions_total{mode=\"splice\"} %d\nfibmesh_agent_proxy_offload_decisions_total{mode=\"userspace\"} %d\n", 4*n, 2*n)
	fmt.Fprintf(&b, "# TYPE fibmesh_agent_proxy_http_requests_total counter\nfibmesh_agent_proxy_http_requests_total{direction=\"inbound\",code=\"200\",flags=\"-\"} %d\n", 20*n)
	fmt.Fprintf(&b, "# TYPE fibmesh_agent_proxy_bytes_total counter\nfibmesh_agent_proxy_bytes_total{direction=\"inbound\"} %d\n", 1000*n)
	return b.String()
}

// servePage serves a page over demoModel and testRegistry whose node1
// is a fake agent serving agentText, and whose other nodes' metrics are
// at other; edit sets the rest of o. Everything ends with the test.
func servePage(t *testing.T, other string, edit func(o *Options)) *livetest.Served {
	t.Helper()
	agent := livetest.Agent(t, agentText)
	m := demoModel()
	o := Options{
		Model: func() *model.Model { return m }, Registry: testRegistry(),
		AgentURL: func(n *model.Node) string {
			if n.Name == "node1" {
				return agent.URL + "/metrics"
			}
			return other
		},
	}
	edit(&o)
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return livetest.Serve(t, p)
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testRegistry has the controller's metrics the page reads.
func testRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	conn := prometheus.NewGauge(prometheus.GaugeOpts{Name: metricConnectedAgents, Help: "x"})
	conn.Set(2)
	pushes := prometheus.NewCounter(prometheus.CounterOpts{Name: metricPushes, Help: "x"})
	pushes.Add(5)
	nacks := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricNACKs, Help: "x"}, []string{"type"})
	nacks.WithLabelValues("LDS").Add(1)
	nacks.WithLabelValues("CDS")
	conv := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fibmesh_xds_convergence_seconds", Help: "x", Buckets: []float64{.01, .1, 1}})
	for range 99 {
		conv.Observe(0.005)
	}
	conv.Observe(0.5)
	reg.MustRegister(conn, pushes, nacks, conv)
	return reg
}

func TestTick(t *testing.T) {
	good := livetest.Agent(t, agentText)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "metrics are broken", http.StatusInternalServerError)
	}))
	defer broken.Close()
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hung.Close()
	defer close(release)

	m := demoModel()
	m.Nodes = append(m.Nodes, &model.Node{Name: "node3", InternalIP: "10.100.0.3"}, &model.Node{Name: "node4", InternalIP: "10.100.0.4"},
		&model.Node{Name: "node5"})
	urls := map[string]string{"node1": good.URL + "/metrics", "node2": broken.URL + "/metrics", "node3": hung.URL + "/metrics"}
	status := []xds.NodeStatus{
		{Node: "node1", InModel: true, Streams: 1, LastConvergence: 3 * time.Millisecond,
			Types: []xds.TypeStatus{{TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", Sent: "7", Acked: "7", NACKs: 1}}},
		{Node: "node2", InModel: true, Streams: 1},
		{Node: "node3", InModel: true},
		{Node: "node5", InModel: true, Streams: 1},
		{Node: "debugger", Streams: 1},
	}
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	const timeout = 300 * time.Millisecond
	p, err := New(Options{
		Model: func() *model.Model { return m }, Agents: func() []xds.NodeStatus { return status }, Registry: testRegistry(),
		AgentURL: func(n *model.Node) string { return urls[n.Name] }, Interval: time.Second, Timeout: timeout, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.NotePush(7, 4*time.Millisecond, nil)
	ctx := context.Background()

	start := time.Now()
	p.tick(ctx)
	if took := time.Since(start); took > timeout+3*time.Second {
		t.Errorf("a tick with an agent that does not answer took %v, want about the %v timeout", took, timeout)
	}
	s1, _ := p.Latest()
	if s1.RatesReady {
		t.Error("first snapshot: RatesReady, want false (one scrape)")
	}
	clk.Add(2 * time.Second)
	p.tick(ctx)
	s2, _ := p.Latest()

	states := map[string]string{}
	for _, n := range s2.Nodes {
		states[n.Name] = n.State
		if n.State == StateDown && n.Error == "" {
			t.Errorf("%s is down with no error", n.Name)
		}
	}
	if d := cmp.Diff(map[string]string{"node1": StateUp, "node2": StateDown, "node3": StateDown, "node4": StateNoAgent, "node5": StateNoAddress}, states); d != "" {
		t.Errorf("node states -want +got:\n%s", d)
	}
	byName := map[string]NodeView{}
	for _, n := range s2.Nodes {
		byName[n.Name] = n
	}
	for node, want := range map[string]string{"node2": "500 Internal Server Error: metrics are broken", "node3": "no answer within 300ms"} {
		if !strings.Contains(byName[node].Error, want) {
			t.Errorf("%s's error %q, want it to say %q", node, byName[node].Error, want)
		}
	}
	if !s2.RatesReady {
		t.Error("second snapshot: RatesReady false, want true (the down agents do not count)")
	}
	n1 := byName["node1"]
	// Per 2 s: rx 1000, redirect 800, pass 60+40, punt 50, drop 40+10.
	if d := cmp.Diff(map[string]float64{"rx": 500, "redirect": 400, "tx": 0, "pass": 50, "punt": 25, "drop": 25}, n1.XDP); d != "" {
		t.Errorf("node1 XDP pps by action -want +got:\n%s", d)
	}
	got := fmt.Sprintf("punt=%v puntdrop=%v flows=%v offloaded=%v offloadflows=%v offBps=%v decisions=%v rps=%v active=%v Bps=%v ready=%v xds=%v workloads=%d",
		n1.PuntPPS, n1.PuntDropPPS, n1.FlowEntries, n1.Offloaded, n1.OffloadFlows, n1.OffloadedBps, n1.OffloadDecisions, n1.RPS, n1.ActiveConnections, n1.BytesPerSecond, n1.Ready, n1.XDSConnected, n1.Workloads)
	want := "punt=25 puntdrop=5 flows=12 offloaded=map[sockmap:0 splice:3] offloadflows=3 offBps=2048 decisions=map[splice:2 userspace:1] rps=10 active=5 Bps=500 ready=true xds=true workloads=2"
	if got != want {
		t.Errorf("node1:\n got %s\nwant %s", got, want)
	}
	if byName["node3"].XDSConnected || !byName["node2"].XDSConnected {
		t.Errorf("xDS connected: node2 %v node3 %v, want true false", byName["node2"].XDSConnected, byName["node3"].XDSConnected)
	}

	if d := cmp.Diff([]string{
		"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v1 [http] rps=10 err=0.1 p99=9.9 mtls=mutual_tls offload=userspace rep=destination observed=true",
		"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v2 [] rps=0 err=0 p99=- mtls=unknown offload= rep= observed=false",
		"wl:prod/frontend > svc:reviews.prod.svc.cluster.local [http] rps=10 err=0.1 p99=9.9 mtls=mutual_tls offload=userspace rep=destination observed=true",
	}, edgeLines(s2.Graph)); d != "" {
		t.Errorf("edges -want +got:\n%s", d)
	}
	if tot := s2.Totals; tot.RPS != 10 || tot.ErrorRate != 0.1 || tot.Services != 3 || tot.Workloads != 3 || tot.AgentsUp != 1 || tot.AgentsDown != 2 {
		t.Errorf("totals %+v", tot)
	}

	cp := s2.ControlPlane
	if cp.ConnectedAgents != 2 || cp.Pushes != 5 || cp.NACKs != 1 || cp.ModelVersion != 7 || cp.LastPush == nil || cp.LastPush.Version != 7 || cp.LastPush.TookMs != 4 {
		t.Errorf("control plane %+v, last push %+v", cp, cp.LastPush)
	}
	if cp.ConvergenceP99Ms == nil || *cp.ConvergenceP99Ms < 10 || *cp.ConvergenceP99Ms > 100 {
		t.Errorf("convergence p99 %v ms, want within the 10..100 ms bucket", cp.ConvergenceP99Ms)
	}
	if cp.ConvergenceWindowP99Ms != nil {
		t.Errorf("convergence p99 over the window %v, want none (no change since the first tick)", *cp.ConvergenceWindowP99Ms)
	}
	if len(cp.Agents) != 5 || cp.Agents[0].Node != "node1" || !cp.Agents[0].Synced || cp.Agents[0].NACKs != 1 || cp.Agents[0].LastConvergenceMs != 3 {
		t.Errorf("agents %+v", cp.Agents)
	}
	if _, err := json.Marshal(s2); err != nil {
		t.Errorf("snapshot does not encode: %v", err)
	}

	// An agent that goes away is dropped; one whose address changes
	// starts over (no rate across two processes).
	delete(urls, "node3")
	m.Nodes = m.Nodes[:2]
	urls["node1"] = good.URL + "/metrics?moved"
	clk.Add(2 * time.Second)
	p.tick(ctx)
	s3, _ := p.Latest()
	if len(s3.Nodes) != 2 || s3.RatesReady || len(p.agents) != 2 {
		t.Errorf("after node3 left and node1 moved: %d nodes, RatesReady %v, %d agents kept; want 2, false, 2", len(s3.Nodes), s3.RatesReady, len(p.agents))
	}
}

func TestTargets(t *testing.T) {
	m := &model.Model{
		Nodes:     []*model.Node{{Name: "a", InternalIP: "10.0.0.1"}, {Name: "b", InternalIP: "fd00::2"}, {Name: "c"}, {Name: "d", InternalIP: "10.0.0.4"}},
		Workloads: []*model.Workload{{Name: "p", Node: "a"}, {Name: "q", Node: "a"}},
	}
	st := []xds.NodeStatus{{Node: "a", Streams: 1}, {Node: "b"}, {Node: "c", Streams: 2}, {Node: "zz", Streams: 1}}
	url := func(n *model.Node) string { return agentURL(n, 15090) }
	for _, tc := range []struct {
		name   string
		m      *model.Model
		scrape bool
		want   []string
	}{
		{"no model", nil, true, nil},
		{"scraping", m, true, []string{
			"a http://10.0.0.1:15090/metrics state= connected=true pods=2",
			"b http://[fd00::2]:15090/metrics state= connected=false pods=0",
			"c  state=no-address connected=true pods=0",
			"d  state=no-agent connected=false pods=0",
		}},
		{"not scraping", m, false, []string{
			"a  state=not-scraped connected=true pods=2",
			"b  state=not-scraped connected=false pods=0",
			"c  state=not-scraped connected=true pods=0",
			"d  state=not-scraped connected=false pods=0",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, x := range targets(tc.m, st, url, tc.scrape) {
				got = append(got, fmt.Sprintf("%s %s state=%s connected=%v pods=%d", x.node, x.url, x.state, x.connected, x.workloads))
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("-want +got:\n%s", d)
			}
		})
	}
}

func TestNew(t *testing.T) {
	base := func() Options {
		return Options{Model: func() *model.Model { return nil }, Agents: func() []xds.NodeStatus { return nil }, Registry: prometheus.NewRegistry()}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*Options)
		wantErr string
	}{
		{"defaults", func(*Options) {}, ""},
		{"no model", func(o *Options) { o.Model = nil }, "Options.Model, Agents and Registry are required"},
		{"timeout not under the interval", func(o *Options) { o.Interval, o.Timeout = time.Second, time.Second }, "scrape timeout 1s: want less than the interval 1s"},
		{"interval too short", func(o *Options) { o.Interval = 10 * time.Millisecond; o.Timeout = time.Millisecond }, "interval 10ms: want at least 100ms"},
		{"negative concurrency", func(o *Options) { o.Concurrency = -2 }, "scrape concurrency -2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.edit(&o)
			p, err := New(o)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p.o.Interval != DefaultInterval || p.o.Timeout != DefaultTimeout || p.o.AgentPort != DefaultAgentPort || p.o.Concurrency != DefaultConcurrency {
					t.Errorf("defaults not applied: %+v", p.o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestServe runs the page as the controller does: the page and its
// assets, /api/mesh (waiting for a snapshot with rates), the event
// stream, the viewer limit, and the streams' end when Run ends.
func TestServe(t *testing.T) {
	// Checked once every cleanup has run; earlier tests' browser and
	// clients may still be ending.
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	srv := servePage(t, "", func(o *Options) {
		o.Agents = func() []xds.NodeStatus { return []xds.NodeStatus{{Node: "node1", InModel: true, Streams: 1}} }
		o.Interval, o.Timeout, o.MaxViewers, o.Client = 150*time.Millisecond, 100*time.Millisecond, 1, client
	})
	c := srv.Server.Client()
	t.Cleanup(c.CloseIdleConnections)

	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, tc := range []struct {
		path, wantType, wantBody string
		wantCode                 int
	}{
		{"/", "text/html", `src="/live/live.js"`, 200},
		{"/live/live.js", "javascript", "EventSource", 200},
		{"/live/live.css", "text/css", "--bg", 200},
		{"/live/favicon.svg", "image/svg+xml", "<svg", 200},
		{"/live/nothing.js", "", "", 404},
	} {
		resp, body := get(tc.path)
		if resp.StatusCode != tc.wantCode || !strings.Contains(resp.Header.Get("Content-Type"), tc.wantType) || !strings.Contains(body, tc.wantBody) {
			t.Errorf("GET %s: %s %q, body %.80q; want %d %q with %q", tc.path, resp.Status, resp.Header.Get("Content-Type"), body, tc.wantCode, tc.wantType, tc.wantBody)
		}
		if tc.wantCode == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("GET %s: no Content-Security-Policy keeping the page to its origin", tc.path)
		}
	}

	// The page was idle: /api/mesh waits for a snapshot with rates.
	resp, body := get(PathAPI)
	var snap Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v\n%.300s", PathAPI, resp.Status, err, body)
	}
	if !snap.RatesReady || snap.Totals.RPS <= 0 || len(snap.Nodes) != 2 || snap.Nodes[0].State != StateUp {
		t.Errorf("GET %s: ratesReady %v, rps %v, nodes %+v; want rates, traffic, node1 up", PathAPI, snap.RatesReady, snap.Totals.RPS, snap.Nodes)
	}

	// Events: two snapshots in a row, each one JSON document.
	sctx, scancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(sctx, http.MethodGet, srv.URL+PathEvents, nil)
	sresp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := sresp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("events Content-Type %q", ct)
	}
	sc := bufio.NewScanner(sresp.Body)
	sc.Buffer(nil, 1<<20)
	var times []time.Time
	for len(times) < 2 && sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var s Snapshot
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("event is not a snapshot: %v\n%.200s", err, line)
		}
		times = append(times, s.Time)
	}
	if len(times) != 2 || !times[1].After(times[0]) {
		t.Errorf("events: snapshots at %v, want two, in order", times)
	}

	// One viewer at most here: a second stream is refused.
	if resp, body := get(PathEvents); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "viewers already") {
		t.Errorf("second stream: %s %q, want 503", resp.Status, body)
	}

	// Run ends: the stream ends.
	srv.StopRun()
	done := make(chan struct{})
	go func() {
		for sc.Scan() {
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("the event stream did not end when Run did")
	}
	sresp.Body.Close()
	scancel()
}
