package live

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"strconv"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// Istio's standard metrics the graph reads, with Istio's names and label
// names (https://istio.io/latest/docs/reference/config/metrics/).
const (
	metricRequests       = "istio_requests_total"
	metricDurationBucket = "istio_request_duration_milliseconds_bucket"
	metricTCPSent        = "istio_tcp_sent_bytes_total"
	metricTCPReceived    = "istio_tcp_received_bytes_total"
	metricTCPOpened      = "istio_tcp_connections_opened_total"
	// metricTCPOffloaded is the agents' gauge of L4 tunnel connections
	// open now, by edge (Istio's label names) and offload mode.
	metricTCPOffloaded = "fibmesh_agent_tcp_offloaded_connections"
)

// Vertex kinds.
const (
	KindService  = "service"
	KindWorkload = "workload"
	// KindUnknown is the one vertex for traffic whose source (or
	// destination) Istio's labels call "unknown": outside the mesh.
	KindUnknown = "unknown"
)

// unknownID is the ID of the KindUnknown vertex.
const unknownID = "unknown"

// Graph is the mesh as a graph: services and workloads, and edges from
// a calling workload to the service it called and from the service to
// the workload that answered (Kiali's versioned-app graph, flattened).
type Graph struct {
	Vertices []Vertex `json:"vertices"`
	Edges    []Edge   `json:"edges"`
}

// Vertex is a service or a workload (the pods of one Deployment, as
// Istio's source_workload and destination_workload name them).
type Vertex struct {
	// ID is "svc:<hostname>", "wl:<namespace>/<workload>" or "unknown".
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// InModel is false for a vertex seen only in the agents' metrics (a
	// service or workload the controller's model does not have).
	InModel bool `json:"inModel"`
	// Hostname and External are a service's: its FQDN (Istio's
	// destination_service) and whether a ServiceEntry declares it
	// MESH_EXTERNAL.
	Hostname string `json:"hostname,omitempty"`
	External bool   `json:"external,omitempty"`
	// App, Version, Nodes, Pods, MTLS and OutsideMesh are a workload's:
	// its app and version labels, the nodes its pods run on, how many
	// pods, the mTLS mode its ports take by default (STRICT, PERMISSIVE,
	// DISABLE; "mixed" when its pods differ), and whether it is outside
	// the mesh (not captured).
	App         string   `json:"app,omitempty"`
	Version     string   `json:"version,omitempty"`
	Nodes       []string `json:"nodes,omitempty"`
	Pods        int      `json:"pods,omitempty"`
	MTLS        string   `json:"mtls,omitempty"`
	OutsideMesh bool     `json:"outsideMesh,omitempty"`
	// RPSIn and RPSOut are the requests per second of the edges into
	// and out of the vertex.
	RPSIn  float64 `json:"rpsIn"`
	RPSOut float64 `json:"rpsOut"`
}

