package agent

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// A local pod's workload, app, version, canonical service and revision,
// from its flow table entry, as Istio derives them from its labels.
func TestWorkloadMeta(t *testing.T) {
	const pod = "reviews-v1-7d4b9c8f5d-x2kzq"
	for _, tc := range []struct {
		name     string
		workload string
		labels   map[string]string
		want     proxy.WorkloadMeta // Name, Namespace and Cluster are added
	}{
		{"app and version labels", "reviews-v1", map[string]string{"app": "reviews", "version": "v1"},
			proxy.WorkloadMeta{App: "reviews", Version: "v1", CanonicalService: "reviews", CanonicalRevision: "v1"}},
		{"Kubernetes' recommended labels", "reviews-v1", map[string]string{"app.kubernetes.io/name": "reviews", "app.kubernetes.io/version": "1.4.2"},
			proxy.WorkloadMeta{App: "reviews", Version: "1.4.2", CanonicalService: "reviews", CanonicalRevision: "1.4.2"}},
		{"recommended labels win over app and version", "reviews-v1",
			map[string]string{"app": "old", "version": "v0", "app.kubernetes.io/name": "reviews", "app.kubernetes.io/version": "1.4.2"},
			proxy.WorkloadMeta{App: "reviews", Version: "1.4.2", CanonicalService: "reviews", CanonicalRevision: "1.4.2"}},
		{"canonical labels override, app and version stay", "reviews-v1",
			map[string]string{"app": "reviews", "version": "v1", "service.istio.io/canonical-name": "bookinfo-reviews",
				"service.istio.io/canonical-revision": "2024-06"},
			proxy.WorkloadMeta{App: "reviews", Version: "v1", CanonicalService: "bookinfo-reviews", CanonicalRevision: "2024-06"}},
		{"canonical labels alone", "reviews-v1",
			map[string]string{"service.istio.io/canonical-name": "reviews", "service.istio.io/canonical-revision": "v1"},
			proxy.WorkloadMeta{CanonicalService: "reviews", CanonicalRevision: "v1"}},
		{"app without version", "reviews-v1", map[string]string{"app": "reviews"},
			proxy.WorkloadMeta{App: "reviews", CanonicalService: "reviews", CanonicalRevision: "latest"}},
		{"empty label: not known", "reviews-v1", map[string]string{"app": "", "version": "v1"},
			proxy.WorkloadMeta{Version: "v1", CanonicalService: "reviews-v1", CanonicalRevision: "v1"}},
		{"no labels", "reviews-v1", nil,
			proxy.WorkloadMeta{CanonicalService: "reviews-v1", CanonicalRevision: "latest"}},
		{"no workload from the controller: named from the pod", "", map[string]string{"app": "reviews"},
			proxy.WorkloadMeta{Name: "reviews-v1", App: "reviews", CanonicalService: "reviews", CanonicalRevision: "latest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			want.Name, want.Namespace, want.Cluster = cmp.Or(want.Name, tc.workload), "production", "Kubernetes"
			got := workloadMeta(reconcile.Pod{Namespace: "production", Name: pod, Workload: tc.workload, Labels: tc.labels}, "Kubernetes")
			if d := gocmp.Diff(want, got); d != "" {
				t.Errorf("workloadMeta (-want +got):\n%s", d)
			}
		})
	}
}

