package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	nsenter "github.com/fibmesh/fibmesh/internal/netns"
)

// nsHandle is an open network namespace.
type nsHandle struct {
	name string
	h    netns.NsHandle
}

// do runs fn on a locked OS thread switched into the namespace
// (internal/netns.Do: the thread is switched back, or ended if it cannot
// be).
func (n *nsHandle) do(fn func() error) error {
	if !n.h.IsOpen() {
		return fmt.Errorf("namespace %s: closed", n.name)
	}
	return nsenter.Do(int(n.h), n.name, fn)
}

// newNamespaces creates n network namespaces and returns their handles,
// leaving every thread in the namespace it was in: netns.New moves its
// thread into the namespace it creates, so it runs under nsenter.Do,
// which switches that thread back afterwards.
func newNamespaces(n int) ([]netns.NsHandle, error) {
	cur, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("current network namespace: %w", err)
	}
	defer cur.Close()
	var hs []netns.NsHandle
	err = nsenter.Do(int(cur), "current", func() error {
		for range n {
			h, err := netns.New() // unshare(CLONE_NEWNET)
			if err != nil {
				return fmt.Errorf("new network namespace: %w", err)
			}
			hs = append(hs, h)
		}
		return nil
	})
	if err != nil {
		for _, h := range hs {
			h.Close()
		}
		return nil, err
	}
	return hs, nil
}

func newPair(cfg pairConfig) (_ *Pair, err error) {
	addrA, addrB, err := cfg.addrs()
	if err != nil {
		return nil, err
	}
	hs, err := newNamespaces(2)
	if err != nil {
		return nil, err
	}
	p := &Pair{
		A: &Peer{Name: "a", Addr: addrA.Addr(), Prefix: addrA, Iface: IfaceA, ns: nsHandle{name: "a", h: hs[0]}},
		B: &Peer{Name: "b", Addr: addrB.Addr(), Prefix: addrB, Iface: IfaceB, ns: nsHandle{name: "b", h: hs[1]}},
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	// Created from here, both ends go straight into their namespaces:
	// the names never meet any in ours or another pair's.
	attrs := netlink.NewLinkAttrs()
	attrs.Name = IfaceA
	attrs.MTU = cfg.mtu
	attrs.Namespace = netlink.NsFd(int(hs[0]))
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: IfaceB, PeerNamespace: netlink.NsFd(int(hs[1]))}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth %s/%s (is veth.ko available?): %w", IfaceA, IfaceB, err)
	}
	for _, peer := range []*Peer{p.A, p.B} {
		if err := peer.setup(cfg.mtu); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// setup brings lo and the veth end up and gives it its address.
func (p *Peer) setup(mtu int) error {
	h, err := netlink.NewHandleAt(p.ns.h, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in namespace %s: %w", p.Name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("namespace %s: lo: %w", p.Name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("namespace %s: lo up: %w", p.Name, err)
	}
	link, err := h.LinkByName(p.Iface)
	if err != nil {
		return fmt.Errorf("namespace %s: %s: %w", p.Name, p.Iface, err)
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("namespace %s: %s mtu %d: %w", p.Name, p.Iface, mtu, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("namespace %s: %s up: %w", p.Name, p.Iface, err)
	}
	addr := &netlink.Addr{IPNet: prefixIPNet(p.Prefix)}
	if p.Addr.Is6() {
		addr.Flags = unix.IFA_F_NODAD // usable at once, not tentative
	}
	if err := h.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("namespace %s: address %v on %s: %w", p.Name, p.Prefix, p.Iface, err)
	}
	p.Index = link.Attrs().Index
	p.MAC = link.Attrs().HardwareAddr
	return nil
}

// close deletes the veth and closes both namespaces' handles; the kernel
// frees each namespace once its last socket is closed too.
func (p *Pair) close() error {
	var errs []error
	if p.A.ns.h.IsOpen() {
		if h, err := netlink.NewHandleAt(p.A.ns.h, unix.NETLINK_ROUTE); err != nil {
			errs = append(errs, fmt.Errorf("netlink in namespace a: %w", err))
		} else {
			if link, err := h.LinkByName(IfaceA); err == nil {
				if err := h.LinkDel(link); err != nil {
					errs = append(errs, fmt.Errorf("delete %s: %w", IfaceA, err))
				}
			}
			h.Close()
		}
	}
	for _, peer := range []*Peer{p.A, p.B} {
		if peer.ns.h.IsOpen() {
			if err := peer.ns.h.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close namespace %s: %w", peer.Name, err))
			}
			peer.ns.h = netns.None()
		}
	}
	return errors.Join(errs...)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Existing returns a Peer for an interface that already exists in the
// network namespace at nsPath (/run/netns/NAME): a lab's fabric, a pod's
// veth. Its Capture, Dial, Listen and Do work as on a Pair's peers; the
// namespace and the interface are left as they are when the test ends.
func Existing(t testing.TB, nsPath, iface string) *Peer {
	t.Helper()
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatalf("netnstest: namespace %s: %v", nsPath, err)
	}
	t.Cleanup(func() { h.Close() })
	p := &Peer{Name: nsPath, Iface: iface, ns: nsHandle{name: nsPath, h: h}}
	err = p.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return fmt.Errorf("link %s: %w", iface, err)
		}
		p.Index, p.MAC = l.Attrs().Index, l.Attrs().HardwareAddr
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err == nil && len(addrs) > 0 {
			if a, ok := netip.AddrFromSlice(addrs[0].IP.To4()); ok {
				ones, _ := addrs[0].Mask.Size()
				p.Addr, p.Prefix = a, netip.PrefixFrom(a, ones)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("netnstest: %s in %s: %v", iface, nsPath, err)
	}
	return p
}
