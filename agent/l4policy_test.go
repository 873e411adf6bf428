package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fibmesh/fibmesh/agent/reconcile"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/punt"
)

// The L4 tables' cast: pod echo (10.200.1.11, node1) serves UDP 5353;
// front (10.200.2.11, namespace front) and back (10.200.2.12, namespace
// back) are mesh pods; 10.200.2.99 is a pod outside the mesh.
var (
	echoIP  = netip.MustParseAddr("10.200.1.11")
	frontIP = netip.MustParseAddr("10.200.2.11")
	backIP  = netip.MustParseAddr("10.200.2.12")
	plainIP = netip.MustParseAddr("10.200.2.99")
	echoKey = fib.PolicyKey{Addr: echoIP, Port: 5353, Proto: fib.ProtoUDP}
)

// l4Tables are node1's flow tables with policies on echo's UDP port.
func l4Tables(ps ...*fibv1.AuthzPolicy) map[string]*fibv1.FlowTable {
	return map[string]*fibv1.FlowTable{
		"mesh": {Routes: []*fibv1.Route{
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1", IdentityId: 1},
			{Prefix: "10.200.2.11/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: 2},
			{Prefix: "10.200.2.12/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: 3},
			{Prefix: "10.200.2.99/32", NextHop: "10.100.0.2", Node: "node2"},
		}, Identities: []*fibv1.Identity{
			{Id: 1, SpiffeId: "spiffe://cluster.local/ns/echo/sa/echo"},
			{Id: 2, SpiffeId: "spiffe://cluster.local/ns/front/sa/web"},
			{Id: 3, SpiffeId: "spiffe://cluster.local/ns/back/sa/db"},
		}},
		"node1": {Node: "node1",
			LocalPods: []*fibv1.LocalPod{{Namespace: "echo", Name: "echo", Ip: "10.200.1.11", IdentityId: 1}},
			PortPolicies: []*fibv1.PortPolicy{
				{Ip: "10.200.1.11", Port: 5353, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_PERMISSIVE, Authz: ps},
				{Ip: "10.200.1.11", Port: 53, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_PERMISSIVE, Authz: ps},
			}},
	}
}

func compileL4(t *testing.T, ps ...*fibv1.AuthzPolicy) *reconcile.Desired {
	t.Helper()
	d, err := reconcile.Compile("node1", l4Tables(ps...))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Policy builders, as an AuthorizationPolicy reads.
func pol(name string, action fibv1.AuthzAction, rules ...*fibv1.AuthzRule) *fibv1.AuthzPolicy {
	return &fibv1.AuthzPolicy{Namespace: "echo", Name: name, Action: action, Rules: rules}
}

func from(ss ...*fibv1.AuthzSource) *fibv1.AuthzRule { return &fibv1.AuthzRule{From: ss} }

func to(os ...*fibv1.AuthzOperation) *fibv1.AuthzRule { return &fibv1.AuthzRule{To: os} }

func when(cs ...*fibv1.AuthzCondition) *fibv1.AuthzRule { return &fibv1.AuthzRule{When: cs} }

const (
	allow  = fibv1.AuthzAction_ALLOW
	deny   = fibv1.AuthzAction_DENY
	audit  = fibv1.AuthzAction_AUDIT
	custom = fibv1.AuthzAction_CUSTOM
)

func TestDecideL4(t *testing.T) {
	for _, tt := range []struct {
		name     string
		policies []*fibv1.AuthzPolicy
		src      netip.Addr
		port     uint16 // destination port; 0: 5353
		want     l4Decision
	}{
		// ALLOW: one must match.
		{"allow by namespace", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"front"}}))},
			frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"another namespace is denied", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"front"}}))},
			backIP, 0, l4Decision{punt.Deny, "", ""}},
		{"namespace wildcard prefix", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"fr*"}}))},
			frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"namespace wildcard suffix", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"*ck"}}))},
			frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"notNamespaces", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{NotNamespaces: []string{"back"}}))},
			frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"a source outside the mesh has no namespace: ALLOW does not match",
			[]*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"*"}}))}, plainIP, 0, l4Decision{punt.Deny, "", ""}},
		{"nor notNamespaces (Istio would compare an empty namespace and allow)",
			[]*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{NotNamespaces: []string{"back"}}))}, plainIP, 0, l4Decision{punt.Deny, "", ""}},
		{"allow by ipBlocks", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{IpBlocks: []string{"10.200.2.0/24"}}))},
			plainIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"remoteIpBlocks are the source", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{RemoteIpBlocks: []string{"10.200.2.99"}}))},
			plainIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"notIpBlocks", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{NotIpBlocks: []string{"10.200.2.11"}}))},
			frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"every field of a source must match", []*fibv1.AuthzPolicy{pol("a", allow,
			from(&fibv1.AuthzSource{Namespaces: []string{"front"}, IpBlocks: []string{"10.9.0.0/16"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"any source", []*fibv1.AuthzPolicy{pol("a", allow,
			from(&fibv1.AuthzSource{IpBlocks: []string{"10.9.0.0/16"}}, &fibv1.AuthzSource{Namespaces: []string{"front"}}))}, frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"ports", []*fibv1.AuthzPolicy{pol("a", allow, to(&fibv1.AuthzOperation{Ports: []string{"53"}}))}, frontIP, 53, l4Decision{punt.Allow, "echo/a", ""}},
		{"another port", []*fibv1.AuthzPolicy{pol("a", allow, to(&fibv1.AuthzOperation{Ports: []string{"53"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"notPorts", []*fibv1.AuthzPolicy{pol("a", allow, to(&fibv1.AuthzOperation{NotPorts: []string{"53"}}))}, frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"when keys on addresses, namespace and port", []*fibv1.AuthzPolicy{pol("a", allow, when(
			&fibv1.AuthzCondition{Key: "source.ip", Values: []string{"10.200.2.0/24"}, NotValues: []string{"10.200.2.12"}},
			&fibv1.AuthzCondition{Key: "source.namespace", Values: []string{"front"}},
			&fibv1.AuthzCondition{Key: "destination.ip", Values: []string{"10.200.1.11"}},
			&fibv1.AuthzCondition{Key: "destination.port", NotValues: []string{"53"}},
		))}, frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"every when condition must hold", []*fibv1.AuthzPolicy{pol("a", allow, when(
			&fibv1.AuthzCondition{Key: "source.ip", Values: []string{"10.200.2.0/24"}},
			&fibv1.AuthzCondition{Key: "destination.port", Values: []string{"53"}},
		))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"an ALLOW policy without rules allows nothing", []*fibv1.AuthzPolicy{pol("nothing", allow)}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"an empty rule matches everything", []*fibv1.AuthzPolicy{pol("all", allow, &fibv1.AuthzRule{})}, plainIP, 0, l4Decision{punt.Allow, "echo/all", ""}},

		// What plaintext UDP cannot show fails closed in ALLOW...
		{"ALLOW principals never match", []*fibv1.AuthzPolicy{pol("a", allow,
			from(&fibv1.AuthzSource{Principals: []string{"cluster.local/ns/front/sa/web"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"nor notPrincipals", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{NotPrincipals: []string{"x"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"nor serviceAccounts", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{ServiceAccounts: []string{"front/web"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"nor requestPrincipals", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{RequestPrincipals: []string{"*"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"nor HTTP fields", []*fibv1.AuthzPolicy{pol("a", allow, to(&fibv1.AuthzOperation{Methods: []string{"GET"}, Ports: []string{"5353"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"nor a when key on the request", []*fibv1.AuthzPolicy{pol("a", allow, when(&fibv1.AuthzCondition{Key: "request.headers[x]", NotValues: []string{"y"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"nor a value that does not parse", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{NotIpBlocks: []string{"10.1.1.300"}}))}, frontIP, 0, l4Decision{punt.Deny, "", ""}},
		{"another rule still can", []*fibv1.AuthzPolicy{pol("a", allow,
			from(&fibv1.AuthzSource{Principals: []string{"x"}}), from(&fibv1.AuthzSource{IpBlocks: []string{"10.200.2.11"}}))}, frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},

		// ... and matches in DENY: the rest of the rule decides.
		{"DENY principals denies (fail closed; Istio would not)", []*fibv1.AuthzPolicy{pol("d", deny,
			from(&fibv1.AuthzSource{Principals: []string{"cluster.local/ns/other/sa/x"}}))}, frontIP, 0, l4Decision{punt.Deny, "echo/d", ""}},
		{"DENY HTTP fields with an address that does not match", []*fibv1.AuthzPolicy{pol("d", deny,
			&fibv1.AuthzRule{From: []*fibv1.AuthzSource{{IpBlocks: []string{"10.9.0.0/16"}}}, To: []*fibv1.AuthzOperation{{Methods: []string{"POST"}}}})},
			frontIP, 0, l4Decision{punt.Allow, "", ""}},
		{"DENY namespaces of a source outside the mesh", []*fibv1.AuthzPolicy{pol("d", deny, from(&fibv1.AuthzSource{Namespaces: []string{"back"}}))},
			plainIP, 0, l4Decision{punt.Deny, "echo/d", ""}},
		{"DENY namespaces of a mesh source", []*fibv1.AuthzPolicy{pol("d", deny, from(&fibv1.AuthzSource{Namespaces: []string{"back"}}))},
			frontIP, 0, l4Decision{punt.Allow, "", ""}},
		{"a DENY policy without rules matches nothing", []*fibv1.AuthzPolicy{pol("d", deny)}, frontIP, 0, l4Decision{punt.Allow, "", ""}},

		// Order: CUSTOM, DENY, ALLOW; AUDIT decides nothing.
		{"DENY before ALLOW", []*fibv1.AuthzPolicy{pol("a", allow, &fibv1.AuthzRule{}), pol("d", deny, from(&fibv1.AuthzSource{Namespaces: []string{"front"}}))},
			frontIP, 0, l4Decision{punt.Deny, "echo/d", ""}},
		{"ALLOW when DENY does not match", []*fibv1.AuthzPolicy{pol("a", allow, &fibv1.AuthzRule{}), pol("d", deny, from(&fibv1.AuthzSource{Namespaces: []string{"back"}}))},
			frontIP, 0, l4Decision{punt.Allow, "echo/a", ""}},
		{"CUSTOM that matches denies: no external authorizer", []*fibv1.AuthzPolicy{pol("a", allow, &fibv1.AuthzRule{}), pol("x", custom, &fibv1.AuthzRule{}), pol("d", deny, &fibv1.AuthzRule{})},
			frontIP, 0, l4Decision{punt.Deny, "echo/x", ""}},
		{"CUSTOM that does not match leaves the rest", []*fibv1.AuthzPolicy{pol("x", custom, to(&fibv1.AuthzOperation{Ports: []string{"53"}}))},
			frontIP, 0, l4Decision{punt.Allow, "", ""}},
		{"AUDIT is named, changes nothing", []*fibv1.AuthzPolicy{pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"back"}})), pol("log", audit, &fibv1.AuthzRule{})},
			frontIP, 0, l4Decision{punt.Deny, "", "echo/log"}},
		{"first matching ALLOW decides", []*fibv1.AuthzPolicy{pol("a1", allow, from(&fibv1.AuthzSource{Namespaces: []string{"back"}})), pol("a2", allow, &fibv1.AuthzRule{}), pol("a3", allow, &fibv1.AuthzRule{})},
			frontIP, 0, l4Decision{punt.Allow, "echo/a2", ""}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := compileL4(t, tt.policies...)
			port := tt.port
			if port == 0 {
				port = 5353
			}
			k := fib.FlowKey{Src: tt.src, Dst: echoIP, SrcPort: 40000, DstPort: port, Proto: fib.ProtoUDP}
			got, covered := decideFlow(d, k)
			if !covered {
				t.Fatalf("%s: not in the punt set %v", k, d.Punt)
			}
			if got != tt.want {
				t.Errorf("decision %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Ports without policies, and TCP, are not L4 policy's.
func TestDecideFlowNotCovered(t *testing.T) {
	d := compileL4(t) // no policy
	if _, covered := decideFlow(d, fib.FlowKey{Src: frontIP, Dst: echoIP, SrcPort: 1, DstPort: 5353, Proto: fib.ProtoUDP}); covered {
		t.Error("a port without policies is covered")
	}
	d = compileL4(t, pol("log", audit, &fibv1.AuthzRule{}))
	if _, covered := decideFlow(d, fib.FlowKey{Src: frontIP, Dst: echoIP, SrcPort: 1, DstPort: 5353, Proto: fib.ProtoUDP}); covered {
		t.Error("a port with only AUDIT policies is covered")
	}
	d = compileL4(t, pol("d", deny, &fibv1.AuthzRule{}))
	if _, covered := decideFlow(d, fib.FlowKey{Src: frontIP, Dst: echoIP, SrcPort: 1, DstPort: 5353, Proto: fib.ProtoTCP}); covered {
		t.Error("TCP to the port is covered")
	}
}

// fakeFlows is a flow table over a map.
type fakeFlows struct {
	m       map[fib.FlowKey]fib.Flow
	deleted []fib.FlowKey
}

func (f *fakeFlows) List() ([]fib.FlowEntry, error) {
	var out []fib.FlowEntry
	for k, v := range f.m {
		out = append(out, fib.FlowEntry{Key: k, Flow: v})
	}
	return out, nil
}

func (f *fakeFlows) Delete(keys ...fib.FlowKey) error {
	for _, k := range keys {
		if _, ok := f.m[k]; ok { // as the map: deleting a missing key is no error
			delete(f.m, k)
			f.deleted = append(f.deleted, k)
		}
	}
	return nil
}

// A policy change deletes the entries of the flows whose verdict it
// changes, both directions, and keeps the others'.
func TestRedecideFlows(t *testing.T) {
	fwd := fib.Flow{Action: fib.ActionForward}
	drop := fib.Flow{Action: fib.ActionDrop}
	flow := func(src netip.Addr, sport, dport uint16) fib.FlowKey {
		return fib.FlowKey{Src: src, Dst: echoIP, SrcPort: sport, DstPort: dport, Proto: fib.ProtoUDP}
	}
	fromFront, fromBack, fromPlain := flow(frontIP, 40001, 5353), flow(backIP, 40002, 5353), flow(plainIP, 40003, 5353)
	// A service flow from front: VIP 10.96.0.10:53 translated to echo:5353.
	vip := netip.MustParseAddrPort("10.96.0.10:53")
	svcOut := fib.FlowKey{Src: frontIP, Dst: vip.Addr(), SrcPort: 40006, DstPort: vip.Port(), Proto: fib.ProtoUDP}
	svcBack := fib.FlowKey{Src: echoIP, Dst: frontIP, SrcPort: 5353, DstPort: 40006, Proto: fib.ProtoUDP}
	onlyFront := pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"front"}}))
	onlyBack := pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"back"}}))
	state := func() *fakeFlows { // as the Punter left it under onlyFront
		return &fakeFlows{m: map[fib.FlowKey]fib.Flow{
			fromFront: fwd, fromFront.Reverse(): fwd,
			fromBack:  drop,
			fromPlain: drop,
			// not L4 policy's: TCP, another port, a punt in progress
			{Src: backIP, Dst: echoIP, SrcPort: 1, DstPort: 5353, Proto: fib.ProtoTCP}: drop,
			flow(backIP, 40004, 8080): drop,
			flow(backIP, 40005, 5353): {Action: fib.ActionPunt},
			svcOut:                    {Action: fib.ActionForward, NATKind: fib.NATDst, NAT: netip.AddrPortFrom(echoIP, 5353)},
			svcBack:                   {Action: fib.ActionForward, NATKind: fib.NATSrc, NAT: vip},
		}}
	}
	for _, tt := range []struct {
		name        string
		prev, next  *reconcile.Desired
		wantDeleted []fib.FlowKey
		wantFlows   int
	}{
		{"verdicts flip", compileL4(t, onlyFront), compileL4(t, onlyBack),
			[]fib.FlowKey{fromFront, fromFront.Reverse(), fromBack, svcOut, svcBack}, 3},
		{"same policies: nothing to do", compileL4(t, onlyFront), compileL4(t, onlyFront), nil, 0},
		{"policy removed: drop entries go", compileL4(t, onlyFront), compileL4(t), []fib.FlowKey{fromBack, fromPlain}, 2},
		{"first tables: every covered port walked", nil, compileL4(t, onlyFront), nil, 0},
		{"first tables under another policy", nil, compileL4(t, onlyBack),
			[]fib.FlowKey{fromFront, fromFront.Reverse(), fromBack, svcOut, svcBack}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := state()
			n, err := redecideFlows(fs, tt.next, puntChanges(tt.prev, tt.next))
			if err != nil {
				t.Fatal(err)
			}
			sortKeys := cmpopts.SortSlices(func(a, b fib.FlowKey) bool { return a.String() < b.String() })
			if d := cmp.Diff(tt.wantDeleted, fs.deleted, sortKeys, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("deleted (-want +got):\n%s", d)
			}
			if n != tt.wantFlows {
				t.Errorf("%d flows re-decided, want %d", n, tt.wantFlows)
			}
		})
	}
}

// A source's namespace comes from the mesh pods: when they change, every
// covered port is re-decided.
func TestPuntChangesMeshPods(t *testing.T) {
	p := pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"front"}}))
	prev := compileL4(t, p)
	tb := l4Tables(p)
	tb["mesh"].Routes[1].IdentityId = 3 // front's IP now holds a back pod
	next, err := reconcile.Compile("node1", tb)
	if err != nil {
		t.Fatal(err)
	}
	got := puntChanges(prev, next)
	want := map[fib.PolicyKey]bool{echoKey: true, {Addr: echoIP, Port: 53, Proto: fib.ProtoUDP}: true}
	if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Errorf("changed ports (-want +got):\n%s", d)
	}
	if d, _ := decideFlow(next, fib.FlowKey{Src: frontIP, Dst: echoIP, SrcPort: 1, DstPort: 5353, Proto: fib.ProtoUDP}); d.Verdict != punt.Deny {
		t.Errorf("after the change %+v, want deny", d)
	}
}

// fakeDataplane is a reconcile.Dataplane that holds nothing.
type fakeDataplane struct{}

func (fakeDataplane) ListRoutes() ([]fib.Route, error)         { return nil, nil }
func (fakeDataplane) PutRoutes(...fib.Route) error             { return nil }
func (fakeDataplane) DeleteRoutes(...netip.Prefix) error       { return nil }
func (fakeDataplane) ListPolicies() ([]fib.PolicyEntry, error) { return nil, nil }
func (fakeDataplane) PutPolicies(...fib.PolicyEntry) error     { return nil }
func (fakeDataplane) DeletePolicies(...fib.PolicyKey) error    { return nil }
func (fakeDataplane) Attach(string) error                      { return nil }

type fakeResolver struct{}

func (fakeResolver) Pod(netip.Addr) (string, fib.NextHop, error) {
	return "", fib.NextHop{}, fmt.Errorf("no pods here")
}
func (fakeResolver) Remote(string, netip.Addr) (fib.NextHop, error) {
	return fib.NextHop{}, fmt.Errorf("no neighbours here")
}

// decidePunt: before tables, deny; L4 policy for covered ports; the
// configured Decide (else allow) for the others; each verdict counted.
func TestDecidePunt(t *testing.T) {
	a := &Agent{cfg: Config{Node: "node1"}, log: slog.New(slog.DiscardHandler)}
	a.m = newMetrics(a)
	var err error
	if a.rec, err = reconcile.New(reconcile.Config{Node: "node1", NIC: "eth0", Dataplane: fakeDataplane{}, Resolver: fakeResolver{}}); err != nil {
		t.Fatal(err)
	}
	pkt := func(src netip.Addr, dport uint16) punt.Packet {
		return punt.Packet{Key: fib.FlowKey{Src: src, Dst: echoIP, SrcPort: 40000, DstPort: dport, Proto: fib.ProtoUDP}}
	}
	var verdicts []punt.Verdict
	decide := func(p punt.Packet) { verdicts = append(verdicts, a.decidePunt(p)) }
	decide(pkt(frontIP, 5353)) // no tables yet
	if err := a.rec.Apply(l4Tables(pol("a", allow, from(&fibv1.AuthzSource{Namespaces: []string{"front"}})))); err != nil {
		t.Fatal(err)
	}
	decide(pkt(frontIP, 5353))
	decide(pkt(backIP, 5353))
	decide(pkt(backIP, 9999)) // not covered, no Decide: allowed
	a.cfg.Decide = func(punt.Packet) punt.Verdict { return punt.Deny }
	decide(pkt(frontIP, 9999)) // not covered: Decide's
	if want := []punt.Verdict{punt.Deny, punt.Allow, punt.Deny, punt.Allow, punt.Deny}; !slices.Equal(verdicts, want) {
		t.Errorf("verdicts %v, want %v", verdicts, want)
	}
	for v, want := range map[string]float64{"allow": 2, "deny": 3} {
		if got := testutil.ToFloat64(a.m.puntVerdicts.WithLabelValues(v)); got != want {
			t.Errorf("fibmesh_agent_punt_verdicts_total{verdict=%q} = %v, want %v", v, got, want)
		}
	}
}
