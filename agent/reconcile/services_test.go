package reconcile

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/maglev"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// fakeSvcDP is a fakeDP with the FIB's service tables and flow entries.
type fakeSvcDP struct {
	*fakeDP
	svcs      map[fib.ServiceKey][]fib.Backend
	flows     map[fib.FlowKey]fib.Flow
	failFlows error
}

func newFakeSvcDP() *fakeSvcDP {
	return &fakeSvcDP{fakeDP: newFakeDP(), svcs: map[fib.ServiceKey][]fib.Backend{}, flows: map[fib.FlowKey]fib.Flow{}}
}

func (d *fakeSvcDP) ListServices() ([]fib.ServiceEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []fib.ServiceEntry
	for k, t := range d.svcs {
		out = append(out, fib.ServiceEntry{Key: k, Table: slices.Clone(t)})
	}
	return out, nil
}

func (d *fakeSvcDP) PutService(k fib.ServiceKey, table []fib.Backend) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.svcs[k] = slices.Clone(table)
	d.ops = append(d.ops, fmt.Sprintf("sput %s %d", k.String(), len(table)))
	return nil
}

func (d *fakeSvcDP) DeleteServices(ks ...fib.ServiceKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range ks {
		delete(d.svcs, k)
		d.ops = append(d.ops, "sdel "+k.String())
	}
	return nil
}

func (d *fakeSvcDP) ListFlows() ([]fib.FlowEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failFlows != nil {
		return nil, d.failFlows
	}
	var out []fib.FlowEntry
	for k, f := range d.flows {
		out = append(out, fib.FlowEntry{Key: k, Flow: f})
	}
	return out, nil
}

func (d *fakeSvcDP) DeleteFlows(ks ...fib.FlowKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range ks {
		kind := "fwd"
		if d.flows[k].NATKind == fib.NATSrc {
			kind = "rev"
		}
		delete(d.flows, k)
		d.ops = append(d.ops, "fdel "+kind)
	}
	return nil
}

// natFlow installs a service flow's two entries as the data path does:
// client -> VIP translated to backend, and backend -> client back to the
// VIP.
func (d *fakeSvcDP) natFlow(client netip.AddrPort, k fib.ServiceKey, b fib.Backend) fib.FlowKey {
	d.mu.Lock()
	defer d.mu.Unlock()
	fwd := fib.FlowKey{Src: client.Addr(), Dst: k.VIP, SrcPort: client.Port(), DstPort: k.Port, Proto: k.Proto}
	d.flows[fwd] = fib.Flow{Action: fib.ActionForward, NATKind: fib.NATDst, NAT: netip.AddrPortFrom(b.Addr, b.Port)}
	rev := fib.FlowKey{Src: b.Addr, Dst: client.Addr(), SrcPort: b.Port, DstPort: client.Port(), Proto: k.Proto}
	d.flows[rev] = fib.Flow{Action: fib.ActionForward, NATKind: fib.NATSrc, NAT: netip.AddrPortFrom(k.VIP, k.Port)}
	return fwd
}

var (
	dnsKey = fib.ServiceKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: fib.ProtoUDP}
	webKey = fib.ServiceKey{VIP: netip.MustParseAddr("10.96.0.20"), Port: 80, Proto: fib.ProtoTCP}
)

func be(s string) fib.Backend {
	ap := netip.MustParseAddrPort(s)
	return fib.Backend{Addr: ap.Addr(), Port: ap.Port()}
}

func svcBackend(ip string, port, weight uint32, node string) *fibv1.Backend {
	return &fibv1.Backend{Ip: ip, Port: port, Weight: weight, Node: node}
}

