package agent

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/fibmesh/fibmesh/agent/reconcile"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// Istio's standard metrics (https://istio.io/latest/docs/reference/config/metrics/),
// with Istio's names, label names and values: a platform's Prometheus
// rules and Grafana dashboards written for Istio read them unchanged.
// The outbound side of a request or connection reports it as
// reporter="source", the inbound side as reporter="destination"; a
// request between two meshed pods is counted twice, once by each agent,
// as Istio's two sidecars do.
//
// What a side knows of its own pod comes from its node's flow table
// (the pod's workload and the labels Istio reads: podWorkload); of the
// other side, from the peer's verified SPIFFE ID (principal, namespace)
// and from the metadata the agents exchange on the tunnel
// (proxy.WorkloadMeta: workload name, app, version, canonical service
// and revision, cluster): both ways for HTTP (a header on the request
// and on the response), from caller to called for TCP (a TLV of the
// tunnel's PROXY header, which goes one way). Where the called side
// says nothing back (TCP; a request that got no answer), the caller
// names it as Istio's client-side telemetry does, from the endpoint's
// EDS metadata (edsWorkload); where EDS says nothing, a pod of its own
// node from its flow table (localPodByIP). A label whose value is not
// known is "unknown", as in Istio. No label carries a pod IP, a path or anything else that
// grows without bound: services come from the xDS cluster chosen or the
// mesh's own host names, never from a client's free text.

// Values of the labels.
const (
	reporterSource      = "source"
	reporterDestination = "destination"
	unknown             = "unknown"
	// DefaultClusterID is the cluster the agent's workloads are in when
	// --cluster-id is not set: Istio's default cluster ID.
	DefaultClusterID = "Kubernetes"
	// passthroughService is Istio's destination_service_name of a
	// connection to a destination outside the mesh.
	passthroughService = "PassthroughCluster"
)

// istioLabels are the labels of every istio_* metric, in order;
// istio_requests_total and the request histograms add requestLabels,
// the TCP metrics tcpLabels.
var istioLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"request_protocol", "response_flags", "connection_security_policy",
}

var (
	requestLabels = append(append([]string(nil), istioLabels...), "response_code", "grpc_response_status")
	tcpLabels     = istioLabels
)

// offloadLabels are the labels of fibmesh_agent_tcp_offloaded_connections:
// the edge (Istio's labels of its two workloads and the service, no
// addresses) and the offload mode; offloadLabelIndex their positions in
// tcpLabels (mode excepted).
var (
	offloadLabels = []string{"reporter", "source_workload", "source_workload_namespace",
		"destination_workload", "destination_workload_namespace", "destination_service", "mode"}
	offloadLabelIndex = func() []int {
		idx := make([]int, len(offloadLabels)-1)
		for i, l := range offloadLabels[:len(offloadLabels)-1] {
			idx[i] = slices.Index(tcpLabels, l)
		}
		return idx
	}()
)

// Istio's histogram buckets: milliseconds for durations, powers of ten
// for sizes.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	bytesBuckets    = []float64{1, 10, 100, 1000, 10000, 100000, 1e6, 1e7, 1e8, 1e9}
)

// workload is one side of a request or connection, as the labels say
// it.
type workload struct {
	name, namespace, principal, app, version, cluster string
	// canonicalService, canonicalRevision: as the workload's agent
	// derived them (workloadMeta); "" when it did not say.
	canonicalService, canonicalRevision string
}

