package agent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// Resolve turns a route intent into a FIB route with what only this node
// knows: the interface index and MAC of Dev, and the MAC of the neighbour
// Via from the kernel's neighbour table. A neighbour that is not resolved
// (no entry, or one in FAILED/INCOMPLETE state) is an error: the route is
// not installed, and the kernel keeps forwarding those packets meanwhile.
func Resolve(ri RouteIntent) (fib.Route, error) {
	link, err := netlink.LinkByName(ri.Dev)
	if err != nil {
		return fib.Route{}, fmt.Errorf("route %s: interface %s: %w", ri.Prefix, ri.Dev, err)
	}
	attrs := link.Attrs()
	dmac, err := neighbourMAC(attrs.Index, ri.Via)
	if err != nil {
		return fib.Route{}, fmt.Errorf("route %s via %s dev %s: %w", ri.Prefix, ri.Via, ri.Dev, err)
	}
	return fib.Route{
		Prefix: ri.Prefix,
		NextHop: fib.NextHop{
			Ifindex: attrs.Index,
			SrcMAC:  attrs.HardwareAddr,
			DstMAC:  dmac,
		},
	}, nil
}

func neighbourMAC(ifindex int, ip netip.Addr) (net.HardwareAddr, error) {
	neighs, err := netlink.NeighList(ifindex, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != ip {
			continue
		}
		if n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 || len(n.HardwareAddr) != 6 {
			return nil, fmt.Errorf("neighbour %s is not resolved (state %s)", ip, neighState(n.State))
		}
		return n.HardwareAddr, nil
	}
	return nil, fmt.Errorf("no neighbour entry for %s: it must answer ARP, or have a static entry (ip neigh add %s lladdr MAC dev IFACE)", ip, ip)
}

func neighState(s int) string {
	switch {
	case s&netlink.NUD_FAILED != 0:
		return "FAILED"
	case s&netlink.NUD_INCOMPLETE != 0:
		return "INCOMPLETE"
	}
	return fmt.Sprintf("0x%x", s)
}

func ifindexOf(dev string) (int, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w", dev, err)
	}
	return l.Attrs().Index, nil
}