// Edge is traffic from one vertex to another, over the last scrape
// interval.
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Protocols are "http" (istio_requests_total) and "tcp"
	// (istio_tcp_*) as seen since the agents started; none for an edge
	// only the model knows of (a service's endpoint with no traffic yet).
	Protocols []string `json:"protocols,omitempty"`
	// RPS is requests per second; Codes splits it by response code
	// class ("2xx" ... "5xx", and "0" for a reset stream); ErrorRate is
	// the share of 5xx and resets (0..1).
	RPS       float64            `json:"rps"`
	Codes     map[string]float64 `json:"codes,omitempty"`
	ErrorRate float64            `json:"errorRate"`
	// P99Ms is the 99th percentile of istio_request_duration_milliseconds
	// over the interval; absent when no request ended in it.
	P99Ms *float64 `json:"p99Ms,omitempty"`
	// MTLS is Istio's connection_security_policy as the destination
	// reports it (for the caller's hop too): "mutual_tls", "none",
	// "mixed" (both in the interval), or "unknown" (only a source
	// reported it, or no traffic yet).
	MTLS string `json:"mtls"`
	// Offload is where the edge's bytes go: "userspace" for HTTP (L7
	// requests stay in the slow path by design); for TCP over the mTLS
	// tunnel, how its connections open now move their bytes ("splice"
	// or "sockmap": offloaded to kTLS and the kernel byte path;
	// "userspace": kept in the slow path), "mixed" when they differ,
	// and when none is open the modes its connections had before (one,
	// else "mixed"). Empty for plaintext TCP and where no agent says
	// (fibmesh_agent_tcp_offloaded_connections).
	Offload string `json:"offload,omitempty"`
	// OffloadConnections are a TCP edge's tunnel connections open now,
	// by offload mode (those above); absent when none is open.
	OffloadConnections map[string]float64 `json:"offloadConnections,omitempty"`
	// BytesPerSecond (sent and received) and ConnectionsPerSecond
	// (opened) are a TCP edge's.
	BytesPerSecond       float64 `json:"bytesPerSecond,omitempty"`
	ConnectionsPerSecond float64 `json:"connectionsPerSecond,omitempty"`
	// Reporter says whose figures these are: "source" for a caller →
	// service hop, "destination" for service → workload (see
	// buildGraph), the other where that side is not reported, "both"
	// where some of the traffic is reported by each.
	Reporter string `json:"reporter,omitempty"`
	// Observed is true once traffic was seen on the edge; false for
	// edges only the model knows of.
	Observed bool `json:"observed"`
}

// agentWindow is one agent's last scrape and, when it has an earlier
// one, the counters' increase between the two over DT seconds.
type agentWindow struct {
	cur Samples
	inc Samples // nil: only one scrape so far
	dt  float64
}

func serviceID(host string) string      { return "svc:" + host }
func workloadID(ns, name string) string { return "wl:" + ns + "/" + name }
func known(v string) bool               { return v != "" && v != "unknown" }
func codeClass(code string) string {
	n, err := strconv.Atoi(code)
	switch {
	case err != nil:
		return "other"
	case n == 0:
		return "0"
	case n >= 100 && n < 600:
		return strconv.Itoa(n/100) + "xx"
	}
	return "other"
}

// edgeAgg accumulates one edge's figures.
type edgeAgg struct {
	Edge
	protocols map[string]bool
	errs      float64
	mtlsRate  map[string]float64 // by connection_security_policy, in the interval
	mtlsSeen  map[string]bool    // ever, from the cumulative counters
	buckets   []Sample
	reporters map[string]bool
	// offloadSeen are the offload modes the agents' gauge has for the
	// edge (open now or before).
	offloadSeen map[string]bool
}

// graphBuilder builds a Graph from the model and the agents' metrics.
type graphBuilder struct {
	vertices map[string]*Vertex
	edges    map[[2]string]*edgeAgg
	// destReported are the destinations (service host, else workload)
	// some agent reports as reporter="destination"; srcReported the
	// workloads some agent reports as reporter="source".
	destReported, srcReported map[string]bool
}

func (g *graphBuilder) edge(from, to string) *edgeAgg {
	k := [2]string{from, to}
	e := g.edges[k]
	if e == nil {
		e = &edgeAgg{Edge: Edge{From: from, To: to}, protocols: map[string]bool{}, mtlsRate: map[string]float64{},
			mtlsSeen: map[string]bool{}, reporters: map[string]bool{}, offloadSeen: map[string]bool{}}
		g.edges[k] = e
	}
	return e
}