// labelValues is one side's eight labels (workload, namespace,
// principal, app, version, canonical service and revision, cluster),
// "unknown" where not known. A canonical service or revision its agent
// did not say is, as Istio's, the app, else the workload name; the
// version, else "latest".
func (w workload) labelValues() []string {
	cs, cr := cmp.Or(w.canonicalService, w.app, w.name), cmp.Or(w.canonicalRevision, w.version)
	if cr == "" && w.name != "" {
		cr = "latest"
	}
	return []string{orUnknown(w.name), orUnknown(w.namespace), orUnknown(w.principal), orUnknown(w.app),
		orUnknown(w.version), orUnknown(cs), orUnknown(cr), orUnknown(w.cluster)}
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

// service is the destination service's three labels.
type service struct{ host, name, namespace string }

// serviceOfCluster is the service an outbound cluster is for, from its
// name ("outbound|<port>|<subset>|<host>", docs/xds.md): the host, and
// for a Kubernetes Service host (<name>.<namespace>.svc.<domain>) its
// name and namespace; for another host (a ServiceEntry) the host as
// name. The passthrough cluster is Istio's "PassthroughCluster".
func serviceOfCluster(cluster string) service {
	if cluster == "outbound-passthrough" || cluster == passthroughService {
		return service{name: passthroughService}
	}
	parts := strings.Split(cluster, "|")
	if len(parts) != 4 || parts[0] != "outbound" || parts[3] == "" {
		return service{}
	}
	return serviceOfHost(parts[3])
}

// serviceOfHost splits a mesh host name into Istio's three labels.
func serviceOfHost(host string) service {
	if name, rest, ok := strings.Cut(host, "."); ok {
		if ns, dom, ok := strings.Cut(rest, "."); ok && strings.HasPrefix(dom, "svc.") {
			return service{host: host, name: name, namespace: ns}
		}
	}
	return service{host: host, name: host}
}

// serviceOfAuthority is the mesh service an inbound request was
// addressed to: its authority (host[:port]) completed as a client in
// namespace ns resolves it ("reviews", "reviews.production",
// "reviews.production.svc", the FQDN), and only if it is one of the
// mesh's hosts, so that a client cannot invent label values.
func serviceOfAuthority(authority, ns string, hosts map[string][]netip.Addr) service {
	h := strings.ToLower(authority)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return service{}
	}
	for _, c := range []string{h, h + ".svc.cluster.local", h + ".cluster.local", h + "." + ns + ".svc.cluster.local"} {
		if _, ok := hosts[c]; ok {
			return serviceOfHost(c)
		}
	}
	return service{}
}

// labelValues is the service's three labels, "unknown" where not known.
func (s service) labelValues() []string {
	return []string{orUnknown(s.host), orUnknown(s.name), orUnknown(s.namespace)}
}

// namespaceOf is the namespace of a SPIFFE ID of the mesh's form
// (spiffe://<td>/ns/<ns>/sa/<sa>); "" otherwise.
func namespaceOf(principal string) string {
	id, err := spiffeid.FromString(principal)
	if err != nil {
		return ""
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) == 4 && segs[0] == "ns" && segs[2] == "sa" {
		return segs[1]
	}
	return ""
}

// telemetry turns the proxy's requests and connections into Istio's
// metrics and the access log.
type telemetry struct {
	cluster string
	// principal returns a local pod's SPIFFE ID ("" when it has no SVID).
	principal func(namespace, pod string) string
	// workload returns what the flow table says of a local pod's workload
	// (podWorkload); nil: only its name is known.
	workload func(namespace, pod string) proxy.WorkloadMeta
	// localPodByIP returns the local pod with address ip, if the flow
	// table lists one; nil: none is known.
	localPodByIP func(ip netip.Addr) (namespace, pod string, ok bool)
	// snapshot is the current xDS config (mesh hosts, endpoints).
	snapshot func() *xdsconf.Snapshot
	// conns is the proxy's connection table, read at each scrape for the
	// bytes of connections still open.
	conns func() []proxy.ConnInfo
	// log is the access log; nil when off.
	log *accessLog

	requests                   *prometheus.CounterVec
	duration, reqSize, resSize *prometheus.HistogramVec
	tcpSent, tcpReceived       *prometheus.CounterVec
	tcpOpened, tcpClosed       *prometheus.CounterVec
	// tcpOffloaded are the L4 tunnel connections open now, by edge and
	// offload mode.
	tcpOffloaded *prometheus.GaugeVec

	mu sync.Mutex
	// tcp are the established TCP connections being counted, by ID.
	tcp map[uint64]*tcpConn

	seriesMu  sync.RWMutex
	reqSeries map[string]*requestSeries // by the label values joined (series)
}

// tcpConn is a TCP connection's labels and the bytes already counted.
type tcpConn struct {
	labels            []string
	counted           [2]uint64 // received (request direction), sent (response direction)
	received, sentCtr prometheus.Counter
	// offloaded is its fibmesh_agent_tcp_offloaded_connections series
	// while it is counted there (an L4 tunnel); nil otherwise.
	offloaded prometheus.Gauge
}

