package envoy

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fibmesh/fibmesh/controller/model"
)

// DestinationRule consistentHash → the cluster's lb_policy and lb_config
// and the hash_policy of every route to the host, as Istio translates
// them.
func TestConsistentHash(t *testing.T) {
	header := func(n string) *routev3.RouteAction_HashPolicy {
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: n}}}
	}
	hashed := func(ch *model.ConsistentHash) *model.DestinationPolicy {
		return &model.DestinationPolicy{Namespace: "ns", Name: "a", Host: host("a"), LoadBalancer: "CONSISTENT_HASH", ConsistentHash: ch,
			Subsets: []model.Subset{{Name: "v1", Labels: map[string]string{"app": "a"}}, {Name: "v2", Labels: map[string]string{"app": "a"}}}}
	}
	ring := &clusterv3.Cluster{LbPolicy: clusterv3.Cluster_RING_HASH}
	for _, tc := range []struct {
		name     string
		dp       *model.DestinationPolicy
		wantLB   *clusterv3.Cluster // LbPolicy and LbConfig
		wantHash []*routev3.RouteAction_HashPolicy
	}{
		{"header", hashed(&model.ConsistentHash{HTTPHeaderName: "X-User"}), ring, []*routev3.RouteAction_HashPolicy{header("x-user")}},
		{"cookie with ttl and path", hashed(&model.ConsistentHash{HTTPCookie: &model.HTTPCookie{Name: "s", Path: "/p", TTL: "1h0m0s"}}), ring,
			[]*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "s", Path: "/p", Ttl: secs(3600)}}}}},
		{"session cookie", hashed(&model.ConsistentHash{HTTPCookie: &model.HTTPCookie{Name: "s", TTL: "0s"}}), ring,
			[]*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "s", Ttl: secs(0)}}}}},
		{"cookie without ttl", hashed(&model.ConsistentHash{HTTPCookie: &model.HTTPCookie{Name: "s"}}), ring,
			[]*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "s"}}}}},
		{"cookie without a name: no key", hashed(&model.ConsistentHash{HTTPCookie: &model.HTTPCookie{}}), ring, nil},
		{"source ip", hashed(&model.ConsistentHash{UseSourceIP: true}), ring,
			[]*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}}},
		{"query parameter", hashed(&model.ConsistentHash{HTTPQueryParameterName: "user"}), ring,
			[]*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "user"}}}}},
		{"no key", hashed(&model.ConsistentHash{}), ring, nil},
		{"minimum ring size", hashed(&model.ConsistentHash{HTTPHeaderName: "x", MinimumRingSize: 2048}),
			&clusterv3.Cluster{LbPolicy: clusterv3.Cluster_RING_HASH, LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(2048)}}},
			[]*routev3.RouteAction_HashPolicy{header("x")}},
		{"maglev", hashed(&model.ConsistentHash{HTTPHeaderName: "x", Maglev: true}), &clusterv3.Cluster{LbPolicy: clusterv3.Cluster_MAGLEV},
			[]*routev3.RouteAction_HashPolicy{header("x")}},
		{"maglev table size", hashed(&model.ConsistentHash{HTTPHeaderName: "x", Maglev: true, MaglevTableSize: 65537}),
			&clusterv3.Cluster{LbPolicy: clusterv3.Cluster_MAGLEV, LbConfig: &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(65537)}}},
			[]*routev3.RouteAction_HashPolicy{header("x")}},
		{"not consistent hash", &model.DestinationPolicy{Namespace: "ns", Name: "a", Host: host("a"), LoadBalancer: "ROUND_ROBIN",
			Subsets: []model.Subset{{Name: "v1"}, {Name: "v2"}}}, &clusterv3.Cluster{LbPolicy: clusterv3.Cluster_ROUND_ROBIN}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wa, wb := workload("a", "10.0.0.1", model.ModeStrict), workload("b", "10.0.0.2", model.ModeStrict)
			svcs := []*model.Service{
				service("a", []string{"10.1.0.1"}, []model.Port{httpPort(80)}, wa),
				service("b", []string{"10.1.0.2"}, []model.Port{httpPort(80)}, wb),
				service("c", []string{"10.1.0.3"}, []model.Port{httpPort(80)}, wb),
			}
			routes := []*model.Route{{Namespace: "ns", Name: "b", Hosts: []string{host("b")}, HTTP: []model.HTTPRoute{
				// A canary split over a's subsets, then a rule to a and c
				// (c first, without a hash key), then one to c only.
				{Name: "split", Matches: []model.Match{{URI: &model.StringMatch{Kind: "prefix", Value: "/split"}}},
					Destinations: []model.Destination{{Host: host("a"), Subset: "v1", Weight: 90}, {Host: host("a"), Subset: "v2", Weight: 10}}},
				{Name: "mixed", Matches: []model.Match{{URI: &model.StringMatch{Kind: "prefix", Value: "/mixed"}}, {URI: &model.StringMatch{Kind: "prefix", Value: "/mixed2"}}},
					Destinations: []model.Destination{{Host: host("c"), Weight: 50}, {Host: host("a"), Weight: 50}}},
				{Name: "c", Destinations: []model.Destination{{Host: host("c"), Weight: 100}}},
			}}}
			got := buildMesh(t, mesh(svcs, []*model.Workload{wa, wb}, routes, []*model.DestinationPolicy{tc.dp}, nil))
			for _, name := range []string{"outbound|80||" + host("a"), "outbound|80|v1|" + host("a"), "outbound|80|v2|" + host("a")} {
				c := findCluster(t, got, name)
				if d := gocmp.Diff(tc.wantLB, &clusterv3.Cluster{LbPolicy: c.LbPolicy, LbConfig: c.LbConfig}, protocmp.Transform()); d != "" {
					t.Errorf("cluster %s lb (-want +got):\n%s", name, d)
				}
			}
			if c := findCluster(t, got, "outbound|80||"+host("c")); c.LbPolicy != clusterv3.Cluster_LEAST_REQUEST || c.LbConfig != nil {
				t.Errorf("c's cluster: %v %v, want LEAST_REQUEST", c.LbPolicy, c.LbConfig)
			}
			hashOf := func(rc string, i int) []*routev3.RouteAction_HashPolicy {
				rs := findRoute(t, got, rc).VirtualHosts[0].Routes
				if i >= len(rs) {
					t.Fatalf("%s has %d routes", rc, len(rs))
				}
				return rs[i].GetRoute().GetHashPolicy()
			}
			for _, r := range []struct {
				rc   string
				i    int
				want []*routev3.RouteAction_HashPolicy
			}{
				{host("a") + ":80", 0, tc.wantHash}, // a's default route
				{host("b") + ":80", 0, tc.wantHash}, // split over a's subsets
				{host("b") + ":80", 1, tc.wantHash}, // c then a: a's key
				{host("b") + ":80", 2, tc.wantHash}, // the same rule's second match
				{host("b") + ":80", 3, nil},         // c only
				{host("c") + ":80", 0, nil},
			} {
				if d := gocmp.Diff(r.want, hashOf(r.rc, r.i), protocmp.Transform()); d != "" {
					t.Errorf("%s route %d hash_policy (-want +got):\n%s", r.rc, r.i, d)
				}
			}
		})
	}
}
