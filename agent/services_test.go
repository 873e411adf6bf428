package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/fastpath/fib"
)

func TestServiceInfo(t *testing.T) {
	b1 := fib.Backend{Addr: netip.MustParseAddr("10.200.1.11"), Port: 5353}
	b2 := fib.Backend{Addr: netip.MustParseAddr("10.200.2.11"), Port: 5353}
	old := fib.Backend{Addr: netip.MustParseAddr("10.200.2.12"), Port: 5353}
	dns := fib.ServiceKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: fib.ProtoUDP}
	web := fib.ServiceKey{VIP: netip.MustParseAddr("10.96.0.20"), Port: 80, Proto: fib.ProtoTCP}
	none := fib.ServiceKey{VIP: netip.MustParseAddr("10.96.0.5"), Port: 9, Proto: fib.ProtoUDP}
	// dns: 7 slots, 3 of them b2's (listed first: the rows go by address).
	held := []fib.ServiceEntry{
		{Key: none},
		{Key: dns, Table: []fib.Backend{b2, b1, b1, b2, b1, b1, b2}},
	}
	desired := map[fib.ServiceKey]reconcile.Service{
		dns: {Key: dns, Hostname: "dns.kube-system.svc.cluster.local", Backends: []reconcile.ServiceBackend{
			{Backend: b2, Weight: 3, Node: "node2"}, {Backend: b1, Weight: 0, Node: "node1"}}},
		none: {Key: none, Hostname: "none.default.svc.cluster.local"},
		web:  {Key: web, Hostname: "web.shop.svc.cluster.local", Backends: []reconcile.ServiceBackend{{Backend: b1, Weight: 2, Node: "node1"}}},
	}
	client := netip.MustParseAddr("10.200.1.20")
	flow := func(sport uint16, k fib.ServiceKey, b fib.Backend) []fib.FlowEntry {
		return []fib.FlowEntry{
			{Key: fib.FlowKey{Src: client, Dst: k.VIP, SrcPort: sport, DstPort: k.Port, Proto: k.Proto},
				Flow: fib.Flow{Action: fib.ActionForward, NATKind: fib.NATDst, NAT: b.AddrPort()}},
			{Key: fib.FlowKey{Src: b.Addr, Dst: client, SrcPort: b.Port, DstPort: sport, Proto: k.Proto},
				Flow: fib.Flow{Action: fib.ActionForward, NATKind: fib.NATSrc, NAT: netip.AddrPortFrom(k.VIP, k.Port)}},
		}
	}
	var flows []fib.FlowEntry
	for i, b := range []fib.Backend{b1, b1, b2, old, b1} {
		flows = append(flows, flow(uint16(40000+i), dns, b)...)
	}
	flows = append(flows, flow(41000, web, b1)...) // another service of the same backend address
	flows = append(flows, fib.FlowEntry{Key: fib.FlowKey{Src: client, Dst: b1.Addr, SrcPort: 1, DstPort: 2, Proto: fib.ProtoTCP},
		Flow: fib.Flow{Action: fib.ActionForward}}) // not a service's
	pending := map[string]string{reconcile.PendingService(web): "map full"}

	got := serviceInfo(held, desired, pending, flows)
	want := []admin.Service{
		{VIP: none.VIP, Port: 9, Proto: "udp", Hostname: "none.default.svc.cluster.local", Backends: []admin.ServiceBackend{}},
		{VIP: dns.VIP, Port: 53, Proto: "udp", Hostname: "dns.kube-system.svc.cluster.local", Slots: 7, Flows: 5, Backends: []admin.ServiceBackend{
			{Addr: b1.AddrPort(), Node: "node1", Weight: 1, Slots: 4, Share: 4.0 / 7, Flows: 3},
			{Addr: b2.AddrPort(), Node: "node2", Weight: 3, Slots: 3, Share: 3.0 / 7, Flows: 1},
			{Addr: old.AddrPort(), Flows: 1}, // left the table, its flow not moved yet
		}},
		{VIP: web.VIP, Port: 80, Proto: "tcp", Hostname: "web.shop.svc.cluster.local", Pending: "map full", Backends: []admin.ServiceBackend{
			{Addr: b1.AddrPort(), Node: "node1", Weight: 2}}},
	}
	if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}), cmpopts.EquateApprox(0, 1e-9)); d != "" {
		t.Errorf("serviceInfo (-want +got):\n%s", d)
	}
}