func newTelemetry(cluster string) *telemetry {
	if cluster == "" {
		cluster = DefaultClusterID
	}
	return &telemetry{
		cluster:   cluster,
		tcp:       map[uint64]*tcpConn{},
		reqSeries: map[string]*requestSeries{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total",
			Help: "HTTP requests on L7 ports, reported by both sides (reporter=source: the calling pod's agent; destination: the called pod's), as Istio's."}, requestLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds",
			Help: "Duration of HTTP requests in milliseconds, from the request's arrival at the proxy to the end of its response, as Istio's.", Buckets: durationBuckets}, requestLabels),
		reqSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_bytes",
			Help: "Size of HTTP requests in bytes (head and body), as Istio's.", Buckets: bytesBuckets}, requestLabels),
		resSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_response_bytes",
			Help: "Size of HTTP responses in bytes (head and body), as Istio's.", Buckets: bytesBuckets}, requestLabels),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_sent_bytes_total",
			Help: "Bytes of TCP connections in the response direction (from the called side to the caller), offloaded connections included (the kernel byte path's counters), counted as they flow (read at each scrape), as Istio's."}, tcpLabels),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_received_bytes_total",
			Help: "Bytes of TCP connections in the request direction (from the caller to the called side), offloaded connections included, counted as they flow (read at each scrape), as Istio's."}, tcpLabels),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_opened_total",
			Help: "TCP connections established (relayed in userspace or offloaded), as Istio's."}, tcpLabels),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total",
			Help: "TCP connections that ended, as Istio's."}, tcpLabels),
		tcpOffloaded: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fibmesh_agent_tcp_offloaded_connections",
			Help: "L4 tunnel (mTLS) connections open now, by edge (Istio's reporter, workload, namespace and destination_service labels) and how their bytes move: mode splice or sockmap (offloaded: kTLS and the kernel byte path), userspace (kept in the slow path; fibmesh_agent_proxy_offload_decisions_total and the connection table say why)."}, offloadLabels),
	}
}

// collectors returns the metrics for the agent's registry: the request
// metrics, and the TCP ones behind a collector that brings open
// connections' bytes up to date first.
func (t *telemetry) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.requests, t.duration, t.reqSize, t.resSize, tcpCollector{t}, t.tcpOffloaded}
}

// tcpCollector collects the istio_tcp_* metrics, after adding what the
// open connections relayed since the last scrape.
type tcpCollector struct{ t *telemetry }

func (c tcpCollector) Describe(ch chan<- *prometheus.Desc) {
	c.t.tcpSent.Describe(ch)
	c.t.tcpReceived.Describe(ch)
	c.t.tcpOpened.Describe(ch)
	c.t.tcpClosed.Describe(ch)
}

func (c tcpCollector) Collect(ch chan<- prometheus.Metric) {
	c.t.refresh()
	c.t.tcpSent.Collect(ch)
	c.t.tcpReceived.Collect(ch)
	c.t.tcpOpened.Collect(ch)
	c.t.tcpClosed.Collect(ch)
}

// localWorkload is the local pod's side: meta, what the proxy was told
// of it; when that is nothing (a TCP connection), the flow table's.
func (t *telemetry) localWorkload(pod string, meta proxy.WorkloadMeta) workload {
	ns, name, _ := strings.Cut(pod, "/")
	if meta.IsZero() && t.workload != nil {
		meta = t.workload(ns, name)
	}
	w := workload{name: meta.Name, namespace: meta.Namespace, app: meta.App, version: meta.Version, cluster: meta.Cluster,
		canonicalService: meta.CanonicalService, canonicalRevision: meta.CanonicalRevision}
	if w.name == "" {
		w.name = fibv1.WorkloadName(name, nil)
	}
	if w.namespace == "" {
		w.namespace = ns
	}
	if w.cluster == "" {
		w.cluster = t.cluster
	}
	if t.principal != nil {
		w.principal = t.principal(ns, name)
	}
	return w
}

// peerWorkload is the other side: its verified SPIFFE ID, and what its
// agent said of it (HTTP). A peer verified over mTLS is of this mesh,
// hence of its cluster, unless its agent said otherwise.
func (t *telemetry) peerWorkload(principal string, meta proxy.WorkloadMeta) workload {
	w := workload{name: meta.Name, namespace: meta.Namespace, principal: principal, app: meta.App, version: meta.Version, cluster: meta.Cluster,
		canonicalService: meta.CanonicalService, canonicalRevision: meta.CanonicalRevision}
	if w.namespace == "" {
		w.namespace = namespaceOf(principal)
	}
	if w.cluster == "" && principal != "" {
		w.cluster = t.cluster
	}
	return w
}

