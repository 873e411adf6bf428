package fib

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

func netInterface(name string) (int, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return ifc.Index, nil
}

// attachedMode reads back how XDP is attached to ifindex.
func attachedMode(ifindex int) AttachMode {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return ""
	}
	switch l.Attrs().Xdp.AttachMode {
	case 2: // XDP_ATTACHED_SKB
		return AttachGeneric
	default:
		return AttachDriver
	}
}