// buildGraph joins the model's services and workloads with the traffic
// in the agents' Istio metrics. m may be nil (no model yet).
//
// Each hop is counted by the side that knows both its ends, as each
// sidecar reports in Istio: caller → service by the caller's agent
// (reporter="source": what the caller saw, its retries, timeouts and
// local 503s included), service → workload by the called pod's agent
// (reporter="destination", which also says whether the request came
// over mTLS). Where that side is not reported (a caller outside the
// mesh, a destination outside it, an agent not scraped), the other
// side's figures stand in. A request is thus counted once per hop.
func buildGraph(m *model.Model, agents []agentWindow) Graph {
	g := &graphBuilder{vertices: map[string]*Vertex{}, edges: map[[2]string]*edgeAgg{},
		destReported: map[string]bool{}, srcReported: map[string]bool{}}
	if m != nil {
		g.addModel(m)
	}
	// Who reports what, from the cumulative counters (so the choice
	// does not flap with the traffic).
	for _, a := range agents {
		for _, name := range []string{metricRequests, metricTCPOpened} {
			for _, s := range a.cur[name] {
				switch s.Labels["reporter"] {
				case "destination":
					g.destReported[destKey(s.Labels)] = true
				case "source":
					if known(s.Labels["source_workload"]) {
						g.srcReported[workloadID(s.Labels["source_workload_namespace"], s.Labels["source_workload"])] = true
					}
				}
			}
		}
	}
	for _, a := range agents {
		g.addTraffic(a)
	}
	return g.finish()
}

func (g *graphBuilder) addModel(m *model.Model) {
	pods := map[string]string{} // namespace/pod → workload vertex
	for _, s := range m.Services {
		g.vertices[serviceID(s.Hostname)] = &Vertex{ID: serviceID(s.Hostname), Kind: KindService, Namespace: s.Namespace,
			Name: s.Name, Hostname: s.Hostname, InModel: true, External: s.Location == "MESH_EXTERNAL"}
	}
	nodes := map[string]map[string]bool{}
	for _, w := range m.Workloads {
		name := fibv1.WorkloadName(w.Name, w.Labels)
		id := workloadID(w.Namespace, name)
		pods[w.Namespace+"/"+w.Name] = id
		v := g.vertices[id]
		mode := string(w.DefaultMode)
		if v == nil {
			v = &Vertex{ID: id, Kind: KindWorkload, Namespace: w.Namespace, Name: name, InModel: true,
				App: w.Labels["app"], Version: w.Labels["version"], MTLS: mode, OutsideMesh: w.OutsideMesh}
			g.vertices[id] = v
			nodes[id] = map[string]bool{}
		} else if v.MTLS != mode {
			v.MTLS = "mixed"
		}
		v.Pods++
		if w.Node != "" {
			nodes[id][w.Node] = true
		}
	}
	for id, ns := range nodes {
		for n := range ns {
			g.vertices[id].Nodes = append(g.vertices[id].Nodes, n)
		}
		slices.Sort(g.vertices[id].Nodes)
	}
	for _, s := range m.Services {
		for _, ep := range s.Endpoints {
			if id, ok := pods[ep.Workload]; ok {
				g.edge(serviceID(s.Hostname), id)
			}
		}
	}
}

// destKey names a sample's destination for the choice of reporter.
func destKey(l map[string]string) string {
	if known(l["destination_service"]) {
		return l["destination_service"]
	}
	return workloadID(l["destination_workload_namespace"], l["destination_workload"])
}

// ends are a sample's vertices, not created yet: source ("unknown"
// outside the mesh), service ("" when not known), destination workload
// ("" when not known).
type ends struct {
	src, svc, dst string
	l             map[string]string
}

func endsOf(l map[string]string) ends {
	e := ends{src: unknownID, l: l}
	if known(l["source_workload"]) {
		e.src = workloadID(l["source_workload_namespace"], l["source_workload"])
	}
	if host := l["destination_service"]; known(host) {
		e.svc = serviceID(host)
	}
	if known(l["destination_workload"]) {
		e.dst = workloadID(l["destination_workload_namespace"], l["destination_workload"])
	}
	return e
}