// svcTables are tables() with two services: dns (UDP, three backends)
// and web (TCP, two, weights 1 and 3).
func svcTables() map[string]*fibv1.FlowTable {
	tb := tables()
	tb["mesh"].Services = []*fibv1.ServiceVIP{
		{Hostname: "dns.kube-system.svc.cluster.local", Vip: "10.96.0.10", Port: 53, Protocol: fibv1.Protocol_UDP, Backends: []*fibv1.Backend{
			svcBackend("10.200.1.11", 5353, 0, "node1"), svcBackend("10.200.2.11", 5353, 1, "node2"), svcBackend("10.200.2.12", 5353, 1, "node2"),
		}},
		{Hostname: "web.shop.svc.cluster.local", Vip: "10.96.0.20", Port: 80, Protocol: fibv1.Protocol_TCP, Backends: []*fibv1.Backend{
			svcBackend("10.200.1.11", 8080, 1, "node1"), svcBackend("10.200.2.11", 8080, 3, "node2"),
		}},
	}
	return tb
}

func TestCompileServices(t *testing.T) {
	tb := svcTables()
	mesh := tb["mesh"]
	mesh.Services = append(mesh.Services,
		// IPv6 VIP: skipped like IPv6 routes.
		&fibv1.ServiceVIP{Hostname: "v6.default.svc.cluster.local", Vip: "fd00::10", Port: 80, Protocol: fibv1.Protocol_TCP,
			Backends: []*fibv1.Backend{svcBackend("fd00::1", 80, 1, "node1")}},
		// The same key again: the first wins.
		&fibv1.ServiceVIP{Hostname: "other.default.svc.cluster.local", Vip: "10.96.0.10", Port: 53, Protocol: fibv1.Protocol_UDP},
		// The same VIP and port over TCP: its own service.
		&fibv1.ServiceVIP{Hostname: "dns.kube-system.svc.cluster.local", Vip: "10.96.0.10", Port: 53, Protocol: fibv1.Protocol_TCP, Backends: []*fibv1.Backend{
			svcBackend("10.200.1.11", 5353, 0, "node1"), svcBackend("10.200.1.11", 5353, 7, "node1"), // listed twice: once, weight 0
			svcBackend("fd00::1", 5353, 1, "node1"), // IPv6 backend of an IPv4 VIP: skipped
		}},
		// No backend: an empty table.
		&fibv1.ServiceVIP{Hostname: "none.default.svc.cluster.local", Vip: "10.96.0.30", Port: 9, Protocol: fibv1.Protocol_UDP},
	)
	d, err := Compile("node1", tb)
	if err != nil {
		t.Fatal(err)
	}
	dnsTCP := fib.ServiceKey{VIP: dnsKey.VIP, Port: 53, Proto: fib.ProtoTCP}
	none := fib.ServiceKey{VIP: netip.MustParseAddr("10.96.0.30"), Port: 9, Proto: fib.ProtoUDP}
	want := map[fib.ServiceKey]Service{
		dnsKey: {Key: dnsKey, Hostname: "dns.kube-system.svc.cluster.local", Backends: []ServiceBackend{
			{Backend: be("10.200.1.11:5353"), Weight: 0, Node: "node1"},
			{Backend: be("10.200.2.11:5353"), Weight: 1, Node: "node2"},
			{Backend: be("10.200.2.12:5353"), Weight: 1, Node: "node2"},
		}},
		webKey: {Key: webKey, Hostname: "web.shop.svc.cluster.local", Backends: []ServiceBackend{
			{Backend: be("10.200.1.11:8080"), Weight: 1, Node: "node1"},
			{Backend: be("10.200.2.11:8080"), Weight: 3, Node: "node2"},
		}},
		dnsTCP: {Key: dnsTCP, Hostname: "dns.kube-system.svc.cluster.local", Backends: []ServiceBackend{
			{Backend: be("10.200.1.11:5353"), Weight: 0, Node: "node1"},
		}},
		none: {Key: none, Hostname: "none.default.svc.cluster.local"},
	}
	if diff := cmp.Diff(want, d.Services, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}

	// Sharded by hostname as the controller sends them: the same.
	sharded := map[string]*fibv1.FlowTable{"node1": tb["node1"], "mesh": {Routes: mesh.Routes, Identities: mesh.Identities}}
	for _, v := range mesh.Services {
		name := xdsapi.MeshServiceShard(xdsapi.MeshServiceShardOf(v.Hostname))
		if sharded[name] == nil {
			sharded[name] = &fibv1.FlowTable{Node: name}
		}
		sharded[name].Services = append(sharded[name].Services, v)
	}
	got, err := Compile("node1", sharded)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.Services, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("services from shards (-want +got):\n%s", diff)
	}
}

func TestCompileServicesRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(s *fibv1.ServiceVIP)
		want string
	}{
		{"protocol", func(s *fibv1.ServiceVIP) { s.Protocol = 0 },
			`flow table "mesh": services[0] (dns.kube-system.svc.cluster.local).protocol PROTOCOL_UNSPECIFIED: want TCP or UDP`},
		{"port", func(s *fibv1.ServiceVIP) { s.Port = 70000 }, `services[0] (dns.kube-system.svc.cluster.local).port 70000: want 1-65535`},
		{"backend ip", func(s *fibv1.ServiceVIP) { s.Backends[1].Ip = "pod-b" }, `services[0] (dns.kube-system.svc.cluster.local).backends[1].ip "pod-b": want an IP address`},
		{"backend port", func(s *fibv1.ServiceVIP) { s.Backends[2].Port = 0 }, `.backends[2].port 0: want 1-65535`},
		{"too many backends", func(s *fibv1.ServiceVIP) {
			s.Backends = nil
			for i := range maglev.MaxBackends + 1 {
				s.Backends = append(s.Backends, svcBackend(fmt.Sprintf("10.201.%d.%d", i/250, i%250+1), 53, 1, "node2"))
			}
		}, `.backends: 4097 backends: at most 4096 per service port`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := svcTables()
			tt.edit(tb["mesh"].Services[0])
			if _, err := Compile("node1", tb); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile: %v\nwant an error containing %s", err, tt.want)
			}
		})
	}
}

