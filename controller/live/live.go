// Package live is the controller's live page: the mesh as a graph
// (services, workloads, and the traffic between them with request rate,
// error rate, p99 and mTLS), each node's fast path (XDP packets by
// action, offloaded connections, punts) and the control plane (agents,
// pushes, convergence, NACKs), refreshed every couple of seconds.
//
// The page is one embedded HTML file with its script and style (no
// CDN: it works with no internet). Its data is a Snapshot that the
// controller builds from the Istio and fibmesh metrics of the agents it
// can reach (each node's InternalIP and the agents' metrics port), the
// rates between two scrapes, the model in force, the xDS server's view
// of its agents and the controller's own registry. The page receives
// it over server-sent events; /api/mesh serves the same JSON to scripts.
//
// Scraping is bounded (a timeout per agent, a number at once) and runs
// only while someone watches: an open page, or an /api/mesh request in
// the last Options.Idle.
package live

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds"
)

// Defaults of Options.
const (
	DefaultAgentPort         = 15090
	DefaultInterval          = 2 * time.Second
	DefaultTimeout           = time.Second
	DefaultConcurrency       = 16
	DefaultIdle              = time.Minute
	DefaultConvergenceWindow = 5 * time.Minute
	DefaultMaxViewers        = 64
	DefaultMaxBody           = 32 << 20
)

// Paths the page serves (Register).
const (
	PathPage   = "/"
	PathAssets = "/live/"
	PathAPI    = "/api/mesh"
	PathEvents = "/api/mesh/events"
)

//go:embed static
var static embed.FS

// Options configure a Page. Zero fields take the defaults above.
type Options struct {
	// Model returns the model in force (nil before the first one).
	Model func() *model.Model
	// Agents returns the xDS server's status of every agent it has seen.
	Agents func() []xds.NodeStatus
	// Registry is the controller's own metrics.
	Registry prometheus.Gatherer
	// AgentPort is the port of the agents' metrics on their node's
	// InternalIP; negative: do not scrape agents (the page shows the
	// model and the control plane only).
	AgentPort int
	// AgentURL, if set, replaces the InternalIP:AgentPort rule: it
	// returns where a node's agent serves /metrics ("" for nowhere).
	AgentURL func(*model.Node) string
	// Interval is the time between two scrapes (and two snapshots);
	// Timeout bounds one scrape and must be shorter; Concurrency is how
	// many agents are scraped at once.
	Interval, Timeout time.Duration
	Concurrency       int
	// Idle is how long scraping goes on after the last /api/mesh request
	// with no page open.
	Idle time.Duration
	// ConvergenceWindow is the window of ControlPlane.ConvergenceWindowP99Ms.
	ConvergenceWindow time.Duration
	// MaxViewers bounds the open event streams; MaxBody one agent's
	// metrics.
	MaxViewers int
	MaxBody    int64
	// Client makes the scrapes (default: no proxy, keep-alive).
	Client *http.Client
	// Now is the clock (tests).
	Now func() time.Time
}

// Snapshot is what the page shows at one time.
type Snapshot struct {
	Time            time.Time `json:"time"`
	IntervalSeconds float64   `json:"intervalSeconds"`
	// RatesReady is false until every reachable agent has been scraped
	// twice: rates need two scrapes.
	RatesReady   bool         `json:"ratesReady"`
	Totals       Totals       `json:"totals"`
	Graph        Graph        `json:"graph"`
	Nodes        []NodeView   `json:"nodes"`
	ControlPlane ControlPlane `json:"controlPlane"`
}