// destinationService is the service of a request or connection: the
// outbound cluster's; inbound, the mesh host the request named, else
// the service whose endpoint the local pod is.
func (t *telemetry) destinationService(direction, cluster, authority, ns string, dst netip.AddrPort) service {
	if direction == proxy.DirectionOutbound {
		return serviceOfCluster(cluster)
	}
	snap := t.snapshot()
	if snap == nil {
		return service{}
	}
	if authority != "" {
		if s := serviceOfAuthority(authority, ns, snap.Hosts); s.host != "" {
			return s
		}
	}
	if cl := snap.Endpoints[dst.Addr()]; cl != nil {
		return serviceOfCluster(cl.Name)
	}
	return service{}
}

// requestLabelValues are a request's label values, in requestLabels'
// order.
func (t *telemetry) requestLabelValues(ri *proxy.RequestInfo) []string {
	local := t.localWorkload(ri.Pod, ri.Workload)
	peerMeta := ri.PeerWorkload
	if peerMeta.IsZero() {
		peerMeta = edsWorkload(ri.Direction, ri.Peer, ri.EndpointWorkload)
	}
	peer := t.peerWorkload(ri.Peer, peerMeta)
	ns, _, _ := strings.Cut(ri.Pod, "/")
	svc := t.destinationService(ri.Direction, ri.Cluster, ri.Authority, ns, ri.Destination)
	proto := "http"
	if ri.GRPC {
		proto = "grpc"
	}
	flags := ri.Flags
	if flags == "" {
		flags = "-"
	}
	return sideLabels(ri.Direction, local, peer, svc, proto, flags, ri.MTLS, strconv.Itoa(ri.Code), ri.GRPCStatus)
}

// edsWorkload is what names the called workload on the caller when the
// peer's agent said nothing (an L4 tunnel: the PROXY header goes one
// way; a request that got no answer): what EDS says of the endpoint
// (Istio's endpoint metadata, proxy.Event's and RequestInfo's
// EndpointWorkload), as Istio's client-side telemetry reads it. Zero
// inbound, and when the tunnel verified an identity of another
// namespace than EDS says: the verified identity wins.
func edsWorkload(direction, principal string, eds proxy.WorkloadMeta) proxy.WorkloadMeta {
	if direction != proxy.DirectionOutbound || eds.IsZero() {
		return proxy.WorkloadMeta{}
	}
	if principal != "" && namespaceOf(principal) != eds.Namespace {
		return proxy.WorkloadMeta{}
	}
	return eds
}

// connPeerMeta is what names the other side of a connection: what its
// agent said (proxy.Event's PeerWorkload: inbound, the tunnel's PROXY
// header), else what EDS says of the endpoint (edsWorkload).
func connPeerMeta(ev *proxy.Event) proxy.WorkloadMeta {
	if !ev.PeerWorkload.IsZero() {
		return ev.PeerWorkload
	}
	return edsWorkload(ev.Conn.Direction, ev.Conn.PeerIdentity, ev.EndpointWorkload)
}

// connLabelValues are a TCP connection's label values, in tcpLabels'
// order; peerMeta is what names the peer's workload (connPeerMeta);
// where that is nothing (EDS without workload metadata), a called pod
// of this node is named from the flow table (endpointWorkload).
func (t *telemetry) connLabelValues(c *proxy.ConnInfo, peerMeta proxy.WorkloadMeta) []string {
	local := t.localWorkload(c.Pod, proxy.WorkloadMeta{})
	if peerMeta.IsZero() {
		peerMeta = t.endpointWorkload(c)
	}
	peer := t.peerWorkload(c.PeerIdentity, peerMeta)
	ns, _, _ := strings.Cut(c.Pod, "/")
	svc := t.destinationService(c.Direction, c.Cluster, "", ns, c.Destination)
	if c.Mode == proxy.ModePassthrough {
		svc = service{name: passthroughService}
	}
	return sideLabels(c.Direction, local, peer, svc, "tcp", "-", connMTLS(c))
}

