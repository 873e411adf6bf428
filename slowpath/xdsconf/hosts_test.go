package xdsconf

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestHostsTCPRuleToAnotherHost: a VirtualService tcp rule routes A's
// VIP to B's cluster. The DNS table must still answer A with A's VIP and
// B with B's only: the controller marks each outbound chain with its
// host (metadata.filter_metadata["fibmesh"].host), which wins over the
// cluster the chain routes to.
func TestHostsTCPRuleToAnotherHost(t *testing.T) {
	snap := storeFor(t, map[string]string{"zz-tcp-a-to-b.yaml": `apiVersion: v1
kind: Service
metadata: {name: db-a, namespace: production}
spec:
  clusterIP: 10.96.0.201
  ports:
  - {name: tcp, port: 5432, targetPort: 5432, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: db-b, namespace: production}
spec:
  clusterIP: 10.96.0.202
  ports:
  - {name: tcp, port: 5432, targetPort: 5432, protocol: TCP}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-to-b, namespace: production}
spec:
  hosts: [db-a.production.svc.cluster.local]
  tcp:
  - route:
    - destination: {host: db-b.production.svc.cluster.local, port: {number: 5432}}
`}, "node1")
	const a, b = "db-a.production.svc.cluster.local", "db-b.production.svc.cluster.local"
	// The rule holds: A's VIP goes to B's cluster.
	ch := snap.Outbound.Match(MatchInput{Destination: ap("10.96.0.201:5432")})
	if ch == nil || ch.TCP == nil || len(ch.TCP.Clusters) != 1 || ch.TCP.Clusters[0].Name != "outbound|5432||"+b {
		t.Fatalf("chain of A's VIP %+v; want tcp_proxy to B's cluster", ch)
	}
	for host, want := range map[string][]netip.Addr{a: {netip.MustParseAddr("10.96.0.201")}, b: {netip.MustParseAddr("10.96.0.202")}} {
		if d := cmp.Diff(want, snap.Hosts[host], cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
			t.Errorf("Hosts[%s] (-want +got):\n%s", host, d)
		}
	}
}

// TestHostsWithoutMetadata: a chain the controller did not mark takes
// its host from its route configuration or cluster.
func TestHostsWithoutMetadata(t *testing.T) {
	vip := netip.MustParsePrefix("10.96.0.9/32")
	for _, tc := range []struct {
		name  string
		chain *FilterChain
		host  string
	}{
		{"tcp by stat prefix", &FilterChain{Prefixes: []netip.Prefix{vip}, TCP: &TCPProxy{}, StatPrefix: "outbound|80||x.example.com"}, "x.example.com"},
		{"tcp by its one cluster", &FilterChain{Prefixes: []netip.Prefix{vip}, TCP: &TCPProxy{Clusters: []WeightedCluster{{Name: "outbound|80||Y.example.com"}}}}, "y.example.com"},
		{"http by route configuration", &FilterChain{Prefixes: []netip.Prefix{vip}, HTTP: &HTTPChain{RouteConfig: "z.example.com:80"}}, "z.example.com"},
	} {
		got := hosts(&Listener{Chains: []*FilterChain{tc.chain}}, nil, nil)
		if d := cmp.Diff(map[string][]netip.Addr{tc.host: {vip.Addr()}}, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
}
