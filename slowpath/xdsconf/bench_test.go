package xdsconf

import (
	"math/rand/v2"
	"testing"
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
			eps.prepare(lb)
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
			c.Endpoints.prepare(lb)
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