// endpointWorkload is the workload of an outbound tunnel's endpoint
// when it is a pod of this node (the flow table's entry for its IP, if
// the pod's SPIFFE ID is the one the tunnel verified); zero otherwise:
// the PROXY header carries the caller's workload to the called agent,
// and nothing comes back.
func (t *telemetry) endpointWorkload(c *proxy.ConnInfo) proxy.WorkloadMeta {
	if c.Direction != proxy.DirectionOutbound || c.Mode != proxy.ModeTunnel || !c.Endpoint.IsValid() || t.localPodByIP == nil {
		return proxy.WorkloadMeta{}
	}
	ns, pod, ok := t.localPodByIP(c.Endpoint.Addr())
	if !ok || t.principal == nil || t.principal(ns, pod) != c.PeerIdentity {
		return proxy.WorkloadMeta{}
	}
	if t.workload == nil {
		return proxy.WorkloadMeta{Name: fibv1.WorkloadName(pod, nil), Namespace: ns}
	}
	return t.workload(ns, pod)
}

// connMTLS reports whether a connection's mesh side is mTLS: the tunnel
// it opened (outbound) or came on (inbound).
func connMTLS(c *proxy.ConnInfo) bool {
	if c.Direction == proxy.DirectionOutbound {
		return c.Mode == proxy.ModeTunnel
	}
	return c.Listener == "inbound"
}

// sideLabels orders the labels: outbound, the local pod is the source;
// inbound, the destination. Istio's source reporter does not know the
// connection's security (it says "unknown"); the destination's says
// mutual_tls or none.
func sideLabels(direction string, local, peer workload, svc service, proto, flags string, mtls bool, extra ...string) []string {
	reporter, src, dst := reporterSource, local, peer
	sec := unknown
	if direction == proxy.DirectionInbound {
		reporter, src, dst = reporterDestination, peer, local
		sec = "none"
		if mtls {
			sec = "mutual_tls"
		}
	}
	v := make([]string, 0, len(istioLabels)+len(extra))
	v = append(v, reporter)
	v = append(v, src.labelValues()...)
	v = append(v, dst.labelValues()...)
	v = append(v, svc.labelValues()...)
	v = append(v, proto, flags, sec)
	return append(v, extra...)
}

// requestSeries are one label set's request metrics.
type requestSeries struct {
	labels             []string
	requests           prometheus.Counter
	duration, req, res prometheus.Observer
}

// series returns the request metrics of a label set. The client
// library hashes the 25 label values byte by byte at every lookup; one
// map lookup by the joined values replaces four of them
// (BenchmarkTelemetryRequest: 1.4-5 µs and 9 allocations per request on
// the shared 2-core machine). The map holds what the metrics hold: one
// entry per series, bounded as they are.
func (t *telemetry) series(lv []string) *requestSeries {
	key := strings.Join(lv, "\xff")
	t.seriesMu.RLock()
	s := t.reqSeries[key]
	t.seriesMu.RUnlock()
	if s != nil {
		return s
	}
	s = &requestSeries{labels: lv, requests: t.requests.WithLabelValues(lv...), duration: t.duration.WithLabelValues(lv...),
		req: t.reqSize.WithLabelValues(lv...), res: t.resSize.WithLabelValues(lv...)}
	t.seriesMu.Lock()
	if old := t.reqSeries[key]; old != nil {
		s = old
	} else {
		t.reqSeries[key] = s
	}
	t.seriesMu.Unlock()
	return s
}

// request counts an HTTP request and logs it.
func (t *telemetry) request(ri *proxy.RequestInfo) {
	s := t.series(t.requestLabelValues(ri))
	s.requests.Inc()
	s.duration.Observe(float64(ri.Duration.Microseconds()) / 1000)
	s.req.Observe(float64(ri.RequestHeaderBytes + ri.BytesReceived))
	s.res.Observe(float64(ri.ResponseHeaderBytes + ri.BytesSent))
	if t.log != nil {
		t.log.request(ri, s.labels)
	}
}

// isTCPMode reports whether a connection is relayed as bytes (Istio's
// TCP metrics), not served request by request.
func isTCPMode(mode string) bool {
	return mode == proxy.ModeTunnel || mode == proxy.ModePlaintext || mode == proxy.ModePassthrough
}

