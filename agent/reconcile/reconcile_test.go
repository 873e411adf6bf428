package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// fakeDP is a Dataplane over Go maps that records every write.
type fakeDP struct {
	mu       sync.Mutex
	routes   map[netip.Prefix]fib.Route
	policies map[fib.PolicyKey]fib.Mode
	attached map[string]int // attach calls per interface
	ops      []string       // "put 10.0.0.0/24", "del ...", in order
	failPut  error
}

func newFakeDP() *fakeDP {
	return &fakeDP{routes: map[netip.Prefix]fib.Route{}, policies: map[fib.PolicyKey]fib.Mode{}, attached: map[string]int{}}
}

func (d *fakeDP) ListRoutes() ([]fib.Route, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []fib.Route
	for _, p := range sortedPrefixes(d.routes) {
		out = append(out, d.routes[p])
	}
	return out, nil
}

func (d *fakeDP) PutRoutes(rs ...fib.Route) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failPut != nil {
		return d.failPut
	}
	for _, r := range rs {
		d.routes[r.Prefix] = r
		d.ops = append(d.ops, "put "+r.Prefix.String())
	}
	return nil
}

func (d *fakeDP) DeleteRoutes(ps ...netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range ps {
		delete(d.routes, p)
		d.ops = append(d.ops, "del "+p.String())
	}
	return nil
}

func (d *fakeDP) ListPolicies() ([]fib.PolicyEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []fib.PolicyEntry
	for k, m := range d.policies {
		out = append(out, fib.PolicyEntry{Key: k, Mode: m})
	}
	return out, nil
}

func (d *fakeDP) PutPolicies(es ...fib.PolicyEntry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range es {
		d.policies[e.Key] = e.Mode
		d.ops = append(d.ops, "pput "+e.Key.String())
	}
	return nil
}

func (d *fakeDP) DeletePolicies(ks ...fib.PolicyKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range ks {
		delete(d.policies, k)
		d.ops = append(d.ops, "pdel "+k.String())
	}
	return nil
}

func (d *fakeDP) Attach(ifname string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attached[ifname]++
	return nil
}

func (d *fakeDP) takeOps() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.ops
	d.ops = nil
	return o
}

// fakeRes resolves from tables the test edits.
type fakeRes struct {
	mu     sync.Mutex
	pods   map[netip.Addr]string // pod IP -> host veth
	ifidx  map[string]int
	neighs map[netip.Addr]net.HardwareAddr // next hop -> MAC (on the NIC)
	calls  int
}

func newFakeRes() *fakeRes {
	return &fakeRes{pods: map[netip.Addr]string{}, ifidx: map[string]int{"eth0": 2}, neighs: map[netip.Addr]net.HardwareAddr{}}
}

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, b} }

func (r *fakeRes) Pod(ip netip.Addr) (string, fib.NextHop, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	dev, ok := r.pods[ip]
	if !ok {
		return "", fib.NextHop{}, fmt.Errorf("no route to pod %s", ip)
	}
	i := r.ifidx[dev]
	return dev, fib.NextHop{Ifindex: i, SrcMAC: mac(byte(i)), DstMAC: mac(ip.As4()[3])}, nil
}

func (r *fakeRes) Remote(nic string, via netip.Addr) (fib.NextHop, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	m, ok := r.neighs[via]
	if !ok {
		return fib.NextHop{}, fmt.Errorf("no neighbour entry for %s", via)
	}
	return fib.NextHop{Ifindex: r.ifidx[nic], SrcMAC: mac(0xee), DstMAC: m}, nil
}

