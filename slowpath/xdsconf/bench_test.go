package xdsconf

import (
	"fmt"
	"math/rand/v2"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// connection is what the proxy does per connection with the snapshot:
// the outbound chain, its cluster, an endpoint; on the other side the
// inbound chain and its authorization.
func connection(tb testing.TB, snap *Snapshot, in, authz MatchInput, principal string) {
	c := snap.Outbound.Match(in)
	name := c.HTTP.PickCluster(rand.Uint32())
	if _, err := snap.Clusters[name].Pick(in.Source, nil); err != nil {
		tb.Fatal(err)
	}
	ic := snap.Inbound.Match(authz)
	if d := ic.RBAC.Evaluate(AuthzInput{Principal: principal, Source: authz.Source, Destination: authz.Destination}); d.Allowed {
		tb.Fatal("allowed at L4 against the fixture's HTTP-only policy")
	}
}

func fixtureInputs() (out, in MatchInput) {
	out = MatchInput{Destination: ap("10.96.0.11:9080"), Source: ap("10.200.1.12:40000")}
	in = MatchInput{Destination: ap("10.200.1.11:9080"), Source: ap("10.200.1.12:40000")}
	return out, in
}

// The per-connection path does not allocate, whatever the LB policy.
func TestConnectionAllocs(t *testing.T) {
	snap := storeFor(t, nil, "node1")
	out, in := fixtureInputs()
	if n := testing.AllocsPerRun(1000, func() { connection(t, snap, out, in, idFrontend) }); n != 0 {
		t.Errorf("%.1f allocations per connection", n)
	}
	for _, lb := range []LBPolicy{LeastRequest, RoundRobin, Random, RingHash, Maglev} {
		for _, eps := range []*Endpoints{endpoints(1, 1, 1, 1), endpoints(1, 2, 3, 4)} {
			c := cluster(lb, eps)
			eps.prepare(c)
			skip := eps.Hosts[1]
			if n := testing.AllocsPerRun(1000, func() {
				if _, err := c.Pick(source(3), func(e *Endpoint) bool { return e == skip }); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("%v: %.1f allocations per Pick", lb, n)
			}
		}
	}
}

// BenchmarkConnection: Match (outbound) + PickCluster + Pick + Match
// (inbound) + Evaluate, on the fixture mesh.
func BenchmarkConnection(b *testing.B) {
	snap := storeFor(b, nil, "node1")
	out, in := fixtureInputs()
	b.ReportAllocs()
	for b.Loop() {
		connection(b, snap, out, in, idFrontend)
	}
}

// BenchmarkPick per policy over 16 endpoints.
func BenchmarkPick(b *testing.B) {
	for _, lb := range []LBPolicy{LeastRequest, RoundRobin, Random, RingHash, Maglev} {
		b.Run(lb.String(), func(b *testing.B) {
			w := make([]uint32, 16)
			for i := range w {
				w[i] = 1
			}
			c := cluster(lb, endpoints(w...))
			c.Endpoints.prepare(c)
			src := source(7)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Pick(src, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// bigMesh scales the fixture to n services: the reviews cluster, its
// assignment, route configuration and outbound chain, n times.
func bigMesh(b *testing.B, n int) map[string]map[string]proto.Message {
	res := meshResources(b, loadModel(b, nil), "node1")
	out := map[string]map[string]proto.Message{resource.ClusterType: {}, resource.EndpointType: {}, resource.ListenerType: {}, resource.RouteType: {}}
	c := res[resource.ClusterType]["outbound|9080||"+reviews].(*clusterv3.Cluster)
	e := res[resource.EndpointType]["outbound|9080||"+reviews].(*endpointv3.ClusterLoadAssignment)
	r := res[resource.RouteType][reviews+":9080"].(*routev3.RouteConfiguration)
	l := proto.Clone(res[resource.ListenerType][OutboundListener]).(*listenerv3.Listener)
	chain := l.FilterChains[1] // 10.96.0.11_9080, HTTP
	l.FilterChains = nil
	for i := range n {
		host := fmt.Sprintf("s%d.ns.svc.cluster.local", i)
		name := "outbound|9080||" + host
		cc := proto.Clone(c).(*clusterv3.Cluster)
		cc.Name = name
		ec := proto.Clone(e).(*endpointv3.ClusterLoadAssignment)
		ec.ClusterName = name
		rc := proto.Clone(r).(*routev3.RouteConfiguration)
		rc.Name = host + ":9080"
		rc.VirtualHosts[0].Routes = rc.VirtualHosts[0].Routes[1:2]
		rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: name}
		fc := proto.Clone(chain).(*listenerv3.FilterChain)
		vip := fmt.Sprintf("10.96.%d.%d", i/256, i%256)
		fc.Name = vip + "_9080"
		fc.FilterChainMatch.PrefixRanges[0].AddressPrefix = vip
		hcm := &hcmv3.HttpConnectionManager{}
		if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
			b.Fatal(err)
		}
		hcm.GetRds().RouteConfigName = rc.Name
		fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(b, hcm)}
		l.FilterChains = append(l.FilterChains, fc)
		out[resource.ClusterType][name], out[resource.EndpointType][name], out[resource.RouteType][rc.Name] = cc, ec, rc
	}
	out[resource.ListenerType][OutboundListener] = l
	return out
}

// BenchmarkUpdateFull compiles a 1,000-service mesh from scratch (an
// agent's first sync).
func BenchmarkUpdateFull(b *testing.B) {
	res := bigMesh(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		feed(b, NewStore(), res, "v1")
	}
}

// BenchmarkUpdateOneEndpoint is an EDS response that changes one
// assignment of 1,000: one compile, then the snapshot.
func BenchmarkUpdateOneEndpoint(b *testing.B) {
	res := bigMesh(b, 1000)
	s := NewStore()
	feed(b, s, res, "v1")
	eds := clonedMap(res[resource.EndpointType])
	name := "outbound|9080||s7.ns.svc.cluster.local"
	variants := []proto.Message{eds[name], proto.Clone(eds[name])}
	variants[1].(*endpointv3.ClusterLoadAssignment).Endpoints = variants[1].(*endpointv3.ClusterLoadAssignment).Endpoints[:1]
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		eds[name] = variants[i%2]
		if err := s.Update(resource.EndpointType, eds, "v"); err != nil {
			b.Fatal(err)
		}
	}
	if got := len(s.Snapshot().Clusters); got != 1000 {
		b.Fatalf("%d clusters", got)
	}
}

// BenchmarkHTTPAuthz: one request's Evaluate on the fixture's chain with
// the extra policies (DENY, then ALLOW rules).
func BenchmarkHTTPAuthz(b *testing.B) {
	c := reviewsChain(b, map[string]string{"30-reviews-more.yaml": reviewsPolicies})
	in := AuthzInput{Principal: idFrontend, Source: ap("10.200.1.12:4000"), Destination: ap("10.200.1.11:9080"),
		Request: request("GET", "/api/reviews/1", "reviews:9080", headers{"x-request-id": "7f9c"})}
	b.ReportAllocs()
	for b.Loop() {
		if !c.HTTP.RBAC.Evaluate(in).Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkHashPick: a request's consistent-hash key (header, then
// cookie) and the endpoint it picks, per table, over 16 endpoints.
func BenchmarkHashPick(b *testing.B) {
	r := hashRoute(b, hashHeader("x-user", false), hashCookie("session", "/", nil))
	req := request("GET", "/api/reviews/1", "reviews:9080", headers{"x-user": "alice", "cookie": "a=1; session=42"})
	src := ap("10.200.1.12:40000")
	for _, lb := range []LBPolicy{RingHash, Maglev} {
		b.Run(lb.String(), func(b *testing.B) {
			w := make([]uint32, 16)
			for i := range w {
				w[i] = 1
			}
			c := cluster(lb, endpoints(w...))
			c.Endpoints.prepare(c)
			b.ReportAllocs()
			for b.Loop() {
				h, ok := r.HashKey(src.Addr(), req)
				if _, err := c.PickRequest(src, h, ok, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