// The labels of both sides of a TCP connection: the local pod's from the
// flow table; the peer's from its identity, from the workload metadata
// its agent sent in the tunnel's PROXY header (inbound), or from the
// flow table when the called pod runs on the same node (outbound).
func TestConnLabelsWorkloads(t *testing.T) {
	tel := testTelemetry()
	tel.workload = func(ns, pod string) proxy.WorkloadMeta {
		app, _, _ := strings.Cut(pod, "-")
		return workloadMeta(reconcile.Pod{Namespace: ns, Name: pod, Labels: map[string]string{"app": app, "version": "v1"}}, "Kubernetes")
	}
	local := netip.MustParseAddr("10.200.1.7") // reviews-v1's pod, on this node
	tel.localPodByIP = func(ip netip.Addr) (string, string, bool) {
		if ip == local {
			return "production", "reviews-v1-7d4b9c8f5d-x2kzq", true
		}
		return "", "", false
	}
	out := proxy.ConnInfo{ID: 1, Direction: proxy.DirectionOutbound, Listener: "outbound", Pod: "production/frontend-5c6d7f8b9-bcdfg",
		Mode: proxy.ModeTunnel, Cluster: "outbound|9080||reviews.production.svc.cluster.local", PeerIdentity: reviewsID,
		Endpoint: netip.MustParseAddrPort("10.200.2.5:9080")}
	in := proxy.ConnInfo{ID: 2, Direction: proxy.DirectionInbound, Listener: "inbound", Pod: "production/reviews-v1-7d4b9c8f5d-x2kzq",
		Mode: proxy.ModePlaintext, PeerIdentity: frontendID, Destination: netip.MustParseAddrPort("10.200.2.5:9080")}
	frontendSrc := map[string]string{"source_workload": "frontend", "source_app": "frontend", "source_version": "v1",
		"source_canonical_service": "frontend", "source_canonical_revision": "v1"}
	reviewsDst := map[string]string{"destination_workload": "reviews-v1", "destination_app": "reviews", "destination_version": "v1",
		"destination_canonical_service": "reviews", "destination_canonical_revision": "v1"}
	unknownDst := map[string]string{"destination_workload": "unknown", "destination_app": "unknown", "destination_version": "unknown",
		"destination_canonical_service": "unknown", "destination_canonical_revision": "unknown", "destination_workload_namespace": "production"}
	unknownSrc := map[string]string{"source_workload": "unknown", "source_app": "unknown", "source_version": "unknown",
		"source_workload_namespace": "production", "source_principal": frontendID}
	merge := func(ms ...map[string]string) map[string]string {
		out := map[string]string{}
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	with := func(c proxy.ConnInfo, f func(*proxy.ConnInfo)) proxy.ConnInfo { f(&c); return c }
	// What EDS says of reviews-v1's endpoint (Istio's endpoint metadata).
	reviewsEDS := proxy.WorkloadMeta{Name: "reviews-v1", Namespace: "production", App: "reviews", Version: "v1", CanonicalService: "reviews", CanonicalRevision: "v1"}
	for _, tc := range []struct {
		name string
		c    proxy.ConnInfo
		peer proxy.WorkloadMeta
		eds  proxy.WorkloadMeta // Event.EndpointWorkload
		want map[string]string
	}{
		{"outbound to another node: EDS names the callee", out, proxy.WorkloadMeta{}, reviewsEDS,
			merge(frontendSrc, reviewsDst, map[string]string{"destination_principal": reviewsID, "destination_cluster": "Kubernetes"})},
		{"outbound, EDS of another namespace than the verified identity", out, proxy.WorkloadMeta{},
			proxy.WorkloadMeta{Name: "admin", Namespace: "kube-system"}, merge(frontendSrc, unknownDst)},
		{"outbound in plaintext: EDS names the callee", with(out, func(c *proxy.ConnInfo) { c.Mode, c.PeerIdentity = proxy.ModePlaintext, "" }),
			proxy.WorkloadMeta{}, reviewsEDS, merge(frontendSrc, reviewsDst, map[string]string{"destination_principal": "unknown"})},
		{"outbound to another node, EDS without metadata (older controller): not known", out, proxy.WorkloadMeta{}, proxy.WorkloadMeta{},
			merge(frontendSrc, unknownDst)},
		{"outbound to a pod of this node without EDS metadata: its flow table entry", with(out, func(c *proxy.ConnInfo) { c.Endpoint = netip.AddrPortFrom(local, 9080) }),
			proxy.WorkloadMeta{}, proxy.WorkloadMeta{}, merge(frontendSrc, reviewsDst, map[string]string{"destination_principal": reviewsID})},
		{"outbound to a pod of this node with another identity", with(out, func(c *proxy.ConnInfo) {
			c.Endpoint, c.PeerIdentity = netip.AddrPortFrom(local, 9080), "spiffe://cluster.local/ns/production/sa/other"
		}), proxy.WorkloadMeta{}, proxy.WorkloadMeta{}, merge(frontendSrc, unknownDst)},
		{"outbound in plaintext, no EDS metadata: no identity to match", with(out, func(c *proxy.ConnInfo) {
			c.Endpoint, c.Mode, c.PeerIdentity = netip.AddrPortFrom(local, 9080), proxy.ModePlaintext, ""
		}), proxy.WorkloadMeta{}, proxy.WorkloadMeta{}, merge(frontendSrc, map[string]string{"destination_workload": "unknown"})},
		{"inbound from an agent that sent its workload", in,
			proxy.WorkloadMeta{Name: "frontend", Namespace: "production", App: "frontend", Version: "v2", CanonicalService: "frontend", CanonicalRevision: "v2", Cluster: "Kubernetes"},
			proxy.WorkloadMeta{},
			merge(reviewsDst, map[string]string{"source_workload": "frontend", "source_app": "frontend", "source_version": "v2",
				"source_canonical_service": "frontend", "source_canonical_revision": "v2", "source_cluster": "Kubernetes", "source_principal": frontendID})},
		{"inbound from an agent that sent none (older)", in, proxy.WorkloadMeta{}, proxy.WorkloadMeta{}, merge(reviewsDst, unknownSrc)},
		{"inbound: EDS is not read", in, proxy.WorkloadMeta{}, reviewsEDS, merge(reviewsDst, unknownSrc)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := proxy.Event{Kind: proxy.EventClosed, Conn: tc.c, PeerWorkload: tc.peer, EndpointWorkload: tc.eds}
			got := labelMap(tcpLabels, tel.connLabelValues(&tc.c, connPeerMeta(&ev)))
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s=%q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestServiceOf(t *testing.T) {
	hosts := map[string][]netip.Addr{"reviews.production.svc.cluster.local": nil, "api.books.example.com": nil}
	for _, tc := range []struct {
		name string
		got  service
		want service
	}{
		{"cluster", serviceOfCluster("outbound|9080|v2|reviews.production.svc.cluster.local"),
			service{"reviews.production.svc.cluster.local", "reviews", "production"}},
		{"cluster of a ServiceEntry", serviceOfCluster("outbound|443||api.books.example.com"),
			service{"api.books.example.com", "api.books.example.com", ""}},
		{"passthrough", serviceOfCluster("outbound-passthrough"), service{name: "PassthroughCluster"}},
		{"inbound cluster", serviceOfCluster("inbound-passthrough"), service{}},
		{"not a cluster name", serviceOfCluster("outbound|9080"), service{}},
		{"short authority", serviceOfAuthority("reviews:9080", "production", hosts),
			service{"reviews.production.svc.cluster.local", "reviews", "production"}},
		{"authority with namespace", serviceOfAuthority("Reviews.Production", "default", hosts),
			service{"reviews.production.svc.cluster.local", "reviews", "production"}},
		{"FQDN authority", serviceOfAuthority("reviews.production.svc.cluster.local.", "default", hosts),
			service{"reviews.production.svc.cluster.local", "reviews", "production"}},
		{"short name from another namespace", serviceOfAuthority("reviews", "staging", hosts), service{}},
		{"made-up authority", serviceOfAuthority("whatever.example:80", "production", hosts), service{}},
		{"IP authority", serviceOfAuthority("10.96.0.20:9080", "production", hosts), service{}},
		{"IPv6 authority", serviceOfAuthority("[fd00::1]", "production", hosts), service{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %+v, want %+v", tc.got, tc.want)
			}
		})
	}
}

func TestNamespaceOf(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"spiffe://cluster.local/ns/production/sa/frontend", "production"},
		{"spiffe://cluster.local/other/path", ""},
		{"", ""},
		{"not a uri", ""},
	} {
		if got := namespaceOf(tc.id); got != tc.want {
			t.Errorf("namespaceOf(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

const (
	frontendID = "spiffe://cluster.local/ns/production/sa/frontend"
	reviewsID  = "spiffe://cluster.local/ns/production/sa/reviews"
)

// testTelemetry is a telemetry whose pods' SVIDs are their service
// accounts named like the workloads' apps.
func testTelemetry() *telemetry {
	t := newTelemetry("")
	t.principal = func(ns, pod string) string {
		app, _, _ := strings.Cut(pod, "-")
		return "spiffe://cluster.local/ns/" + ns + "/sa/" + app
	}
	reviews := &xdsconf.Cluster{Name: "outbound|9080||reviews.production.svc.cluster.local"}
	snap := &xdsconf.Snapshot{
		Hosts:     map[string][]netip.Addr{"reviews.production.svc.cluster.local": {netip.MustParseAddr("10.96.0.9")}},
		Endpoints: map[netip.Addr]*xdsconf.Cluster{netip.MustParseAddr("10.200.2.5"): reviews},
	}
	t.snapshot = func() *xdsconf.Snapshot { return snap }
	return t
}

// labelMap pairs names and values.
func labelMap(names, values []string) map[string]string {
	m := map[string]string{}
	for i, n := range names {
		if i < len(values) {
			m[n] = values[i]
		}
	}
	return m
}

func TestRequestLabels(t *testing.T) {
	tel := testTelemetry()
	frontendMeta := proxy.WorkloadMeta{Name: "frontend", Namespace: "production", Cluster: "Kubernetes"}
	reviewsMeta := proxy.WorkloadMeta{Name: "reviews-v1", Namespace: "production", App: "reviews", Version: "v1", Cluster: "Kubernetes"}
	// The labels every case has the same.
	base := func(m map[string]string) map[string]string {
		out := map[string]string{"request_protocol": "http", "response_flags": "-", "grpc_response_status": "",
			"destination_service": "reviews.production.svc.cluster.local", "destination_service_name": "reviews",
			"destination_service_namespace": "production"}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	frontend := map[string]string{"source_workload": "frontend", "source_workload_namespace": "production",
		"source_principal": frontendID, "source_app": "unknown", "source_version": "unknown",
		"source_canonical_service": "frontend", "source_canonical_revision": "latest", "source_cluster": "Kubernetes"}
	reviews := map[string]string{"destination_workload": "reviews-v1", "destination_workload_namespace": "production",
		"destination_principal": reviewsID, "destination_app": "reviews", "destination_version": "v1",
		"destination_canonical_service": "reviews", "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes"}
	merge := func(ms ...map[string]string) map[string]string {
		out := map[string]string{}
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ri   proxy.RequestInfo
		want map[string]string
	}{
		{"outbound, peer metadata exchanged",
			proxy.RequestInfo{Direction: proxy.DirectionOutbound, Pod: "production/frontend-5c6d7f8b9-bcdfg", Code: 200, MTLS: true,
				Cluster: "outbound|9080|v1|reviews.production.svc.cluster.local", Peer: reviewsID, Workload: frontendMeta, PeerWorkload: reviewsMeta},
			base(merge(frontend, reviews, map[string]string{"reporter": "source", "response_code": "200", "connection_security_policy": "unknown"}))},
		{"outbound, the peer's canonical labels as its agent said them",
			proxy.RequestInfo{Direction: proxy.DirectionOutbound, Pod: "production/frontend-5c6d7f8b9-bcdfg", Code: 200, MTLS: true,
				Cluster: "outbound|9080|v1|reviews.production.svc.cluster.local", Peer: reviewsID, Workload: frontendMeta,
				PeerWorkload: proxy.WorkloadMeta{Name: "reviews-v1", Namespace: "production", App: "reviews", Version: "v1",
					CanonicalService: "bookinfo-reviews", CanonicalRevision: "2024-06", Cluster: "Kubernetes"}},
			base(merge(frontend, reviews, map[string]string{"reporter": "source", "response_code": "200", "connection_security_policy": "unknown",
				"destination_canonical_service": "bookinfo-reviews", "destination_canonical_revision": "2024-06"}))},
		{"inbound, denied by RBAC",
			proxy.RequestInfo{Direction: proxy.DirectionInbound, Pod: "production/reviews-v1-7d4b9c8f5d-x2kzq", Code: 403, Flags: "RBAC", MTLS: true,
				Authority: "reviews:9080", Peer: frontendID, Workload: reviewsMeta, PeerWorkload: frontendMeta},
			base(merge(frontend, reviews, map[string]string{"reporter": "destination", "response_code": "403", "response_flags": "RBAC",
				"connection_security_policy": "mutual_tls"}))},
		{"inbound in plaintext, unknown caller, service from the pod's endpoint",
			proxy.RequestInfo{Direction: proxy.DirectionInbound, Pod: "production/reviews-v1-7d4b9c8f5d-x2kzq", Code: 200,
				Authority: "10.200.2.5:9080", Destination: netip.MustParseAddrPort("10.200.2.5:9080"), Workload: reviewsMeta},
			base(merge(reviews, map[string]string{"reporter": "destination", "response_code": "200", "connection_security_policy": "none",
				"source_workload": "unknown", "source_workload_namespace": "unknown", "source_principal": "unknown", "source_app": "unknown",
				"source_version": "unknown", "source_canonical_service": "unknown", "source_canonical_revision": "unknown", "source_cluster": "unknown"}))},
		{"outbound, no exchange (the peer's agent did not answer): identity only, gRPC",
			proxy.RequestInfo{Direction: proxy.DirectionOutbound, Pod: "production/frontend-5c6d7f8b9-bcdfg", Code: 200, GRPC: true, GRPCStatus: "14",
				Flags: "UF,URX", Cluster: "outbound|9080||reviews.production.svc.cluster.local", Peer: reviewsID, MTLS: true},
			base(merge(frontend, map[string]string{"reporter": "source", "response_code": "200", "connection_security_policy": "unknown",
				"request_protocol": "grpc", "grpc_response_status": "14", "response_flags": "UF,URX",
				"destination_workload": "unknown", "destination_workload_namespace": "production", "destination_principal": reviewsID,
				"destination_app": "unknown", "destination_version": "unknown", "destination_canonical_service": "unknown",
				"destination_canonical_revision": "unknown", "destination_cluster": "Kubernetes"}))},
		{"outbound, no exchange: EDS names the endpoint's workload",
			proxy.RequestInfo{Direction: proxy.DirectionOutbound, Pod: "production/frontend-5c6d7f8b9-bcdfg", Code: 503, Flags: "UF",
				Cluster: "outbound|9080||reviews.production.svc.cluster.local", Peer: reviewsID, MTLS: true, Workload: frontendMeta,
				EndpointWorkload: proxy.WorkloadMeta{Name: "reviews-v1", Namespace: "production", App: "reviews", Version: "v1",
					CanonicalService: "reviews", CanonicalRevision: "v1"}},
			base(merge(frontend, reviews, map[string]string{"reporter": "source", "response_code": "503", "response_flags": "UF",
				"connection_security_policy": "unknown"}))},
		{"outbound, the peer's own word over EDS's",
			proxy.RequestInfo{Direction: proxy.DirectionOutbound, Pod: "production/frontend-5c6d7f8b9-bcdfg", Code: 200, MTLS: true,
				Cluster: "outbound|9080||reviews.production.svc.cluster.local", Peer: reviewsID, Workload: frontendMeta, PeerWorkload: reviewsMeta,
				EndpointWorkload: proxy.WorkloadMeta{Name: "stale", Namespace: "production"}},
			base(merge(frontend, reviews, map[string]string{"reporter": "source", "response_code": "200", "connection_security_policy": "unknown"}))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tel.requestLabelValues(&tc.ri)
			if len(got) != len(requestLabels) {
				t.Fatalf("%d values for %d labels", len(got), len(requestLabels))
			}
			if diff := gocmp.Diff(tc.want, labelMap(requestLabels, got)); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTCPMetrics(t *testing.T) {
	tel := testTelemetry()
	var table []proxy.ConnInfo
	tel.conns = func() []proxy.ConnInfo { return table }
	start := time.Now()
	out := proxy.ConnInfo{ID: 1, Direction: proxy.DirectionOutbound, Listener: "outbound", Pod: "production/frontend-5c6d7f8b9-bcdfg",
		Mode: proxy.ModeTunnel, Cluster: "outbound|9080||reviews.production.svc.cluster.local", PeerIdentity: reviewsID,
		State: proxy.StateOffloaded, Offload: proxy.OffloadSplice, Start: start}
	in := proxy.ConnInfo{ID: 2, Direction: proxy.DirectionInbound, Listener: "inbound", Pod: "production/reviews-v1-7d4b9c8f5d-x2kzq",
		Mode: proxy.ModePlaintext, Cluster: "inbound-passthrough", PeerIdentity: frontendID, State: proxy.StateEstablished,
		Destination: netip.MustParseAddrPort("10.200.2.5:9080"), Start: start}
	pass := proxy.ConnInfo{ID: 3, Direction: proxy.DirectionOutbound, Listener: "outbound", Pod: "production/frontend-5c6d7f8b9-bcdfg",
		Mode: proxy.ModePassthrough, Cluster: "outbound-passthrough", State: proxy.StateEstablished, Start: start}
	l7 := proxy.ConnInfo{ID: 4, Direction: proxy.DirectionOutbound, Pod: "production/frontend-5c6d7f8b9-bcdfg", Mode: proxy.ModeHTTP}
	for _, c := range []proxy.ConnInfo{out, in, pass, l7} {
		tel.event(proxy.Event{Kind: proxy.EventEstablished, Conn: c})
	}
	// Bytes flow (the offloaded one's from the kernel's counters: the
	// table's), read at a scrape.
	out.BytesOut, out.BytesIn = 1000, 50000
	in.BytesIn, in.BytesOut = 1000, 50000
	table = []proxy.ConnInfo{out, in, pass}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tel.collectors()...)
	sum := func(name string, match map[string]string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		total := 0.0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metric:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := match[lp.GetName()]; ok && v != lp.GetValue() {
						continue metric
					}
				}
				total += m.GetCounter().GetValue()
			}
		}
		return total
	}
	src := map[string]string{"reporter": "source", "destination_service_name": "reviews"}
	dst := map[string]string{"reporter": "destination", "destination_service_name": "reviews", "source_workload_namespace": "production",
		"source_principal": frontendID, "destination_workload": "reviews-v1", "connection_security_policy": "mutual_tls", "request_protocol": "tcp"}
	passthrough := map[string]string{"destination_service_name": "PassthroughCluster", "destination_principal": "unknown"}
	check := func(when string, want map[string]float64) {
		t.Helper()
		got := map[string]float64{
			"opened source":         sum("istio_tcp_connections_opened_total", src),
			"opened destination":    sum("istio_tcp_connections_opened_total", dst),
			"opened passthrough":    sum("istio_tcp_connections_opened_total", passthrough),
			"closed source":         sum("istio_tcp_connections_closed_total", src),
			"received source":       sum("istio_tcp_received_bytes_total", src),
			"sent source":           sum("istio_tcp_sent_bytes_total", src),
			"received destination":  sum("istio_tcp_received_bytes_total", dst),
			"sent destination":      sum("istio_tcp_sent_bytes_total", dst),
			"closed destination":    sum("istio_tcp_connections_closed_total", dst),
			"opened, all reporters": sum("istio_tcp_connections_opened_total", nil),
		}
		if diff := gocmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", when, diff)
		}
	}
	check("open", map[string]float64{"opened source": 1, "opened destination": 1, "opened passthrough": 1, "closed source": 0,
		"received source": 1000, "sent source": 50000, "received destination": 1000, "sent destination": 50000,
		"closed destination": 0, "opened, all reporters": 3})
	// The offloaded tunnel, by edge and mode; the plaintext and
	// passthrough connections are no tunnels.
	offloaded := func() string {
		var b strings.Builder
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "fibmesh_agent_tcp_offloaded_connections" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					fmt.Fprintf(&b, "%s=%s,", lp.GetName(), lp.GetValue())
				}
				fmt.Fprintf(&b, " %v\n", m.GetGauge().GetValue())
			}
		}
		return b.String()
	}
	edge := "destination_service=reviews.production.svc.cluster.local,destination_workload=unknown,destination_workload_namespace=production,mode=splice,reporter=source,source_workload=frontend,source_workload_namespace=production,"
	if got, want := offloaded(), edge+" 1\n"; got != want {
		t.Errorf("fibmesh_agent_tcp_offloaded_connections while open:\n%s\nwant\n%s", got, want)
	}
	// They end: the last bytes come with EventClosed; the table may
	// already have dropped them.
	out.BytesOut, out.BytesIn, out.State = 1500, 80000, proxy.StateClosed
	in.BytesIn, in.BytesOut, in.State = 1500, 80000, proxy.StateClosed
	table = nil
	tel.event(proxy.Event{Kind: proxy.EventClosed, Conn: out})
	tel.event(proxy.Event{Kind: proxy.EventClosed, Conn: in})
	tel.event(proxy.Event{Kind: proxy.EventClosed, Conn: l7})
	check("closed", map[string]float64{"opened source": 1, "opened destination": 1, "opened passthrough": 1, "closed source": 1,
		"received source": 1500, "sent source": 80000, "received destination": 1500, "sent destination": 80000,
		"closed destination": 1, "opened, all reporters": 3})
	if n := len(tel.tcp); n != 1 {
		t.Errorf("%d connections still tracked, want 1 (the passthrough one)", n)
	}
	if got, want := offloaded(), edge+" 0\n"; got != want {
		t.Errorf("fibmesh_agent_tcp_offloaded_connections after the close:\n%s\nwant\n%s", got, want)
	}
	// An end seen twice (a refusal after the close) counts once.
	tel.event(proxy.Event{Kind: proxy.EventRefused, Conn: out})
	if got, want := offloaded(), edge+" 0\n"; got != want {
		t.Errorf("fibmesh_agent_tcp_offloaded_connections after a second end:\n%s\nwant\n%s", got, want)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(""), "istio_requests_total"); err != nil {
		t.Errorf("no requests yet: %v", err)
	}
}

// BenchmarkTelemetryRequest is the agent's work per HTTP request (the
// labels, the counter and three histograms; no access log).
func BenchmarkTelemetryRequest(b *testing.B) {
	tel := testTelemetry()
	ri := proxy.RequestInfo{Direction: proxy.DirectionInbound, Pod: "production/reviews-v1-7d4b9c8f5d-x2kzq", Code: 200, MTLS: true,
		Authority: "reviews:9080", Peer: frontendID, Duration: 3 * time.Millisecond, BytesSent: 500, RequestHeaderBytes: 200,
		Workload:     proxy.WorkloadMeta{Name: "reviews-v1", Namespace: "production"},
		PeerWorkload: proxy.WorkloadMeta{Name: "frontend", Namespace: "production"}}
	b.ReportAllocs()
	for b.Loop() {
		tel.request(&ri)
	}
}
