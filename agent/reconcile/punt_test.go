package reconcile

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// udpPort is node1's pod a's UDP port 5353 with policies ps.
func udpPort(ps ...*fibv1.AuthzPolicy) *fibv1.PortPolicy {
	return &fibv1.PortPolicy{Ip: "10.200.1.11", Port: 5353, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_PERMISSIVE, Authz: ps}
}

var udpKey = fib.PolicyKey{Addr: netip.MustParseAddr("10.200.1.11"), Port: 5353, Proto: fib.ProtoUDP}

func TestCompilePunt(t *testing.T) {
	allowFront := &fibv1.AuthzPolicy{Namespace: "default", Name: "allow-front", Action: fibv1.AuthzAction_ALLOW, Rules: []*fibv1.AuthzRule{{
		From: []*fibv1.AuthzSource{{Namespaces: []string{"front*"}, NotIpBlocks: []string{"10.9.0.0/16", "10.8.0.1"}, Principals: []string{"x"}}},
		To:   []*fibv1.AuthzOperation{{Ports: []string{"5353"}, Methods: []string{"GET"}}, {NotPorts: []string{"53"}}},
		When: []*fibv1.AuthzCondition{
			{Key: "source.ip", Values: []string{"10.200.0.0/16"}, NotValues: []string{"10.200.9.9"}},
			{Key: "request.headers[x]", Values: []string{"y"}},
			{Key: "destination.port", Values: []string{"http"}},
		},
	}}}
	audit := &fibv1.AuthzPolicy{Namespace: "default", Name: "audit", Action: fibv1.AuthzAction_AUDIT, Rules: []*fibv1.AuthzRule{{}}}
	for _, tt := range []struct {
		name string
		pp   *fibv1.PortPolicy
		want []L4Policy // nil: not in the punt set
	}{
		{"no policy", udpPort(), nil},
		{"AUDIT only changes no verdict", udpPort(audit), nil},
		{"ALLOW with every kind of field", udpPort(allowFront, audit), []L4Policy{{
			Name: "default/allow-front", Action: L4Allow, Rules: []L4Rule{{
				From: [][]L4Match{{
					{Attr: AttrUndecidable, Field: "rules[0].from[0].source.principals"},
					{Attr: AttrSourceNamespace, Patterns: []string{"front*"}, Field: "rules[0].from[0].source.namespaces"},
					{Attr: AttrSourceIP, Not: true, Prefixes: []netip.Prefix{pfx("10.9.0.0/16"), pfx("10.8.0.1/32")}, Field: "rules[0].from[0].source.notIpBlocks"},
				}},
				To: [][]L4Match{
					{
						{Attr: AttrUndecidable, Field: "rules[0].to[0].operation.methods"},
						{Attr: AttrDestPort, Ports: []uint16{5353}, Field: "rules[0].to[0].operation.ports"},
					},
					{{Attr: AttrDestPort, Not: true, Ports: []uint16{53}, Field: "rules[0].to[1].operation.notPorts"}},
				},
				When: []L4Match{
					{Attr: AttrSourceIP, Prefixes: []netip.Prefix{pfx("10.200.0.0/16")}, Field: "rules[0].when[0].values"},
					{Attr: AttrSourceIP, Not: true, Prefixes: []netip.Prefix{pfx("10.200.9.9/32")}, Field: "rules[0].when[0].notValues"},
					{Attr: AttrUndecidable, Field: `rules[0].when[1] (key "request.headers[x]")`},
					{Attr: AttrUndecidable, Field: `rules[0].when[2].values ("http": not a port)`},
				},
			}},
		}, {Name: "default/audit", Action: L4Audit, Rules: []L4Rule{{}}}}},
		{"DENY without rules still covers the port", udpPort(&fibv1.AuthzPolicy{Namespace: "ns", Name: "d", Action: fibv1.AuthzAction_DENY}),
			[]L4Policy{{Name: "ns/d", Action: L4Deny}}},
		{"a bad CIDR makes its field undecidable", udpPort(&fibv1.AuthzPolicy{Namespace: "ns", Name: "c", Action: fibv1.AuthzAction_CUSTOM,
			Rules: []*fibv1.AuthzRule{{From: []*fibv1.AuthzSource{{IpBlocks: []string{"10.0.0.1", "10.0.0.300/8"}}}}}}),
			[]L4Policy{{Name: "ns/c", Action: L4Custom, Rules: []L4Rule{{From: [][]L4Match{{
				{Attr: AttrUndecidable, Field: `rules[0].from[0].source.ipBlocks ("10.0.0.300/8": netip.ParsePrefix("10.0.0.300/8"): ParseAddr("10.0.0.300"): IPv4 field has value >255)`},
			}}}}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := tables()
			tb["node1"].PortPolicies = append(tb["node1"].PortPolicies, tt.pp)
			d, err := Compile("node1", tb)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := d.Punt[udpKey]
			if ok != (tt.want != nil) {
				t.Fatalf("port in the punt set: %t, want %t", ok, tt.want != nil)
			}
			if d := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Prefix{})); d != "" {
				t.Errorf("policies (-want +got):\n%s", d)
			}
			if len(d.Punt) > 1 {
				t.Errorf("punt set %v: want the UDP port alone", d.Punt)
			}
		})
	}
}

func TestCompilePuntRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		pp   *fibv1.PortPolicy
		want string
	}{
		{"policy on a TCP port", &fibv1.PortPolicy{Ip: "10.200.1.11", Port: 80, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_STRICT,
			Authz: []*fibv1.AuthzPolicy{{Namespace: "ns", Name: "p", Action: fibv1.AuthzAction_ALLOW}}},
			`flow table "node1": port_policies[1].authz: set on a TCP port: want UDP ports only`},
		{"unspecified action", udpPort(&fibv1.AuthzPolicy{Namespace: "ns", Name: "p"}),
			`flow table "node1": port_policies[1].authz[0] (ns/p).action AUTHZ_ACTION_UNSPECIFIED: want ALLOW, DENY, AUDIT or CUSTOM`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := tables()
			tb["node1"].PortPolicies = append(tb["node1"].PortPolicies, tt.pp)
			_, err := Compile("node1", tb)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile: %v\nwant an error containing %s", err, tt.want)
			}
		})
	}
}

// puntDP is a fakeDP that keeps whole policy entries (Punt included).
type puntDP struct {
	*fakeDP
	mu      sync.Mutex
	entries map[fib.PolicyKey]fib.PolicyEntry
}

func (d *puntDP) PutPolicies(es ...fib.PolicyEntry) error {
	d.mu.Lock()
	for _, e := range es {
		d.entries[e.Key] = e
	}
	d.mu.Unlock()
	return d.fakeDP.PutPolicies(es...)
}

func (d *puntDP) ListPolicies() ([]fib.PolicyEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []fib.PolicyEntry
	for _, e := range d.entries {
		out = append(out, e)
	}
	sortPolicy(out)
	return out, nil
}

// The punt set reaches the FIB as PolicyEntry.Punt, written again when
// only that changes, and read back by a restarted agent; Applied sees
// each change.
func TestReconcilePunt(t *testing.T) {
	dp := &puntDP{fakeDP: newFakeDP(), entries: map[fib.PolicyKey]fib.PolicyEntry{}}
	res := newFakeRes()
	resolvable(res)
	type applied struct{ Prev, Next bool } // whether each covered the port
	var seen []applied
	cfg := Config{Node: "node1", NIC: "eth0", Dataplane: dp, Resolver: res, Applied: func(prev, next *Desired) {
		covered := func(d *Desired) bool {
			if d == nil {
				return false
			}
			_, ok := d.Punt[udpKey]
			return ok
		}
		seen = append(seen, applied{covered(prev), covered(next)})
	}}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(pp *fibv1.PortPolicy) {
		t.Helper()
		tb := tables()
		tb["node1"].PortPolicies = append(tb["node1"].PortPolicies, pp)
		if err := r.Apply(tb); err != nil {
			t.Fatal(err)
		}
	}
	deny := &fibv1.AuthzPolicy{Namespace: "ns", Name: "d", Action: fibv1.AuthzAction_DENY, Rules: []*fibv1.AuthzRule{{}}}
	want := func(punt bool) {
		t.Helper()
		got, _ := dp.ListPolicies()
		w := []fib.PolicyEntry{
			{Key: fib.PolicyKey{Addr: netip.MustParseAddr("10.200.1.11"), Port: 5353, Proto: fib.ProtoUDP}, Mode: fib.ModePermissive, Punt: punt},
			{Key: fib.PolicyKey{Addr: netip.MustParseAddr("10.200.1.11"), Port: 8080, Proto: fib.ProtoTCP}, Mode: fib.ModeStrict},
		}
		sortPolicy(w)
		if d := cmp.Diff(w, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Errorf("policy map (-want +got):\n%s", d)
		}
		if d := cmp.Diff(w, r.Status().Policies, cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Errorf("Status().Policies (-want +got):\n%s", d)
		}
	}
	apply(udpPort())
	want(false)
	dp.takeOps()
	apply(udpPort(deny))
	want(true)
	if ops := dp.takeOps(); !cmp.Equal(ops, []string{"pput " + udpKey.String()}) {
		t.Errorf("ops %v: want the UDP port's entry written, alone", ops)
	}
	// A restarted agent reads Punt back: the same tables write nothing.
	r2, err := New(Config{Node: "node1", NIC: "eth0", Dataplane: dp, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	tb := tables()
	tb["node1"].PortPolicies = append(tb["node1"].PortPolicies, udpPort(deny))
	if err := r2.Apply(tb); err != nil {
		t.Fatal(err)
	}
	if ops := dp.takeOps(); len(ops) != 0 {
		t.Errorf("restarted reconciler wrote %v; want nothing", ops)
	}
	apply(udpPort())
	want(false)
	if d := cmp.Diff([]applied{{false, false}, {false, true}, {true, false}}, seen); d != "" {
		t.Errorf("Applied calls (-want +got):\n%s", d)
	}
}