// Totals sum the mesh up.
type Totals struct {
	// RPS is requests per second entering the mesh's services (each
	// request counted once, on its first hop); ErrorRate their 5xx and
	// reset share.
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"errorRate"`
	Services  int     `json:"services"`
	Workloads int     `json:"workloads"`
	// AgentsUp and AgentsDown count the scraped agents by the last
	// scrape's outcome.
	AgentsUp   int `json:"agentsUp"`
	AgentsDown int `json:"agentsDown"`
}

// agentState is what the page keeps of one agent between ticks.
type agentState struct {
	url      string
	prev     Samples
	prevAt   time.Time
	cur      Samples
	curAt    time.Time
	err      error
	took     time.Duration
	lastGood time.Time
}

type timedSamples struct {
	at time.Time
	s  []Sample
}

// Page is the live page and its data.
type Page struct {
	o   Options
	scr scraper

	mu         sync.Mutex
	agents     map[string]*agentState
	conv       []timedSamples // convergence buckets over the window
	lastPush   *Push
	latest     *Snapshot
	latestJSON []byte
	next       chan struct{} // closed when the next snapshot is out
	viewers    int
	lastDemand time.Time
	active     bool

	wake    chan struct{}
	stopped chan struct{}
}

// rateNames are the counters whose increase the page computes.
var rateNames = []string{metricRequests, metricDurationBucket, metricTCPSent, metricTCPReceived, metricTCPOpened,
	metricFIBPackets, metricOffloadedBytes, metricOffloadDecisions, metricRevocations, metricProxyRequests, metricProxyBytes}

// agentNames are the series of an agent's scrape the page keeps: the
// rest is dropped at once (an agent's Istio histograms of sizes, its Go
// runtime's metrics).
var agentNames = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range append(rateNames, metricFIBFlows, metricReady, metricOffloaded, metricFlowConnections, metricProxyActive, metricTCPOffloaded) {
		m[n] = true
	}
	return m
}()

// New returns a Page; Run makes its snapshots.
func New(o Options) (*Page, error) {
	if o.Model == nil || o.Agents == nil || o.Registry == nil {
		return nil, errors.New("live: Options.Model, Agents and Registry are required")
	}
	if o.AgentPort == 0 {
		o.AgentPort = DefaultAgentPort
	}
	o.Interval = cmpOr(o.Interval, DefaultInterval)
	o.Timeout = cmpOr(o.Timeout, DefaultTimeout)
	o.Idle = cmpOr(o.Idle, DefaultIdle)
	o.ConvergenceWindow = cmpOr(o.ConvergenceWindow, DefaultConvergenceWindow)
	o.Concurrency = cmpOr(o.Concurrency, DefaultConcurrency)
	o.MaxViewers = cmpOr(o.MaxViewers, DefaultMaxViewers)
	o.MaxBody = cmpOr(o.MaxBody, DefaultMaxBody)
	switch {
	case o.Interval < 100*time.Millisecond:
		return nil, fmt.Errorf("live: interval %s: want at least 100ms", o.Interval)
	case o.Timeout >= o.Interval:
		return nil, fmt.Errorf("live: scrape timeout %s: want less than the interval %s", o.Timeout, o.Interval)
	case o.Concurrency < 1:
		return nil, fmt.Errorf("live: scrape concurrency %d: want at least 1", o.Concurrency)
	}
	if o.AgentURL == nil {
		port := o.AgentPort
		o.AgentURL = func(n *model.Node) string { return agentURL(n, port) }
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: o.Timeout}).DialContext,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     3 * o.Interval,
			DisableCompression:  false,
		}}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Page{
		o:      o,
		scr:    scraper{client: o.Client, timeout: o.Timeout, concurrency: o.Concurrency, maxBody: o.MaxBody, now: o.Now},
		agents: map[string]*agentState{},
		next:   make(chan struct{}), wake: make(chan struct{}, 1), stopped: make(chan struct{}),
	}, nil
}

func cmpOr[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// NotePush records a push to the xDS caches (the xds.Options.OnPush
// callback passes it on). A nil Page ignores it.
func (p *Page) NotePush(version uint64, took time.Duration, err error) {
	if p == nil {
		return
	}
	push := &Push{Version: version, At: p.o.Now(), TookMs: ms(took)}
	if err != nil {
		push.Error = err.Error()
	}
	p.mu.Lock()
	p.lastPush = push
	p.mu.Unlock()
}

// Run makes a snapshot every Interval while someone watches, until ctx
// ends; then it ends the event streams.
func (p *Page) Run(ctx context.Context) {
	defer close(p.stopped)
	t := time.NewTicker(p.o.Interval)
	defer t.Stop()
	for {
		if p.wanted() {
			p.tick(ctx)
			// The next scrape is an interval from now, not from a
			// tick that came while this one ran or while idle: rates
			// never span a few milliseconds.
			t.Reset(p.o.Interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
	}
}

// wanted says whether to scrape now; going idle forgets the scrapes,
// so that the first rates after a pause do not span it.
func (p *Page) wanted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := p.viewers > 0 || p.o.Now().Sub(p.lastDemand) < p.o.Idle
	if !want && p.active {
		p.agents = map[string]*agentState{}
		p.conv = nil
	}
	p.active = want
	return want
}

// demand notes a viewer's interest (n: +1 an event stream opens, -1 it
// closes, 0 an /api/mesh request) and wakes Run if it was idle.
func (p *Page) demand(n int) error {
	p.mu.Lock()
	if n > 0 && p.viewers >= p.o.MaxViewers {
		p.mu.Unlock()
		return fmt.Errorf("%d live page viewers already: close one, or raise the limit", p.viewers)
	}
	p.viewers += n
	p.lastDemand = p.o.Now()
	idle := !p.active
	p.mu.Unlock()
	if idle && n >= 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// tick scrapes the agents and publishes a snapshot.
func (p *Page) tick(ctx context.Context) {
	m := p.o.Model()
	st := p.o.Agents()
	ts := targets(m, st, p.o.AgentURL, p.o.AgentPort > 0)
	res := p.scr.all(ctx, ts)
	if ctx.Err() != nil {
		return
	}
	var reg Samples
	if mfs, err := p.o.Registry.Gather(); err == nil || len(mfs) > 0 {
		reg = Flatten(mfs)
	}
	now := p.o.Now()

	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[string]bool{}
	snap := &Snapshot{Time: now, IntervalSeconds: p.o.Interval.Seconds(), RatesReady: true, Nodes: []NodeView{}}
	var windows []agentWindow
	for i, t := range ts {
		v := NodeView{Name: t.node, URL: t.url, State: t.state, XDSConnected: t.connected, Workloads: t.workloads}
		if t.state != "" {
			snap.Nodes = append(snap.Nodes, v)
			continue
		}
		keep[t.node] = true
		a := p.agents[t.node]
		if a == nil || a.url != t.url {
			a = &agentState{url: t.url}
			p.agents[t.node] = a
		}
		r := res[i]
		a.took, a.err = r.took, r.err
		if r.err == nil {
			a.prev, a.prevAt = a.cur, a.curAt
			a.cur, a.curAt, a.lastGood = r.samples, r.at, r.at
		}
		v.ScrapeMs, v.LastScrape = ms(a.took), a.lastGood
		if a.err != nil {
			v.State, v.Error = StateDown, a.err.Error()
			snap.Totals.AgentsDown++
			snap.Nodes = append(snap.Nodes, v)
			continue
		}
		v.State = StateUp
		snap.Totals.AgentsUp++
		w := agentWindow{cur: a.cur}
		if a.prev != nil {
			w.dt = a.curAt.Sub(a.prevAt).Seconds()
			w.inc = Samples{}
			for _, name := range rateNames {
				if c := a.cur[name]; c != nil {
					w.inc[name] = Increase(a.prev[name], c)
				}
			}
		} else {
			snap.RatesReady = false
		}
		fillNode(&v, w)
		windows = append(windows, w)
		snap.Nodes = append(snap.Nodes, v)
	}
	for n := range p.agents {
		if !keep[n] {
			delete(p.agents, n)
		}
	}
	snap.Graph = buildGraph(m, windows)
	for _, v := range snap.Graph.Vertices {
		switch v.Kind {
		case KindService:
			snap.Totals.Services++
		case KindWorkload:
			snap.Totals.Workloads++
		}
	}
	kinds := map[string]string{}
	for _, v := range snap.Graph.Vertices {
		kinds[v.ID] = v.Kind
	}
	var errs float64
	for _, e := range snap.Graph.Edges {
		if kinds[e.From] != KindService {
			snap.Totals.RPS += e.RPS
			errs += e.ErrorRate * e.RPS
		}
	}
	if snap.Totals.RPS > 0 {
		snap.Totals.ErrorRate = errs / snap.Totals.RPS
	}

	// The convergence histogram over the window: the oldest kept
	// reading at least a window old (or the oldest there is) is the
	// baseline.
	p.conv = append(p.conv, timedSamples{now, reg[metricConvBucket]})
	for len(p.conv) > 1 && now.Sub(p.conv[1].at) >= p.o.ConvergenceWindow {
		p.conv = p.conv[1:]
	}
	var win []Sample
	if len(p.conv) > 1 {
		win = Increase(p.conv[0].s, reg[metricConvBucket])
	}
	snap.ControlPlane = controlPlane(reg, win, p.o.ConvergenceWindow, st)
	if m != nil {
		snap.ControlPlane.ModelVersion = m.Version
	}
	if p.lastPush != nil {
		lp := *p.lastPush
		snap.ControlPlane.LastPush = &lp
	}
	b, err := json.Marshal(snap)
	if err != nil { // a NaN or Inf slipped through: a bug
		b, _ = json.Marshal(map[string]string{"error": "live: snapshot: " + err.Error()})
	}
	p.latest, p.latestJSON = snap, b
	close(p.next)
	p.next = make(chan struct{})
}

// Latest returns the last snapshot (nil before the first) and a channel
// closed when the next one is out.
func (p *Page) Latest() (*Snapshot, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest, p.next
}

func (p *Page) latestBytes() ([]byte, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latestJSON, p.next
}

// Register mounts the page on mux: PathPage (exactly "/"), the assets
// under PathAssets, PathAPI and PathEvents.
func (p *Page) Register(mux *http.ServeMux) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(PathAssets, http.FileServerFS(sub))
	mux.HandleFunc("GET "+PathPage+"{$}", func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.Handle("GET "+PathAssets, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET "+PathAPI, p.serveAPI)
	mux.HandleFunc("GET "+PathEvents, p.serveEvents)
}

// secure keeps the page to its own origin: no script, style, font or
// connection elsewhere (the page must work with no internet, and a
// browser says so loudly if it tries).
func secure(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
}

// serveAPI answers the latest snapshot; when there is none with rates
// recent enough (the page was idle), it waits for one, up to a few
// intervals.
func (p *Page) serveAPI(w http.ResponseWriter, r *http.Request) {
	p.demand(0)
	ctx, cancel := context.WithTimeout(r.Context(), 3*p.o.Interval+p.o.Timeout)
	defer cancel()
	for {
		snap, next := p.Latest()
		if snap != nil && snap.RatesReady && p.o.Now().Sub(snap.Time) <= 2*p.o.Interval {
			break
		}
		select {
		case <-next:
			continue
		case <-p.stopped:
		case <-ctx.Done():
		}
		break
	}
	b, _ := p.latestBytes()
	if b == nil {
		http.Error(w, "no snapshot yet: the controller has not scraped its agents; retry in a few seconds", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// serveEvents streams every snapshot as a server-sent event (one JSON
// document in a "data:" line) until the client goes or Run ends.
func (p *Page) serveEvents(w http.ResponseWriter, r *http.Request) {
	if err := p.demand(+1); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer p.demand(-1)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) error {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "retry: %d\ndata: %s\n\n", (2 * p.o.Interval).Milliseconds(), b); err != nil {
			return err
		}
		return rc.Flush()
	}
	b, next := p.latestBytes()
	if b == nil {
		// An SSE comment, so the client sees the stream open at once.
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprint(w, ": waiting for the first snapshot\n\n"); err != nil || rc.Flush() != nil {
			return
		}
	} else if send(b) != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-p.stopped:
			return
		case <-next:
		}
		b, next = p.latestBytes()
		if send(b) != nil {
			return
		}
	}
}