func newSvcRec(t *testing.T, dp *fakeSvcDP) *Reconciler {
	t.Helper()
	res := newFakeRes()
	resolvable(res)
	r, err := New(Config{Node: "node1", NIC: "eth0", Dataplane: dp, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func svcOps(dp *fakeSvcDP) []string {
	var out []string
	for _, o := range dp.takeOps() {
		if strings.HasPrefix(o, "s") || strings.HasPrefix(o, "f") {
			out = append(out, o)
		}
	}
	return out
}

// Each service's table is its Maglev table, written once: a second
// Apply and a restarted Reconciler (reading the tables back) write
// nothing.
func TestServicesApply(t *testing.T) {
	dp := newFakeSvcDP()
	r := newSvcRec(t, dp)
	if err := r.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"sput udp 10.96.0.10:53 601", "sput tcp 10.96.0.20:80 401"}, svcOps(dp)); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	st := r.Status()
	if st.Writes.ServicePuts != 2 || st.Writes.ServiceDeletes != 0 || st.Writes.FlowsMoved != 0 || len(st.Pending) != 0 {
		t.Errorf("status: writes %+v, pending %v", st.Writes, st.Pending)
	}
	// The tables are maglev's for the backends' names and weights: web's
	// 1:3 weights give it a quarter and three quarters of the slots.
	d := r.Desired()
	for _, k := range []fib.ServiceKey{dnsKey, webKey} {
		s := d.Services[k]
		names := make([]maglev.Backend, len(s.Backends))
		for i, b := range s.Backends {
			names[i] = maglev.Backend{Name: b.Name(), Weight: b.Weight}
		}
		idx, err := maglev.Build(names, uint32(len(dp.svcs[k])))
		if err != nil {
			t.Fatal(err)
		}
		for i, j := range idx {
			if dp.svcs[k][i] != s.Backends[j].Backend {
				t.Fatalf("%s slot %d: %v, want %v", k.String(), i, dp.svcs[k][i], s.Backends[j].Backend)
			}
		}
	}
	bs, slots, shares := TableShares(dp.svcs[webKey])
	if !slices.Equal(bs, []fib.Backend{be("10.200.1.11:8080"), be("10.200.2.11:8080")}) || slots[0]+slots[1] != 401 ||
		shares[0] < 0.24 || shares[0] > 0.26 || shares[1] < 0.74 || shares[1] > 0.76 {
		t.Errorf("web's table: %v slots %v shares %v, want 1:3", bs, slots, shares)
	}
	if len(st.Services) != 2 || st.Services[0].Key != dnsKey || !slices.Equal(st.Services[1].Table, dp.svcs[webKey]) {
		t.Errorf("Status().Services %v", st.Services)
	}

	if err := r.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	if o := svcOps(dp); len(o) != 0 {
		t.Errorf("the same tables again wrote %v", o)
	}
	r2 := newSvcRec(t, dp)
	if err := r2.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	if o := svcOps(dp); len(o) != 0 || r2.Status().Writes.ServicePuts != 0 {
		t.Errorf("a restarted reconciler wrote %v", o)
	}
}

// A backend that leaves a service moves its flows and only them; a
// service with no backend left gets an empty table; a service gone is
// deleted with its flows.
func TestServicesMoveFlows(t *testing.T) {
	dp := newFakeSvcDP()
	r := newSvcRec(t, dp)
	if err := r.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	svcOps(dp)
	// 30 flows to dns over its three backends, 4 to web, one of them on
	// the backend address dns loses (another port: it stays).
	gone := be("10.200.2.11:5353")
	var onGone, kept []fib.FlowKey
	dnsBackends := []fib.Backend{be("10.200.1.11:5353"), gone, be("10.200.2.12:5353")}
	for i := range 30 {
		b := dnsBackends[i%3]
		k := dp.natFlow(netip.AddrPortFrom(netip.MustParseAddr("10.200.1.20"), uint16(40000+i)), dnsKey, b)
		if b == gone {
			onGone = append(onGone, k)
		} else {
			kept = append(kept, k)
		}
	}
	for i, b := range []fib.Backend{be("10.200.1.11:8080"), be("10.200.2.11:8080"), be("10.200.2.11:8080"), be("10.200.1.11:8080")} {
		kept = append(kept, dp.natFlow(netip.AddrPortFrom(netip.MustParseAddr("10.200.1.21"), uint16(50000+i)), webKey, b))
	}
	before := len(dp.flows)

	tb := svcTables()
	dns := tb["mesh"].Services[0]
	dns.Backends = slices.Delete(dns.Backends, 1, 2)
	if err := r.Apply(tb); err != nil {
		t.Fatal(err)
	}
	ops := svcOps(dp)
	want := []string{"sput udp 10.96.0.10:53 601"} // the same size: Maglev moves few slots
	for range onGone {
		want = append(want, "fdel fwd")
	}
	for range onGone {
		want = append(want, "fdel rev")
	}
	if diff := cmp.Diff(want, ops); diff != "" {
		t.Errorf("writes (-want +got): the table first, then the forward entries, then their reply entries:\n%s", diff)
	}
	for _, k := range onGone {
		if _, ok := dp.flows[k]; ok {
			t.Errorf("flow %s on the removed backend kept its entry", k)
		}
	}
	for _, k := range kept {
		if _, ok := dp.flows[k]; !ok {
			t.Errorf("flow %s on a backend that stays lost its entry", k)
		}
	}
	if len(dp.flows) != before-2*len(onGone) {
		t.Errorf("%d flow entries left of %d, want %d", len(dp.flows), before, before-2*len(onGone))
	}
	if w := r.Status().Writes; w.FlowsMoved != uint64(len(onGone)) || w.ServicePuts != 3 {
		t.Errorf("writes %+v, want %d flows moved, 3 tables put", w, len(onGone))
	}
	for i, b := range dp.svcs[dnsKey] {
		if b == gone {
			t.Fatalf("slot %d still names the removed backend", i)
		}
	}

	// Every backend gone: an empty table, and the flows go.
	dns.Backends = nil
	if err := r.Apply(tb); err != nil {
		t.Fatal(err)
	}
	if got := svcOps(dp); len(got) != 1+2*20 || got[0] != "sput udp 10.96.0.10:53 0" {
		t.Errorf("no backend left: writes %v, want an empty table and 20 flows' entries deleted", got)
	}
	if tbl, ok := dp.svcs[dnsKey]; !ok || len(tbl) != 0 {
		t.Errorf("dns's table %v (held %v), want empty", tbl, ok)
	}

	// The service gone: deleted, with its flows.
	tb["mesh"].Services = tb["mesh"].Services[:1]
	if err := r.Apply(tb); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"sdel tcp 10.96.0.20:80", "fdel fwd", "fdel fwd", "fdel fwd", "fdel fwd", "fdel rev", "fdel rev", "fdel rev", "fdel rev"}, svcOps(dp)); diff != "" {
		t.Errorf("service gone: writes (-want +got):\n%s", diff)
	}
	if len(dp.flows) != 0 {
		t.Errorf("flow entries left: %v", dp.flows)
	}
	if w := r.Status().Writes; w.ServiceDeletes != 1 || w.FlowsMoved != 10+20+4 {
		t.Errorf("writes %+v", w)
	}
}

