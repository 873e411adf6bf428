package reconcile_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/agent/resolve"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// A node in a fresh netns: nic0 (the fabric, peer nic0p) and p1 (a local
// pod's host veth, peer p1p), a /32 route to the pod via p1 and static
// neighbours, as the lab and a CNI set them up.
func node(t *testing.T) (nic, veth netlink.Link) {
	t.Helper()
	for _, p := range [][2]string{{"nic0", "nic0p"}, {"p1", "p1p"}} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p[0]}, PeerName: p[1]}); err != nil {
			t.Fatal(err)
		}
		for _, n := range p {
			l, _ := netlink.LinkByName(n)
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	nic, _ = netlink.LinkByName("nic0")
	veth, _ = netlink.LinkByName("p1")
	addr, _ := netlink.ParseAddr("10.100.0.1/24")
	if err := netlink.AddrAdd(nic, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: veth.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 200, 1, 11), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	neigh(t, veth, "10.200.1.11", "02:00:00:01:01:02")
	return nic, veth
}

func neigh(t *testing.T, l netlink.Link, ip, mac string) {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP(ip), HardwareAddr: hw}); err != nil {
		t.Fatal(err)
	}
}

func TestNetlinkResolver(t *testing.T) {
	netnstest.InNew(t, func() {
		nic, veth := node(t)
		res := &resolve.Netlink{}
		dev, nh, err := res.Pod(netip.MustParseAddr("10.200.1.11"))
		if err != nil || dev != "p1" || nh.Ifindex != veth.Attrs().Index || nh.SrcMAC.String() != veth.Attrs().HardwareAddr.String() || nh.DstMAC.String() != "02:00:00:01:01:02" {
			t.Errorf("Pod: %s %v %v", dev, nh, err)
		}
		if _, _, err := res.Pod(netip.MustParseAddr("10.200.1.99")); err == nil {
			t.Error("Pod of an IP routed nowhere: no error")
		}
		via := netip.MustParseAddr("10.100.0.2")
		if _, err := res.Remote("nic0", via); err == nil || !strings.Contains(err.Error(), "10.100.0.2") {
			t.Errorf("Remote without a neighbour: %v", err)
		}
		// The failed lookup asked the kernel to resolve the neighbour.
		ns, _ := netlink.NeighList(nic.Attrs().Index, netlink.FAMILY_V4)
		if len(ns) != 1 || !ns[0].IP.Equal(net.ParseIP("10.100.0.2")) {
			t.Errorf("neighbours after a failed lookup: %v, want an entry being resolved for 10.100.0.2", ns)
		}
		neigh(t, nic, "10.100.0.2", "02:00:00:00:02:00")
		if _, err := res.Remote("nic0", via); err == nil {
			t.Error("the neighbour table was read again before Refresh")
		}
		res.Refresh()
		nh, err = res.Remote("nic0", via)
		if err != nil || nh.Ifindex != nic.Attrs().Index || nh.DstMAC.String() != "02:00:00:00:02:00" {
			t.Errorf("Remote: %v %v", nh, err)
		}
		if _, err := res.Remote("nope0", via); err == nil {
			t.Error("Remote on a missing interface: no error")
		}
		// Watch reports a neighbour change.
		var changes atomic.Int32
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := resolve.Watch(ctx, func() { changes.Add(1) }, nil); err != nil {
			t.Fatal(err)
		}
		neigh(t, nic, "10.100.0.3", "02:00:00:00:03:00")
		deadline := time.Now().Add(5 * time.Second)
		for changes.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no change reported for a new neighbour")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// The real FIB maps equal the tables after Apply, and an unresolved
// next hop is programmed once the neighbour appears (netlink watch).
func TestApplyToRealFIB(t *testing.T) {
	testenv.NeedRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	netnstest.Do(t, ns, func() {
		nic, veth := node(t)
		f, err := fib.Open(fib.Options{MaxFlows: 1024})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		attach := func(dev string) error { _, _, err := f.Attach(dev); return err }
		r, err := reconcile.New(reconcile.Config{Node: "node1", NIC: "nic0", Dataplane: reconcile.FIB(f, attach), Resolver: &resolve.Netlink{},
			MinRetry: time.Hour}) // only the watch may retry
		if err != nil {
			t.Fatal(err)
		}
		tables := map[string]*fibv1.FlowTable{
			"mesh": {Routes: []*fibv1.Route{
				{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2"},
				{Prefix: "10.200.2.11/32", NextHop: "10.100.0.2", Node: "node2"},
				{Prefix: "10.200.3.0/24", NextHop: "10.100.0.3", Node: "node3"}, // no neighbour yet
			}},
			"node1": {Node: "node1", LocalPods: []*fibv1.LocalPod{{Namespace: "default", Name: "a", Ip: "10.200.1.11"}},
				PortPolicies: []*fibv1.PortPolicy{{Ip: "10.200.1.11", Port: 8080, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_STRICT}}},
		}
		neigh(t, nic, "10.100.0.2", "02:00:00:00:02:00")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		// Run's syncs resolve with netlink: they must run in the node's
		// namespace too (the agent's whole process is in it).
		go func() { done <- netns.Do(int(ns.Fd()), "node", func() error { return r.Run(ctx) }) }()
		defer func() { cancel(); <-done }()
		if err := resolve.Watch(ctx, r.Kick, nil); err != nil {
			t.Fatal(err)
		}
		if err := r.Apply(tables); err != nil {
			t.Fatal(err)
		}
		list := func() []string {
			rs, err := f.Routes.List()
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, rt := range rs {
				out = append(out, rt.String())
			}
			return out
		}
		n, v := nic.Attrs(), veth.Attrs()
		want := []string{
			fib.Route{Prefix: netip.MustParsePrefix("10.200.1.11/32"), NextHop: fib.NextHop{Ifindex: v.Index, SrcMAC: v.HardwareAddr, DstMAC: mustMAC("02:00:00:01:01:02")}}.String(),
			fib.Route{Prefix: netip.MustParsePrefix("10.200.2.0/24"), NextHop: fib.NextHop{Ifindex: n.Index, SrcMAC: n.HardwareAddr, DstMAC: mustMAC("02:00:00:00:02:00")}}.String(),
			fib.Route{Prefix: netip.MustParsePrefix("10.200.2.11/32"), NextHop: fib.NextHop{Ifindex: n.Index, SrcMAC: n.HardwareAddr, DstMAC: mustMAC("02:00:00:00:02:00")}}.String(),
		}
		if d := cmp.Diff(want, list()); d != "" {
			t.Errorf("routes map (-want +got):\n%s", d)
		}
		ps, _ := f.Policy.List()
		if len(ps) != 1 || ps[0].Mode != fib.ModeStrict || ps[0].Key.Port != 8080 {
			t.Errorf("policy map: %v", ps)
		}
		ports, _ := f.TxPorts.List()
		if d := cmp.Diff([]int{n.Index, v.Index}, ports); d != "" && d != cmp.Diff([]int{v.Index, n.Index}, ports) {
			t.Errorf("attached (tx_ports): %v", ports)
		}
		if p := r.Status().Pending; len(p) != 1 || !strings.Contains(p["route 10.200.3.0/24"], "10.100.0.3") {
			t.Errorf("pending: %v", p)
		}
		// The neighbour answers: the watch, not a timer, installs it.
		neigh(t, nic, "10.100.0.3", "02:00:00:00:03:00")
		deadline := time.Now().Add(5 * time.Second)
		for len(list()) != 4 {
			if time.Now().After(deadline) {
				t.Fatalf("node3's route not installed after its neighbour appeared: %v (pending %v)", list(), r.Status().Pending)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