func (r *fakeRes) set(f func(r *fakeRes)) { r.mu.Lock(); f(r); r.mu.Unlock() }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// tables returns node1's tables: node2 owns 10.200.2.0/24 with a /32 per
// pod; node1 has the local pod a (10.200.1.11) with a STRICT port.
func tables() map[string]*fibv1.FlowTable {
	return map[string]*fibv1.FlowTable{
		"mesh": {Version: "v1", Routes: []*fibv1.Route{
			{Prefix: "10.200.1.0/24", NextHop: "10.100.0.1", Node: "node1"},
			{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2"},
			{Prefix: "10.200.2.11/32", NextHop: "10.100.0.2", Node: "node2"},
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1"},
		}, Identities: []*fibv1.Identity{{Id: 7, SpiffeId: "spiffe://cluster.local/ns/default/sa/a"}}},
		"node1": {Node: "node1", Version: "v1",
			LocalPods:    []*fibv1.LocalPod{{Namespace: "default", Name: "a", Ip: "10.200.1.11", IdentityId: 7}},
			PortPolicies: []*fibv1.PortPolicy{{Ip: "10.200.1.11", Port: 8080, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_STRICT}},
		},
	}
}

func newRec(t *testing.T, dp *fakeDP, res *fakeRes) *Reconciler {
	t.Helper()
	r, err := New(Config{Node: "node1", NIC: "eth0", Dataplane: dp, Resolver: res, MinRetry: 5 * time.Millisecond, MaxRetry: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func resolvable(res *fakeRes) {
	res.set(func(r *fakeRes) {
		r.pods[netip.MustParseAddr("10.200.1.11")] = "p1"
		r.ifidx["p1"] = 5
		r.neighs[netip.MustParseAddr("10.100.0.2")] = mac(0x22)
	})
}

func prefixes(dp *fakeDP) []string {
	rs, _ := dp.ListRoutes()
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s if%d %s", r.Prefix, r.NextHop.Ifindex, r.NextHop.DstMAC))
	}
	return out
}

func TestApplyProgramsTables(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r := newRec(t, dp, res)
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"10.200.1.11/32 if5 02:00:00:00:00:0b", // local pod via its veth
		"10.200.2.0/24 if2 02:00:00:00:00:22",  // node2's CIDR via the NIC
		"10.200.2.11/32 if2 02:00:00:00:00:22", // overlapping /32, same next hop
	}
	if d := cmp.Diff(want, prefixes(dp)); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	k := fib.PolicyKey{Addr: netip.MustParseAddr("10.200.1.11"), Port: 8080, Proto: fib.ProtoTCP}
	if d := cmp.Diff(map[fib.PolicyKey]fib.Mode{k: fib.ModeStrict}, dp.policies); d != "" {
		t.Errorf("policy (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int{"eth0": 1, "p1": 1}, dp.attached); d != "" {
		t.Errorf("attach calls (-want +got):\n%s", d)
	}
	st := r.Status()
	if len(st.Pending) != 0 || !st.Applied || st.Versions["mesh"] != "v1" {
		t.Errorf("status: %+v", st)
	}
	if got := r.Desired().Pods["default/a"].Identity; got != "spiffe://cluster.local/ns/default/sa/a" {
		t.Errorf("pod identity %q", got)
	}
}

func TestApplyWritesOnlyDifferences(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r := newRec(t, dp, res)
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	dp.takeOps()
	// The same tables again (a controller restart re-sends everything):
	// no write at all.
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	r.Sync()
	if ops := dp.takeOps(); len(ops) != 0 {
		t.Errorf("re-applying the same tables wrote %v", ops)
	}
	// A pod added on node2, one policy changed: exactly those writes,
	// puts before deletes.
	tb := tables()
	tb["mesh"].Routes = tb["mesh"].Routes[:2:2] // drops 10.200.2.11/32 (and node1's own /32, skipped anyway)
	tb["mesh"].Routes = append(tb["mesh"].Routes, &fibv1.Route{Prefix: "10.200.2.12/32", NextHop: "10.100.0.2", Node: "node2"})
	tb["node1"].PortPolicies[0].Mode = fibv1.MTLSMode_PERMISSIVE
	if err := r.Apply(tb); err != nil {
		t.Fatal(err)
	}
	want := []string{"put 10.200.2.12/32", "del 10.200.2.11/32", "pput tcp 10.200.1.11:8080"}
	if d := cmp.Diff(want, dp.takeOps()); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
	w := r.Status().Writes
	if w != (Writes{RoutePuts: 4, RouteDeletes: 1, PolicyPuts: 2}) {
		t.Errorf("writes counted: %+v", w)
	}
}

func TestRestartStartsFromTheMaps(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	first := newRec(t, dp, res)
	if err := first.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	// A stale route from before (a pod since removed) is in the map too.
	dp.PutRoutes(fib.Route{Prefix: pfx("10.200.2.99/32"), NextHop: fib.NextHop{Ifindex: 2, SrcMAC: mac(1), DstMAC: mac(2)}})
	dp.takeOps()

	// A new agent: it reads the maps back, writes nothing before tables.
	second := newRec(t, dp, res)
	if got := len(second.Status().Routes); got != 4 {
		t.Errorf("read back %d routes, want 4", got)
	}
	second.Sync()
	if ops := dp.takeOps(); len(ops) != 0 {
		t.Fatalf("before any table the agent wrote %v", ops)
	}
	if err := second.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"del 10.200.2.99/32"}, dp.takeOps()); d != "" {
		t.Errorf("writes after restart (-want +got):\n%s", d)
	}
}

func TestUnresolvedIsRetried(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	res.set(func(r *fakeRes) { r.pods[netip.MustParseAddr("10.200.1.11")] = "p1"; r.ifidx["p1"] = 5 })
	r := newRec(t, dp, res)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	st := r.Status()
	if len(st.Routes) != 1 || !strings.Contains(st.Pending["route 10.200.2.0/24"], "no neighbour entry for 10.100.0.2") {
		t.Fatalf("before the neighbour resolves: routes %v, pending %v", st.Routes, st.Pending)
	}
	// The neighbour resolves; the backoff timer (no kick) installs it.
	calls := func() int { res.mu.Lock(); defer res.mu.Unlock(); return res.calls }
	before := calls()
	testenv.Until(t, 5*time.Second, "condition", func() bool { return calls() >= before+2 }) // retried at least twice
	res.set(func(r *fakeRes) { r.neighs[netip.MustParseAddr("10.100.0.2")] = mac(0x22) })
	testenv.Until(t, 5*time.Second, "condition", func() bool { return len(r.Status().Pending) == 0 })
	if got := len(dp.routes); got != 3 {
		t.Errorf("%d routes after the neighbour resolved, want 3", got)
	}
	// Nothing pending: the timer stops, no more resolving.
	n := calls()
	r.Kick()
	testenv.Until(t, 5*time.Second, "condition", func() bool { return calls() > n })
	n = calls()
	time.Sleep(100 * time.Millisecond) // 5x MaxRetry: would have retried
	if calls() != n {
		t.Errorf("resolved %d more times with nothing pending", calls()-n)
	}
}

func TestUnresolvedKeepsTheOldEntry(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r := newRec(t, dp, res)
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	dp.takeOps()
	res.set(func(r *fakeRes) { delete(r.neighs, netip.MustParseAddr("10.100.0.2")) })
	r.Sync()
	if ops := dp.takeOps(); len(ops) != 0 {
		t.Errorf("a neighbour going unresolved wrote %v (want the old route kept)", ops)
	}
	if len(r.Status().Pending) == 0 {
		t.Error("nothing pending")
	}
}

func TestVethRecreatedIsReattached(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r := newRec(t, dp, res)
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	res.set(func(r *fakeRes) { r.ifidx["p1"] = 9 })
	r.Kick()
	r.Sync()
	if dp.attached["p1"] != 2 {
		t.Errorf("p1 attached %d times, want 2 (again after its ifindex changed)", dp.attached["p1"])
	}
	if got := dp.routes[pfx("10.200.1.11/32")].NextHop.Ifindex; got != 9 {
		t.Errorf("pod route via if%d, want if9", got)
	}
}

func TestBadTableKeepsLastGood(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r := newRec(t, dp, res)
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	good := maps.Clone(dp.routes)
	dp.takeOps()
	bad := tables()
	bad["mesh"].Routes[1].Prefix = "10.200.2.0/33"
	err := r.Apply(bad)
	if err == nil || !strings.Contains(err.Error(), `flow table "mesh": routes[1].prefix "10.200.2.0/33"`) {
		t.Fatalf("Apply: %v", err)
	}
	if ops := dp.takeOps(); len(ops) != 0 || !maps.EqualFunc(good, dp.routes, func(a, b fib.Route) bool { return a.String() == b.String() }) {
		t.Errorf("a refused table wrote %v", ops)
	}
	if r.Status().Versions["mesh"] != "v1" {
		t.Error("the refused version replaced the last good one")
	}
}

func TestPunt(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r, err := New(Config{Node: "node1", NIC: "eth0", Dataplane: dp, Resolver: res, Punt: []netip.Prefix{pfx("10.200.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	for p, rt := range dp.routes {
		if want := pfx("10.200.2.0/24").Contains(p.Addr()); rt.NextHop.PuntNew != want {
			t.Errorf("%s: punt-new %v, want %v", p, rt.NextHop.PuntNew, want)
		}
	}
}

func TestMapWriteFailureIsRetried(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	dp.failPut = errors.New("map full")
	r := newRec(t, dp, res)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := r.Apply(tables()); err != nil {
		t.Fatalf("Apply: %v (a write failure is retried, not a NACK)", err)
	}
	if r.Status().Pending["routes"] == "" {
		t.Error("write failure not reported")
	}
	dp.mu.Lock()
	dp.failPut = nil
	dp.mu.Unlock()
	testenv.Until(t, 5*time.Second, "condition", func() bool { return len(r.Status().Pending) == 0 })
	if len(dp.routes) != 3 {
		t.Errorf("%d routes, want 3", len(dp.routes))
	}
}

// With nothing pending and no kick (a lost netlink event), the periodic
// resync still picks up a next hop's new MAC.
func TestResyncCatchesLostEvents(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r, err := New(Config{Node: "node1", NIC: "eth0", Dataplane: dp, Resolver: res, Resync: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(tables()); err != nil {
		t.Fatal(err)
	}
	if len(r.Status().Pending) != 0 {
		t.Fatalf("pending: %v", r.Status().Pending)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	res.set(func(r *fakeRes) { r.neighs[netip.MustParseAddr("10.100.0.2")] = mac(0x33) })
	testenv.Until(t, 5*time.Second, "condition", func() bool {
		dp.mu.Lock()
		defer dp.mu.Unlock()
		return dp.routes[pfx("10.200.2.0/24")].NextHop.DstMAC.String() == mac(0x33).String()
	})
}