// ensure creates the vertex id of a sample's ends if it is new (one
// seen only in the metrics).
func (g *graphBuilder) ensure(id string, e ends) {
	if g.vertices[id] != nil {
		return
	}
	l := e.l
	var v *Vertex
	switch id {
	case unknownID:
		v = &Vertex{ID: id, Kind: KindUnknown, Name: "unknown"}
	case e.src:
		v = &Vertex{ID: id, Kind: KindWorkload, Namespace: l["source_workload_namespace"], Name: l["source_workload"],
			App: knownOr(l["source_app"]), Version: knownOr(l["source_version"])}
	case e.svc:
		host := l["destination_service"]
		name := l["destination_service_name"]
		if !known(name) {
			name = host
		}
		v = &Vertex{ID: id, Kind: KindService, Namespace: knownOr(l["destination_service_namespace"]), Name: name, Hostname: host}
	case e.dst:
		v = &Vertex{ID: id, Kind: KindWorkload, Namespace: l["destination_workload_namespace"], Name: l["destination_workload"],
			App: knownOr(l["destination_app"]), Version: knownOr(l["destination_version"])}
	}
	g.vertices[id] = v
}

func knownOr(v string) string {
	if known(v) {
		return v
	}
	return ""
}

// hop is an edge a sample counts on: rated (its requests, errors,
// latency and bytes count there) or only for its mTLS.
type hop struct {
	e     *edgeAgg
	rated bool
}

// hops are the edges a sample counts on (see buildGraph).
func (g *graphBuilder) hops(l map[string]string) []hop {
	e := endsOf(l)
	var out []hop
	add := func(from, to string, rated bool) {
		if from == "" || to == "" {
			return
		}
		g.ensure(from, e)
		g.ensure(to, e)
		out = append(out, hop{g.edge(from, to), rated})
	}
	// The first hop ends at the service, or at the workload when the
	// service is not known (a call to a pod's address).
	first := e.svc
	if first == "" {
		first = e.dst
		if first == "" {
			first = unknownID
		}
	}
	switch l["reporter"] {
	case "source":
		add(e.src, first, true)
		if e.svc != "" && !g.destReported[destKey(l)] {
			add(e.svc, e.dst, true)
		}
	case "destination":
		if e.svc != "" {
			add(e.svc, e.dst, true)
		}
		outside := e.src == unknownID && !known(l["source_principal"])
		switch {
		case outside || e.src != unknownID && !g.srcReported[e.src]:
			add(e.src, first, true)
		case e.src != unknownID:
			add(e.src, first, false)
		}
	}
	return out
}

func (g *graphBuilder) addTraffic(a agentWindow) {
	// What was ever seen: edges, protocols, mTLS.
	for _, name := range []string{metricRequests, metricTCPOpened} {
		proto := "http"
		if name == metricTCPOpened {
			proto = "tcp"
		}
		for _, s := range a.cur[name] {
			p := s.Labels["connection_security_policy"]
			for _, h := range g.hops(s.Labels) {
				if known(p) {
					h.e.mtlsSeen[p] = true
				}
				if h.rated {
					h.e.Observed = true
					h.e.protocols[proto] = true
					h.e.reporters[s.Labels["reporter"]] = true
				}
			}
		}
	}
	// How the TCP edges' tunnel connections move their bytes, now.
	for _, s := range a.cur[metricTCPOffloaded] {
		mode := s.Labels["mode"]
		if mode == "" {
			continue
		}
		// The gauge has no principals; a tunnel's peer is always a
		// verified mesh identity, so an unknown source workload is
		// inside the mesh (hops draws no edge from outside for it).
		l := s.Labels
		if l["reporter"] == "destination" && !known(l["source_workload"]) {
			l = maps.Clone(l)
			l["source_principal"] = "verified"
		}
		for _, h := range g.hops(l) {
			if !h.rated {
				continue
			}
			h.e.offloadSeen[mode] = true
			if s.Value > 0 {
				if h.e.OffloadConnections == nil {
					h.e.OffloadConnections = map[string]float64{}
				}
				h.e.OffloadConnections[mode] += s.Value
			}
		}
	}
	if a.inc == nil || a.dt <= 0 {
		return
	}
	for _, s := range a.inc[metricRequests] {
		if s.Value == 0 {
			continue
		}
		r := s.Value / a.dt
		class := codeClass(s.Labels["response_code"])
		p := s.Labels["connection_security_policy"]
		for _, h := range g.hops(s.Labels) {
			if known(p) {
				h.e.mtlsRate[p] += r
			}
			if !h.rated {
				continue
			}
			h.e.RPS += r
			if h.e.Codes == nil {
				h.e.Codes = map[string]float64{}
			}
			h.e.Codes[class] += r
			if class == "5xx" || class == "0" {
				h.e.errs += r
			}
		}
	}
	for _, s := range a.inc[metricDurationBucket] {
		b := Sample{Labels: map[string]string{"le": s.Labels["le"]}, Value: s.Value}
		for _, h := range g.hops(s.Labels) {
			if h.rated {
				h.e.buckets = append(h.e.buckets, b)
			}
		}
	}
	for _, name := range []string{metricTCPSent, metricTCPReceived} {
		for _, s := range a.inc[name] {
			if s.Value == 0 {
				continue
			}
			for _, h := range g.hops(s.Labels) {
				if h.rated {
					h.e.BytesPerSecond += s.Value / a.dt
				}
			}
		}
	}
	for _, s := range a.inc[metricTCPOpened] {
		if s.Value == 0 {
			continue
		}
		p := s.Labels["connection_security_policy"]
		for _, h := range g.hops(s.Labels) {
			if known(p) {
				h.e.mtlsRate[p] += s.Value / a.dt
			}
			if h.rated {
				h.e.ConnectionsPerSecond += s.Value / a.dt
			}
		}
	}
}