// event counts TCP connections as they open and close, and logs them.
func (t *telemetry) event(ev proxy.Event) {
	c := &ev.Conn
	switch ev.Kind {
	case proxy.EventEstablished:
		if !isTCPMode(c.Mode) {
			return
		}
		tc := t.track(c, connPeerMeta(&ev))
		t.tcpOpened.WithLabelValues(tc.labels...).Inc()
	case proxy.EventClosed:
		if !isTCPMode(c.Mode) {
			return
		}
		t.mu.Lock()
		tc := t.tcp[c.ID]
		delete(t.tcp, c.ID)
		t.mu.Unlock()
		if tc == nil {
			// Its EventEstablished was not seen (the agent's hook was set
			// after it opened): counted from here.
			tc = t.newTCPConn(c, connPeerMeta(&ev))
			t.tcpOpened.WithLabelValues(tc.labels...).Inc()
		}
		t.mu.Lock()
		tc.add(c)
		t.mu.Unlock()
		tc.untrackOffload()
		t.tcpClosed.WithLabelValues(tc.labels...).Inc()
		if t.log != nil {
			t.log.conn(c, tc.labels, "")
		}
	case proxy.EventRefused, proxy.EventDenied:
		// Refused before it was established: nothing was counted. (Were
		// it tracked, it ends here, so that the table cannot grow.)
		t.mu.Lock()
		tc := t.tcp[c.ID]
		delete(t.tcp, c.ID)
		if tc != nil {
			tc.add(c)
		}
		t.mu.Unlock()
		if tc != nil {
			tc.untrackOffload()
			t.tcpClosed.WithLabelValues(tc.labels...).Inc()
		}
		if t.log != nil {
			t.log.conn(c, t.connLabelValues(c, connPeerMeta(&ev)), connFlags(ev))
		}
	}
}

// connFlags are Envoy's response flags of a connection refused or denied.
func connFlags(ev proxy.Event) string {
	if ev.Kind == proxy.EventDenied {
		return "RBAC"
	}
	switch ev.Reason {
	case proxy.ReasonNoChain, proxy.ReasonNoConfig, proxy.ReasonPassthroughOff:
		return "NR"
	case proxy.ReasonNoCluster:
		return "NC"
	case proxy.ReasonNoEndpoint:
		return "UH"
	case proxy.ReasonOverflow, proxy.ReasonOverload:
		return "UO"
	case proxy.ReasonUpstream, proxy.ReasonUpstreamApp:
		return "UF"
	case proxy.ReasonAborted:
		return "DC"
	}
	return "-"
}

// track starts counting an established TCP connection; an L4 tunnel's
// (one with an offload mode) also in fibmesh_agent_tcp_offloaded_connections
// until it ends.
func (t *telemetry) track(c *proxy.ConnInfo, peerMeta proxy.WorkloadMeta) *tcpConn {
	tc := t.newTCPConn(c, peerMeta)
	t.mu.Lock()
	if old := t.tcp[c.ID]; old != nil {
		t.mu.Unlock()
		return old
	}
	t.tcp[c.ID] = tc
	tc.add(c)
	t.mu.Unlock()
	if c.Offload != "" {
		lv := make([]string, 0, len(offloadLabels))
		for _, i := range offloadLabelIndex {
			lv = append(lv, tc.labels[i])
		}
		tc.offloaded = t.tcpOffloaded.WithLabelValues(append(lv, c.Offload)...)
		tc.offloaded.Inc()
	}
	return tc
}

// untrackOffload takes an ended connection out of
// fibmesh_agent_tcp_offloaded_connections (once: the caller took it out
// of the table).
func (tc *tcpConn) untrackOffload() {
	if tc.offloaded != nil {
		tc.offloaded.Dec()
		tc.offloaded = nil
	}
}

func (t *telemetry) newTCPConn(c *proxy.ConnInfo, peerMeta proxy.WorkloadMeta) *tcpConn {
	lv := t.connLabelValues(c, peerMeta)
	return &tcpConn{labels: lv, received: t.tcpReceived.WithLabelValues(lv...), sentCtr: t.tcpSent.WithLabelValues(lv...)}
}

// add counts what a connection relayed since it was last counted
// (t.mu held): the request direction is the caller's bytes, the local
// app's outbound (BytesOut) and the peer's inbound (BytesIn).
func (tc *tcpConn) add(c *proxy.ConnInfo) {
	req, resp := c.BytesOut, c.BytesIn
	if c.Direction == proxy.DirectionInbound {
		req, resp = c.BytesIn, c.BytesOut
	}
	if req > tc.counted[0] {
		tc.received.Add(float64(req - tc.counted[0]))
		tc.counted[0] = req
	}
	if resp > tc.counted[1] {
		tc.sentCtr.Add(float64(resp - tc.counted[1]))
		tc.counted[1] = resp
	}
}

