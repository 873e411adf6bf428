package xdsconf

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

// The controller's fixture: the cluster view of the demo mesh.
const fixtureDir = "../../controller/testdata/cluster"

const (
	reviews  = "reviews.production.svc.cluster.local"
	ratings  = "ratings.production.svc.cluster.local"
	frontend = "frontend.production.svc.cluster.local"
	books    = "api.books.example.com"

	idFrontend = "spiffe://cluster.local/ns/production/sa/frontend"
	idReviews  = "spiffe://cluster.local/ns/production/sa/reviews"
	idRatings  = "spiffe://cluster.local/ns/production/sa/ratings"
)

// loadModel builds the model of the fixture plus extra YAML documents
// (file name → content), as the controller's file store would.
func loadModel(t testing.TB, extra map[string]string) *model.Model {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("fixture %s: %v (%d files)", fixtureDir, err, len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(s, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// meshResources is what an agent on node holds: the controller's real
// translation, by type URL.
func meshResources(t testing.TB, m *model.Model, node string) map[string]map[string]proto.Message {
	t.Helper()
	res, err := envoy.NodeResources(m, node)
	if err != nil {
		t.Fatalf("NodeResources(%s): %v", node, err)
	}
	return res
}

// feed updates s with every type in the order the controller pushes
// them (clusters, endpoints, listeners, routes).
func feed(t testing.TB, s *Store, res map[string]map[string]proto.Message, version string) {
	t.Helper()
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		if err := s.Update(typ, res[typ], version); err != nil {
			t.Fatalf("Update(%s): %v", typ, err)
		}
	}
}

func storeFor(t testing.TB, extra map[string]string, node string) *Snapshot {
	t.Helper()
	s := NewStore()
	feed(t, s, meshResources(t, loadModel(t, extra), node), "v1")
	return s.Snapshot()
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func ids(ss ...string) []spiffeid.ID {
	var out []spiffeid.ID
	for _, s := range ss {
		out = append(out, spiffeid.RequireFromString(s))
	}
	return out
}

// The outbound listener, clusters, endpoints and DNS hosts of the demo
// mesh, as the controller translates them, compiled.
func TestExamplesOutbound(t *testing.T) {
	snap := storeFor(t, nil, "node1")
	out := snap.Outbound
	if out == nil {
		t.Fatal("no outbound listener")
	}
	// The pod calling: frontend on node1.
	src := ap("10.200.1.12:40000")
	for _, tc := range []struct {
		dst, chain, routeConfig, cluster string
		clusters                         []WeightedCluster
		tcp                              bool
	}{
		{dst: "10.96.0.11:9080", chain: "10.96.0.11_9080", routeConfig: reviews + ":9080", cluster: "outbound|9080||" + reviews,
			clusters: []WeightedCluster{{"outbound|9080|v1|" + reviews, 90}, {"outbound|9080|v2|" + reviews, 10}}},
		{dst: "10.96.0.12:9080", chain: "10.96.0.12_9080", routeConfig: ratings + ":9080", cluster: "outbound|9080||" + ratings,
			clusters: []WeightedCluster{{"outbound|9080||" + ratings, 1}}},
		{dst: "10.96.0.10:8080", chain: "10.96.0.10_8080", routeConfig: frontend + ":8080", cluster: "outbound|8080||" + frontend,
			clusters: []WeightedCluster{{"outbound|8080||" + frontend, 1}}},
		// Not a mesh VIP:port: the passthrough default chain.
		{dst: "10.96.0.11:9999", chain: "outbound-passthrough", tcp: true, cluster: "outbound-passthrough"},
		{dst: "93.184.216.34:443", chain: "outbound-passthrough", tcp: true, cluster: "outbound-passthrough"},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			c := out.Match(MatchInput{Destination: ap(tc.dst), Source: src})
			if c == nil {
				t.Fatal("no chain")
			}
			if c.Name != tc.chain {
				t.Fatalf("chain %q, want %q", c.Name, tc.chain)
			}
			if c.TLS != nil || c.RBAC != nil {
				t.Errorf("outbound chain with TLS %v RBAC %v", c.TLS, c.RBAC)
			}
			if tc.tcp {
				if c.TCP == nil || c.TCP.PickCluster(0) != tc.cluster || c.TCP.IdleTimeout != DefaultIdleTimeout {
					t.Fatalf("tcp_proxy %+v, want → %s", c.TCP, tc.cluster)
				}
				return
			}
			if c.HTTP == nil {
				t.Fatal("not an HTTP chain")
			}
			want := &HTTPChain{RouteConfig: tc.routeConfig, DefaultCluster: tc.cluster, Clusters: tc.clusters}
			if diff := cmp.Diff(want, c.HTTP, cmp.AllowUnexported(HTTPChain{}), cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".total"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("HTTP chain (-want +got):\n%s", diff)
			}
		})
	}
	// The canary split holds per connection: 90/10 over the draws.
	c := out.Match(MatchInput{Destination: ap("10.96.0.11:9080"), Source: src})
	got := map[string]int{}
	for r := range uint32(100) {
		got[c.HTTP.PickCluster(r)]++
	}
	if got["outbound|9080|v1|"+reviews] != 90 || got["outbound|9080|v2|"+reviews] != 10 {
		t.Errorf("split over 100 draws: %v", got)
	}
}

func TestExamplesClusters(t *testing.T) {
	snap := storeFor(t, nil, "node1")
	// ep is an endpoint of the examples: its address, node, and
	// workload metadata as EDS encodes it.
	ep := func(addr, node, workload string) *Endpoint {
		w, err := xdsapi.ParseEndpointWorkload(workload)
		if err != nil {
			t.Fatal(err)
		}
		return &Endpoint{Addr: ap(addr), Healthy: true, Node: node, Weight: 1, Workload: &w}
	}
	const v1, v2 = "reviews-v1;production;reviews;v1;", "reviews-v2;production;reviews;v2;"
	for _, tc := range []struct {
		name      string
		typ       ClusterType
		lb        LBPolicy
		maxConns  uint32
		sans      []spiffeid.ID
		plaintext bool
		endpoints []*Endpoint
		dnsHosts  []string
	}{
		{name: "outbound|9080||" + reviews, lb: LeastRequest, maxConns: 100, sans: ids(idReviews),
			endpoints: []*Endpoint{ep("10.200.1.11:9080", "node1", v1), ep("10.200.2.11:9080", "node2", v2)}},
		{name: "outbound|9080|v1|" + reviews, lb: LeastRequest, maxConns: 100, sans: ids(idReviews),
			endpoints: []*Endpoint{ep("10.200.1.11:9080", "node1", v1)}},
		{name: "outbound|9080|v2|" + reviews, lb: LeastRequest, maxConns: 100, sans: ids(idReviews),
			endpoints: []*Endpoint{ep("10.200.2.11:9080", "node2", v2)}},
		{name: "outbound|9080||" + ratings, lb: RoundRobin, sans: ids(idRatings),
			endpoints: []*Endpoint{ep("10.200.2.12:9080", "node2", "ratings;production;ratings;v1;")}},
		{name: "outbound|8080||" + frontend, sans: ids(idFrontend),
			endpoints: []*Endpoint{ep("10.200.1.12:8080", "node1", "frontend;production;frontend;v1;")}},
		{name: "outbound|443||" + books, typ: ClusterDNS, plaintext: true, dnsHosts: []string{books + ":443"}},
		{name: "inbound-passthrough", typ: ClusterOriginalDst, lb: ClusterProvided, plaintext: true},
		{name: "outbound-passthrough", typ: ClusterOriginalDst, lb: ClusterProvided, plaintext: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := snap.Clusters[tc.name]
			if c == nil {
				t.Fatalf("no cluster; have %v", slices.Sorted(mapsKeys(snap.Clusters)))
			}
			if c.Type != tc.typ || c.LB != tc.lb || c.MaxConnections != tc.maxConns || c.ConnectTimeout != 10*time.Second {
				t.Errorf("type %v lb %v max %d timeout %v, want %v %v %d 10s", c.Type, c.LB, c.MaxConnections, c.ConnectTimeout, tc.typ, tc.lb, tc.maxConns)
			}
			if tc.plaintext != (c.TLS == nil) {
				t.Fatalf("TLS %+v, want plaintext %v", c.TLS, tc.plaintext)
			}
			if c.TLS != nil && (!slices.Equal(c.TLS.SANs, tc.sans) || c.TLS.PlaintextMatch) {
				t.Errorf("TLS %+v, want SANs %v", c.TLS, tc.sans)
			}
			if !slices.Equal(c.DNSHosts, tc.dnsHosts) {
				t.Errorf("DNS hosts %v, want %v", c.DNSHosts, tc.dnsHosts)
			}
			if tc.typ != ClusterEDS {
				if c.Endpoints != nil {
					t.Errorf("endpoints on a %v cluster", tc.typ)
				}
				return
			}
			if c.Endpoints == nil {
				t.Fatal("EDS not joined")
			}
			opt := cmp.Comparer(func(a, b *Endpoint) bool {
				return a.Addr == b.Addr && a.Healthy == b.Healthy && a.Node == b.Node && a.Weight == b.Weight && a.Plaintext == b.Plaintext &&
					(a.Workload == nil) == (b.Workload == nil) && (a.Workload == nil || *a.Workload == *b.Workload)
			})
			if diff := cmp.Diff(tc.endpoints, c.Endpoints.Hosts, opt); diff != "" {
				t.Errorf("hosts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.endpoints, c.Endpoints.Healthy, opt); diff != "" {
				t.Errorf("healthy (-want +got):\n%s", diff)
			}
			if e, err := c.Pick(ap("10.200.1.12:1234"), nil); err != nil || !slices.Contains(c.Endpoints.Healthy, e) {
				t.Errorf("Pick: %v, %v", e, err)
			}
		})
	}
	// The DNS table: each service's FQDN to its VIP; the ServiceEntry
	// without addresses is left to the upstream resolver.
	wantHosts := map[string][]netip.Addr{
		frontend: {netip.MustParseAddr("10.96.0.10")},
		reviews:  {netip.MustParseAddr("10.96.0.11")},
		ratings:  {netip.MustParseAddr("10.96.0.12")},
	}
	if diff := cmp.Diff(wantHosts, snap.Hosts, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Hosts (-want +got):\n%s", diff)
	}
	// Pods reached by IP are tunnelled with their service's cluster.
	for ip, want := range map[string]string{
		"10.200.1.11": "outbound|9080||" + reviews, "10.200.2.11": "outbound|9080||" + reviews,
		"10.200.2.12": "outbound|9080||" + ratings, "10.200.1.12": "outbound|8080||" + frontend,
	} {
		if c := snap.Endpoints[netip.MustParseAddr(ip)]; c == nil || c.Name != want {
			t.Errorf("Endpoints[%s] = %v, want %s", ip, c, want)
		}
	}
	if len(snap.Endpoints) != 4 {
		t.Errorf("Endpoints has %d entries, want 4", len(snap.Endpoints))
	}
	if snap.Versions[resource.ClusterType] != "v1" || snap.Versions[resource.RouteType] != "v1" {
		t.Errorf("versions %v", snap.Versions)
	}
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// L4 authorization as the fixture's policies say, on the inbound chains
// the controller builds for node1 and node2, with extra L4 policies on
// ratings.
func TestExamplesInboundAuthorization(t *testing.T) {
	extra := map[string]string{"30-ratings-authz.yaml": `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-allow, namespace: production}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/production/sa/reviews]}}]
    to: [{operation: {ports: ["9080"]}}]
  - from: [{source: {namespaces: [staging]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-deny, namespace: production}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules:
  - from: [{source: {ipBlocks: [10.200.9.0/24]}}]
  - from: [{source: {principals: ["*/sa/evil"]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings, namespace: production}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: PERMISSIVE}
`}
	node1 := storeFor(t, extra, "node1")
	node2 := storeFor(t, extra, "node2")
	if node1.InboundPlaintext != nil {
		t.Errorf("node1 (all STRICT) has a plaintext listener: %v", node1.InboundPlaintext.Chains)
	}
	if node2.InboundPlaintext == nil {
		t.Fatal("node2 (ratings:9080 PERMISSIVE) has no plaintext listener")
	}
	const (
		allowRatings0 = "ns[production]-policy[ratings-allow]-rule[0]"
		allowRatings1 = "ns[production]-policy[ratings-allow]-rule[1]"
		denyRatings0  = "ns[production]-policy[ratings-deny]-rule[0]"
		denyRatings1  = "ns[production]-policy[ratings-deny]-rule[1]"
	)
	peer := ap("10.200.1.12:40000")
	for _, tc := range []struct {
		name      string
		l         *Listener
		dst       string
		src       netip.AddrPort
		principal string
		chain     string
		identity  string // of an mTLS chain; "" plaintext
		http      bool
		want      Decision
	}{
		// The fixture's policy on reviews allows frontend only for GET
		// /api/reviews/* with an x-request-id: conditions on the request,
		// which a connection does not have. At L4 the rule allows
		// nothing (docs/xds.md, fail closed), on the HTTP port as on the
		// others.
		{name: "reviews http port, frontend", l: node1.Inbound, dst: "10.200.1.11:9080", src: peer, principal: idFrontend,
			chain: "production/reviews-v1|9080", identity: idReviews, http: true, want: Decision{}},
		{name: "reviews other port, frontend", l: node1.Inbound, dst: "10.200.1.11:7000", src: peer, principal: idFrontend,
			chain: "production/reviews-v1|*", identity: idReviews, want: Decision{}},
		// frontend has no policy: everything allowed.
		{name: "frontend, from reviews", l: node1.Inbound, dst: "10.200.1.12:8080", src: ap("10.200.1.11:1"), principal: idReviews,
			chain: "production/frontend|8080", identity: idFrontend, http: true, want: Decision{Allowed: true}},
		// ratings: ALLOW reviews on 9080, staging anywhere; DENY an IP
		// block and any "evil" service account.
		{name: "ratings, reviews on 9080", l: node2.Inbound, dst: "10.200.2.12:9080", src: peer, principal: idReviews,
			chain: "production/ratings|9080", identity: idRatings, http: true, want: Decision{Allowed: true, Policy: allowRatings0}},
		{name: "ratings, reviews on 7000", l: node2.Inbound, dst: "10.200.2.12:7000", src: peer, principal: idReviews,
			chain: "production/ratings|*", identity: idRatings, want: Decision{}},
		{name: "ratings, frontend", l: node2.Inbound, dst: "10.200.2.12:9080", src: peer, principal: idFrontend,
			chain: "production/ratings|9080", identity: idRatings, http: true, want: Decision{}},
		{name: "ratings, staging", l: node2.Inbound, dst: "10.200.2.12:7000", src: peer, principal: "spiffe://cluster.local/ns/staging/sa/x",
			chain: "production/ratings|*", identity: idRatings, want: Decision{Allowed: true, Policy: allowRatings1}},
		{name: "ratings, reviews from a denied IP", l: node2.Inbound, dst: "10.200.2.12:9080", src: ap("10.200.9.7:1"), principal: idReviews,
			chain: "production/ratings|9080", identity: idRatings, http: true, want: Decision{Policy: denyRatings0}},
		{name: "ratings, evil", l: node2.Inbound, dst: "10.200.2.12:9080", src: peer, principal: "spiffe://cluster.local/ns/staging/sa/evil",
			chain: "production/ratings|9080", identity: idRatings, http: true, want: Decision{Policy: denyRatings1}},
		// Plaintext to the PERMISSIVE port: no principal, so the ALLOW
		// rules (all on principals) deny.
		{name: "ratings plaintext 9080", l: node2.InboundPlaintext, dst: "10.200.2.12:9080", src: peer,
			chain: "production/ratings|9080", http: true, want: Decision{}},
		{name: "ratings plaintext from a denied IP", l: node2.InboundPlaintext, dst: "10.200.2.12:9080", src: ap("10.200.9.1:2"),
			chain: "production/ratings|9080", http: true, want: Decision{Policy: denyRatings0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.l.Match(MatchInput{Destination: ap(tc.dst), Source: tc.src})
			if c == nil {
				t.Fatal("no chain")
			}
			if c.Name != tc.chain {
				t.Fatalf("chain %q, want %q", c.Name, tc.chain)
			}
			switch {
			case tc.identity == "" && c.TLS != nil:
				t.Errorf("TLS %+v on a plaintext chain", c.TLS)
			case tc.identity != "" && (c.TLS == nil || c.TLS.Identity.String() != tc.identity || !c.TLS.RequireClientCert):
				t.Errorf("TLS %+v, want %s with a client certificate required", c.TLS, tc.identity)
			}
			if tc.http {
				if c.HTTP == nil || c.HTTP.DefaultCluster != "inbound-passthrough" || c.HTTP.RouteConfig != "" {
					t.Errorf("HTTP %+v, want inline route → inbound-passthrough", c.HTTP)
				}
			} else if c.TCP == nil || c.TCP.PickCluster(7) != "inbound-passthrough" {
				t.Errorf("TCP %+v, want → inbound-passthrough", c.TCP)
			}
			got := c.RBAC.Evaluate(AuthzInput{Principal: tc.principal, Source: tc.src, Destination: ap(tc.dst)})
			if got != tc.want {
				t.Errorf("Evaluate = %+v, want %+v", got, tc.want)
			}
		})
	}
	// Nothing of node2's is on node1, and no chain for a port of another
	// address.
	if c := node1.Inbound.Match(MatchInput{Destination: ap("10.200.2.12:9080")}); c != nil {
		t.Errorf("node1 matched ratings' address: %s", c.Name)
	}
}

// Updates: an unchanged resource keeps its compiled form (and its
// state), a changed one is recompiled, the snapshot and Changed follow.
func TestStoreIncremental(t *testing.T) {
	s := NewStore()
	if snap := s.Snapshot(); snap == nil || snap.Outbound != nil || snap.Clusters == nil {
		t.Fatalf("empty store's snapshot: %+v", snap)
	}
	res := meshResources(t, loadModel(t, nil), "node1")
	feed(t, s, res, "v1")
	first := s.Snapshot()
	reviewsV1 := first.Clusters["outbound|9080|v1|"+reviews]
	reviewsV1.Endpoints.Hosts[0].Active.Add(3) // a connection in flight

	// The same resources decoded again (a state-of-the-world response):
	// equal messages, new pointers. Nothing is recompiled.
	changed := s.Changed()
	again := map[string]proto.Message{}
	for k, v := range res[resource.EndpointType] {
		again[k] = proto.Clone(v)
	}
	if err := s.Update(resource.EndpointType, again, "v2"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by an update")
	}
	second := s.Snapshot()
	if second == first || second.Versions[resource.EndpointType] != "v2" {
		t.Fatalf("snapshot not replaced: versions %v", second.Versions)
	}
	if second.Clusters["outbound|9080|v1|"+reviews] != reviewsV1 || reviewsV1.Endpoints.Hosts[0].Active.Load() != 3 {
		t.Error("an unchanged cluster and assignment were recompiled")
	}
	if second.Outbound != first.Outbound {
		t.Error("an EDS update rebuilt the listeners")
	}

	// reviews v2 loses its endpoint: only its cluster changes.
	next := clonedMap(again)
	c2 := proto.Clone(res[resource.EndpointType]["outbound|9080|v2|"+reviews]).(*endpointv3.ClusterLoadAssignment)
	c2.Endpoints = nil
	next["outbound|9080|v2|"+reviews] = c2
	if err := s.Update(resource.EndpointType, next, "v3"); err != nil {
		t.Fatal(err)
	}
	third := s.Snapshot()
	if third.Clusters["outbound|9080|v1|"+reviews] != reviewsV1 {
		t.Error("v1 recompiled when v2 changed")
	}
	v2 := third.Clusters["outbound|9080|v2|"+reviews]
	if _, err := v2.Pick(ap("10.200.1.12:1"), nil); err == nil || !strings.Contains(err.Error(), "outbound|9080|v2|"+reviews) {
		t.Errorf("Pick on an empty assignment: %v", err)
	}
	if first.Clusters["outbound|9080|v2|"+reviews].Endpoints.Healthy == nil {
		t.Error("the old snapshot was modified")
	}

	// The assignment removed: "no EDS yet".
	delete(next, "outbound|9080|v2|"+reviews)
	if err := s.Update(resource.EndpointType, next, "v4"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot().Clusters["outbound|9080|v2|"+reviews].Pick(ap("10.200.1.12:1"), nil); err == nil ||
		!strings.Contains(err.Error(), ErrNoAssignment.Error()) {
		t.Errorf("Pick without an assignment: %v", err)
	}

	// RDS before LDS's route arrives: the chain has no cluster until it
	// does.
	s2 := NewStore()
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		if err := s2.Update(typ, res[typ], "v1"); err != nil {
			t.Fatal(err)
		}
	}
	c := s2.Snapshot().Outbound.Match(MatchInput{Destination: ap("10.96.0.12:9080")})
	if c.HTTP.DefaultCluster != "" || c.HTTP.PickCluster(1) != "" {
		t.Errorf("route not received yet, but chain → %q", c.HTTP.DefaultCluster)
	}
	if err := s2.Update(resource.RouteType, res[resource.RouteType], "v1"); err != nil {
		t.Fatal(err)
	}
	if c := s2.Snapshot().Outbound.Match(MatchInput{Destination: ap("10.96.0.12:9080")}); c.HTTP.DefaultCluster != "outbound|9080||"+ratings {
		t.Errorf("after RDS: → %q", c.HTTP.DefaultCluster)
	}

	// Other types are ignored.
	if err := s.Update(resource.SecretType, map[string]proto.Message{"x": nil}, "v9"); err != nil {
		t.Errorf("a secret update: %v", err)
	}
}

func clonedMap(m map[string]proto.Message) map[string]proto.Message {
	out := make(map[string]proto.Message, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// A headless Service has no VIP: the DNS table answers its name with
// its ready endpoints, and its pods, called by IP, are tunnelled.
func TestExamplesHeadless(t *testing.T) {
	snap := storeFor(t, map[string]string{"30-headless.yaml": `
apiVersion: v1
kind: Service
metadata: {name: db, namespace: production}
spec:
  clusterIP: None
  selector: {app: ratings}
  ports:
  - {name: tcp, port: 5432, targetPort: 5432, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: production
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports:
- {name: tcp, port: 5432, protocol: TCP}
endpoints:
- addresses: ["10.200.2.12"]
  conditions: {ready: true}
  nodeName: node2
  targetRef: {kind: Pod, namespace: production, name: ratings}
`}, "node1")
	const db = "db.production.svc.cluster.local"
	if got := snap.Hosts[db]; len(got) != 1 || got[0] != netip.MustParseAddr("10.200.2.12") {
		t.Errorf("Hosts[%s] = %v, want [10.200.2.12]", db, got)
	}
	c := snap.Clusters["outbound|5432||"+db]
	if c == nil || c.TLS == nil || c.Endpoints == nil {
		t.Fatalf("headless cluster %+v", c)
	}
	// No chain for it: the passthrough default chain, as docs/xds.md says.
	if ch := snap.Outbound.Match(MatchInput{Destination: ap("10.200.2.12:5432")}); ch == nil || ch.Name != "outbound-passthrough" {
		t.Errorf("chain %v", ch)
	}
	if snap.Endpoints[netip.MustParseAddr("10.200.2.12")] == nil {
		t.Error("the pod is not in Endpoints")
	}
}

// Connections read snapshots while updates replace them (run with
// -race).
func TestStoreConcurrent(t *testing.T) {
	s := NewStore()
	res := meshResources(t, loadModel(t, nil), "node1")
	feed(t, s, res, "v0")
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			out, in := fixtureInputs()
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				snap := s.Snapshot()
				c := snap.Outbound.Match(out)
				if c == nil || c.HTTP == nil {
					errs <- fmt.Errorf("no outbound chain")
					return
				}
				cl := snap.Clusters[c.HTTP.DefaultCluster]
				e, err := cl.Pick(out.Source, nil)
				if err != nil {
					errs <- err
					return
				}
				e.Active.Add(1)
				snap.Inbound.Match(in).RBAC.Evaluate(AuthzInput{Principal: idFrontend, Source: in.Source, Destination: in.Destination})
				e.Active.Add(-1)
			}
		}()
	}
	for i := range 50 {
		// Alternate equal copies (recompiled nothing) and real changes.
		eds := clonedMap(res[resource.EndpointType])
		if i%2 == 1 {
			c := proto.Clone(eds["outbound|9080||"+reviews]).(*endpointv3.ClusterLoadAssignment)
			c.Endpoints = c.Endpoints[:1]
			eds["outbound|9080||"+reviews] = c
		}
		if err := s.Update(resource.EndpointType, eds, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(resource.RouteType, res[resource.RouteType], fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A VirtualService tls rule makes the controller add tls_inspector with a
// filter_disabled predicate and SNI chains: the slow path accepts both
// and matches by server name.
func TestExamplesTLSRoute(t *testing.T) {
	snap := storeFor(t, map[string]string{"zz-tls.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: books-sni
  namespace: production
spec:
  hosts: [api.books.example.com]
  tls:
  - match:
    - port: 443
      sniHosts: [api.books.example.com]
    route:
    - destination: {host: api.books.example.com, port: {number: 443}}
`}, "node1")
	var sni *FilterChain
	for _, c := range snap.Outbound.Chains {
		if slices.Contains(c.ServerNames, books) {
			sni = c
		}
	}
	if sni == nil || sni.TCP == nil || len(sni.TCP.Clusters) != 1 || sni.TCP.Clusters[0].Name != "outbound|443||"+books {
		t.Fatalf("no SNI chain for %s to its cluster: %+v", books, sni)
	}
}