// mtlsState sums up the policies seen: in the interval if any traffic
// said, else ever.
func mtlsState(rate map[string]float64, seen map[string]bool) string {
	set := map[string]bool{}
	for p, r := range rate {
		if r > 0 {
			set[p] = true
		}
	}
	if len(set) == 0 {
		set = seen
	}
	switch {
	case set["mutual_tls"] && set["none"]:
		return "mixed"
	case set["mutual_tls"]:
		return "mutual_tls"
	case set["none"]:
		return "none"
	}
	return "unknown"
}

// offloadState is one mode of a set, or "mixed".
func offloadState[V any](modes map[string]V) string {
	if len(modes) == 1 {
		for m := range modes {
			return m
		}
	}
	return "mixed"
}

func (g *graphBuilder) finish() Graph {
	out := Graph{Vertices: make([]Vertex, 0, len(g.vertices)), Edges: make([]Edge, 0, len(g.edges))}
	for _, e := range g.edges {
		for p := range e.protocols {
			e.Protocols = append(e.Protocols, p)
		}
		slices.Sort(e.Protocols)
		if e.RPS > 0 {
			e.ErrorRate = e.errs / e.RPS
		}
		if bs, err := Buckets(e.buckets); err == nil {
			if q := Quantile(0.99, bs); !math.IsNaN(q) {
				e.P99Ms = &q
			}
		}
		e.MTLS = mtlsState(e.mtlsRate, e.mtlsSeen)
		switch {
		case e.protocols["http"] && !e.protocols["tcp"]:
			e.Offload = "userspace"
		case len(e.OffloadConnections) > 0:
			e.Offload = offloadState(e.OffloadConnections)
		case len(e.offloadSeen) > 0:
			e.Offload = offloadState(e.offloadSeen)
		}
		switch {
		case e.reporters["destination"] && e.reporters["source"]:
			e.Reporter = "both"
		case e.reporters["destination"]:
			e.Reporter = "destination"
		case e.reporters["source"]:
			e.Reporter = "source"
		}
		if v := g.vertices[e.From]; v != nil {
			v.RPSOut += e.RPS
		}
		if v := g.vertices[e.To]; v != nil {
			v.RPSIn += e.RPS
		}
		out.Edges = append(out.Edges, e.Edge)
	}
	for _, v := range g.vertices {
		out.Vertices = append(out.Vertices, *v)
	}
	slices.SortFunc(out.Vertices, func(a, b Vertex) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(out.Edges, func(a, b Edge) int { return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To)) })
	return out
}
