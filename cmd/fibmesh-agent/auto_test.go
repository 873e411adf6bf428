package main

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

func TestAutoDNS(t *testing.T) {
	for _, tt := range []struct {
		name, conf, want, err string
	}{
		{"cluster DNS", "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n", "10.96.0.10:53", ""},
		{"first of several", "# kubelet\nnameserver 10.100.0.10\nnameserver 8.8.8.8\n", "10.100.0.10:53", ""},
		{"IPv6", "nameserver fd00:10:96::a\n", "[fd00:10:96::a]:53", ""},
		{"none", "search x\n", "", "lists no nameserver"},
		{"garbage", "nameserver dns.example\n", "", `nameserver "dns.example" is not an IP address`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(path, []byte(tt.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := autoDNS(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("autoDNS = %q, %v; want an error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("autoDNS = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := autoDNS(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "first nameserver") {
		t.Errorf("missing file: %v", err)
	}
}

// TestAutoNIC: in a namespace with two interfaces, auto
// finds the interface holding the node IP, else the default route's, and
// says what to pass when it finds neither.
func TestAutoNIC(t *testing.T) {
	testenv.NeedRoot(t)
	pair := netnstest.NewPair(t)
	a := pair.A
	err := a.Do(func() error {
		if _, err := autoNIC(netip.Addr{}); err == nil || !strings.Contains(err.Error(), "no IPv4 default route") {
			t.Errorf("without a default route: %v", err)
		}
		if got, err := autoNIC(a.Addr); err != nil || got != a.Iface {
			t.Errorf("node IP %s: %q, %v; want %s", a.Addr, got, err, a.Iface)
		}
		if _, err := autoNIC(netip.MustParseAddr("192.0.2.77")); err == nil || !strings.Contains(err.Error(), "no interface on this host holds --node-ip 192.0.2.77") {
			t.Errorf("node IP held by no interface: %v", err)
		}
		// A second interface holding the node IP wins over the default
		// route's.
		// (a veth whose peer stays in the namespace: this kernel has no
		// dummy driver)
		dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fm-fabric0"}, PeerName: "fm-fabric1"}
		if err := netlink.LinkAdd(dummy); err != nil {
			return err
		}
		if err := netlink.AddrAdd(dummy, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("198.51.100.7"), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(dummy); err != nil {
			return err
		}
		link, err := netlink.LinkByName(a.Iface)
		if err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: pair.B.Addr.AsSlice()}); err != nil {
			return err
		}
		if got, err := autoNIC(netip.Addr{}); err != nil || got != a.Iface {
			t.Errorf("default route via %s: %q, %v; want %s", a.Iface, got, err, a.Iface)
		}
		if got, err := autoNIC(netip.MustParseAddr("198.51.100.7")); err != nil || got != "fm-fabric0" {
			t.Errorf("node IP on the second interface: %q, %v; want fm-fabric0", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