// Flows that could not be listed are moved at the next sync; a backend
// back in the table by then keeps its flows.
func TestServicesMoveRetried(t *testing.T) {
	dp := newFakeSvcDP()
	r := newSvcRec(t, dp)
	if err := r.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	a := dp.natFlow(netip.MustParseAddrPort("10.200.1.20:40000"), dnsKey, be("10.200.2.11:5353"))
	b := dp.natFlow(netip.MustParseAddrPort("10.200.1.20:40001"), dnsKey, be("10.200.2.12:5353"))
	dp.failFlows = errors.New("batch lookup: no memory")
	tb := svcTables()
	tb["mesh"].Services[0].Backends = tb["mesh"].Services[0].Backends[:1]
	if err := r.Apply(tb); err != nil {
		t.Fatal(err)
	}
	if p := r.Status().Pending["service flows"]; !strings.Contains(p, "no memory") {
		t.Errorf("pending %v, want the flows' listing error", r.Status().Pending)
	}
	dp.failFlows = nil
	// 10.200.2.12 comes back before the retry; 10.200.2.11 does not.
	tb["mesh"].Services[0].Backends = append(tb["mesh"].Services[0].Backends, svcBackend("10.200.2.12", 5353, 1, "node2"))
	if err := r.Apply(tb); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.flows[a]; ok {
		t.Error("the removed backend's flow was not moved on retry")
	}
	if _, ok := dp.flows[b]; !ok {
		t.Error("the flow of a backend back in the table was moved")
	}
	if st := r.Status(); len(st.Pending) != 0 || st.Writes.FlowsMoved != 1 {
		t.Errorf("pending %v, writes %+v", st.Pending, st.Writes)
	}
}

// A FIB without service maps says so rather than dropping services
// silently.
func TestServicesWithoutMaps(t *testing.T) {
	dp, res := newFakeDP(), newFakeRes()
	resolvable(res)
	r := newRec(t, dp, res)
	if err := r.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	if p := r.Status().Pending["services"]; !strings.Contains(p, "no service maps") {
		t.Errorf("pending %v", r.Status().Pending)
	}
}