// refresh adds what open TCP connections relayed since they were last
// counted; offloaded connections' bytes are the kernel byte path's
// counters (proxy.ConnInfo), so a connection that left userspace still
// counts.
func (t *telemetry) refresh() {
	if t.conns == nil {
		return
	}
	conns := t.conns()
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range conns {
		if tc := t.tcp[conns[i].ID]; tc != nil {
			tc.add(&conns[i])
		}
	}
}

// newTelemetry sets up Istio's metrics and the access log (Config's
// ClusterID, AccessLog, AccessLogFormat).
func (a *Agent) newTelemetry() error {
	log, err := openAccessLog(a.cfg.AccessLog, a.cfg.AccessLogFormat)
	if err != nil {
		return err
	}
	t := newTelemetry(a.cfg.ClusterID)
	t.log = log
	t.snapshot = a.conf.Snapshot
	t.workload = a.podWorkload
	t.localPodByIP = a.localPodByIP
	t.principal = func(ns, pod string) string {
		if r := a.svids.Get(ns, pod); r != nil {
			if s := r.Current(); s != nil {
				return s.ID.String()
			}
		}
		return ""
	}
	a.tel = t
	return nil
}

// allCollectors are collectors and the access log's counter.
func (t *telemetry) allCollectors() []prometheus.Collector {
	cs := t.collectors()
	if t.log != nil {
		cs = append(cs, t.log.lines)
	}
	return cs
}

// podWorkload is the proxy's Workload: what the agent knows of a local
// pod's workload, from its node's flow table (workloadMeta). A pod the
// table does not list yet is named from its name alone.
func (a *Agent) podWorkload(namespace, pod string) proxy.WorkloadMeta {
	p := reconcile.Pod{Namespace: namespace, Name: pod}
	if d := a.rec.Desired(); d != nil { // nil before the first flow table
		if fp, ok := d.Pods[p.Key()]; ok {
			p = fp
		}
	}
	return workloadMeta(p, a.tel.cluster)
}

// localPodByIP is the local pod with address ip in the node's flow
// table, if one has it. The table lists the node's pods (tens to a few
// hundred), and this runs once per outbound L4 tunnel connection.
func (a *Agent) localPodByIP(ip netip.Addr) (namespace, pod string, ok bool) {
	d := a.rec.Desired()
	if d == nil {
		return "", "", false
	}
	ip = ip.Unmap()
	for _, p := range d.Pods {
		if p.IP == ip {
			return p.Namespace, p.Name, true
		}
	}
	return "", "", false
}

// workloadMeta is what Istio's metrics say of a local pod, from what its
// node's flow table says of it (reconcile.Pod: LocalPod's workload and
// labels), as Istio derives it (istio/proxy's peer metadata, Istio's
// injector for the canonical labels):
//   - workload: the controller's name for it (LocalPod.workload), else
//     fibv1.WorkloadName of the pod's name;
//   - app: "app.kubernetes.io/name", else "app";
//   - version: "app.kubernetes.io/version", else "version";
//   - canonical service: "service.istio.io/canonical-name", else the app
//     labels in that order, else the workload;
//   - canonical revision: "service.istio.io/canonical-revision", else the
//     version labels in that order, else "latest".
//
// These are xdsapi.NamedWorkload's rules, the ones the controller names
// EDS endpoints by. An absent or empty label is not known: its metric
// label says "unknown".
func workloadMeta(p reconcile.Pod, cluster string) proxy.WorkloadMeta {
	w := xdsapi.NamedWorkload(cmp.Or(p.Workload, fibv1.WorkloadName(p.Name, p.Labels)), p.Namespace, p.Labels)
	return proxy.WorkloadMeta{Name: w.Name, Namespace: w.Namespace, App: w.App, Version: w.Version,
		CanonicalService: w.CanonicalService, CanonicalRevision: w.CanonicalRevision, Cluster: cluster}
}

// onProxyEvent is the proxy's Events hook: Istio's TCP metrics and the
// access log, then the agent's own log.
func (a *Agent) onProxyEvent(ev proxy.Event) {
	a.tel.event(ev)
	a.proxyEvent(ev)
}

// onProxyRequest is the proxy's Requests hook: Istio's request metrics
// and the access log, then the agent's own log.
func (a *Agent) onProxyRequest(ri proxy.RequestInfo) {
	a.tel.request(&ri)
	a.proxyRequest(ri)
}

// ReopenAccessLog opens the access log file again (--access-log PATH),
// after a rotation renamed it; a no-op for stdout, stderr or none.
func (a *Agent) ReopenAccessLog() error { return a.tel.log.Reopen() }