// The same against the real maps: a restarted Reconciler on the FIB
// writes nothing, and a backend's removal deletes exactly its flows'
// entries in the flow map.
func TestServicesRealFIB(t *testing.T) {
	testenv.NeedRoot(t)
	f, err := fib.Open(fib.Options{MaxFlows: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res := newFakeRes()
	resolvable(res)
	newRec := func() *Reconciler {
		r, err := New(Config{Node: "node1", NIC: "eth0", Resolver: res, Dataplane: FIB(f, func(string) error { return nil })})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRec()
	if err := r.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	held, err := f.Services.List()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(held, func(a, b fib.ServiceEntry) int { return compareServiceKey(a.Key, b.Key) })
	if diff := cmp.Diff(r.Status().Services, held, cmpopts.EquateComparable(netip.Addr{})); diff != "" || len(held) != 2 {
		t.Fatalf("the service map holds (-status +map):\n%s", diff)
	}
	// Flows as the data path makes them: each to the backend the table
	// names for its hash.
	table := held[0].Table
	byBackend := map[fib.Backend][]fib.FlowKey{}
	for i := range 60 {
		k := fib.FlowKey{Src: netip.MustParseAddr("10.200.1.20"), Dst: dnsKey.VIP, SrcPort: uint16(40000 + i), DstPort: 53, Proto: fib.ProtoUDP}
		b := table[fib.FlowHash(k)%uint32(len(table))]
		rk := fib.FlowKey{Src: b.Addr, Dst: k.Src, SrcPort: b.Port, DstPort: k.SrcPort, Proto: k.Proto}
		if err := f.Flows.Put(
			fib.FlowEntry{Key: k, Flow: fib.Flow{Action: fib.ActionForward, NATKind: fib.NATDst, NAT: b.AddrPort()}},
			fib.FlowEntry{Key: rk, Flow: fib.Flow{Action: fib.ActionForward, NATKind: fib.NATSrc, NAT: netip.AddrPortFrom(dnsKey.VIP, 53)}},
		); err != nil {
			t.Fatal(err)
		}
		byBackend[b] = append(byBackend[b], k)
	}
	if len(byBackend) != 3 {
		t.Fatalf("60 flows over %d backends, want 3", len(byBackend))
	}

	r = newRec()
	if err := r.Apply(svcTables()); err != nil {
		t.Fatal(err)
	}
	if w := r.Status().Writes; w.ServicePuts != 0 {
		t.Errorf("a restarted reconciler wrote %d tables", w.ServicePuts)
	}
	tb := svcTables()
	tb["mesh"].Services[0].Backends = slices.Delete(tb["mesh"].Services[0].Backends, 1, 2)
	if err := r.Apply(tb); err != nil {
		t.Fatal(err)
	}
	gone := be("10.200.2.11:5353")
	for b, ks := range byBackend {
		for _, k := range ks {
			_, fwd, err := f.Flows.Get(k)
			if err != nil {
				t.Fatal(err)
			}
			_, rev, err := f.Flows.Get(fib.FlowKey{Src: b.Addr, Dst: k.Src, SrcPort: b.Port, DstPort: k.SrcPort, Proto: k.Proto})
			if err != nil {
				t.Fatal(err)
			}
			if want := b != gone; fwd != want || rev != want {
				t.Errorf("flow %s on %s: entries held %v/%v, want %v", k, b, fwd, rev, want)
			}
		}
	}
	if w := r.Status().Writes; w.FlowsMoved != uint64(len(byBackend[gone])) || w.ServicePuts != 1 {
		t.Errorf("writes %+v, want %d flows moved", w, len(byBackend[gone]))
	}
}

// A sync with nothing changed (every netlink event, every resync) costs
// no Maglev build: with 10,000 services of three backends it is a map
// walk.
func BenchmarkSyncServices(b *testing.B) {
	tb := tables()
	for i := range 10000 {
		tb["mesh"].Services = append(tb["mesh"].Services, &fibv1.ServiceVIP{Hostname: fmt.Sprintf("s%d.default.svc.cluster.local", i),
			Vip: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), Port: 53, Protocol: fibv1.Protocol_UDP, Backends: []*fibv1.Backend{
				svcBackend("10.200.1.11", 5353, 1, "node1"), svcBackend("10.200.2.11", 5353, 1, "node2"), svcBackend("10.200.2.12", 5353, 1, "node2")}})
	}
	dp := newFakeSvcDP()
	res := newFakeRes()
	resolvable(res)
	r, err := New(Config{Node: "node1", NIC: "eth0", Dataplane: dp, Resolver: res})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Apply(tb); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Sync()
	}
	if w := r.Status().Writes.ServicePuts; w != 10000 {
		b.Fatalf("%d tables put, want 10,000 once", w)
	}
}
