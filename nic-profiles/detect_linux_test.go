//go:build linux

package nicprofiles

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/fibmesh/fibmesh/internal/netnstest"
)

// addVeth creates a veth pair (both ends up) in the current namespace.
func addVeth(t *testing.T, name, peer string, mtu int) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.MTU = mtu
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer, PeerMTU: uint32(mtu)}); err != nil {
		t.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	for _, n := range []string{name, peer} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
}

// TestDetectLoopback needs no privilege: loopback has no driver name and
// no native XDP, so it gets the generic profile in generic mode.
func TestDetectLoopback(t *testing.T) {
	d, err := Detect("lo")
	if err != nil {
		t.Fatalf("Detect(lo): %v", err)
	}
	if d.Profile.Name != GenericName {
		t.Errorf("profile %s, want generic", d.Profile.Name)
	}
	if !strings.Contains(d.Reason, "driver unknown (ETHTOOL_GDRVINFO: ") || !strings.Contains(d.Reason, "generic fallback (nic-profiles/generic.yaml)") {
		t.Errorf("reason %q: want the GDRVINFO error and the fallback", d.Reason)
	}
	if d.Capabilities.XDPMode != "generic" {
		t.Errorf("XDP mode %s, want generic", d.Capabilities.XDPMode)
	}
	if d.Facts.Features == nil || d.Facts.XDP == nil {
		t.Fatalf("facts %+v: this kernel has ethtool netlink and the netdev family", d.Facts)
	}
	if d.Facts.XDP.Features != 0 {
		t.Errorf("loopback xdp-features = %s, want none", d.Facts.XDP.Features)
	}
	if _, err := Detect("fm-no-such-if"); err == nil || !strings.Contains(err.Error(), "fm-no-such-if") {
		t.Errorf("Detect of a missing interface = %v, want an error naming it", err)
	}
}

// TestDetectVeth detects a real veth pair and checks what the kernel
// reports against the veth profile, then attaches an XDP program to one
// end and sees the other become a redirect target (the quirk
// redirect-needs-peer-xdp-or-gro, measured).
func TestDetectVeth(t *testing.T) {
	netnstest.InNew(t, func() {
		addVeth(t, "np0", "np1", 1500)
		d, err := Detect("np0")
		if err != nil {
			t.Fatalf("Detect(np0): %v", err)
		}
		if d.Profile.Name != "veth" || d.Profile.File != "nic-profiles/veth.yaml" {
			t.Errorf("profile %s (%s), want veth", d.Profile.Name, d.Profile.File)
		}
		if !strings.HasPrefix(d.Reason, "driver veth matched nic-profiles/veth.yaml") {
			t.Errorf("reason %q", d.Reason)
		}
		f := d.Facts
		if f.Driver != "veth" || f.MTU != 1500 || f.Interface != "np0" || f.Ifindex == 0 {
			t.Errorf("facts %+v", f)
		}
		// veth: no LRO, no hardware GRO, no kTLS offload; GRO off by
		// default (drivers/net/veth.c).
		wantFeatures := map[string]Feature{
			FeatureLRO: {Fixed: true}, FeatureGROHW: {Fixed: true}, FeatureGRO: {},
			FeatureTLSTX: {Fixed: true}, FeatureTLSRX: {Fixed: true}, FeatureTLSRecord: {Fixed: true},
		}
		if d := cmp.Diff(wantFeatures, f.Features); d != "" {
			t.Errorf("features (-want +got):\n%s", d)
		}
		// No XDP program or GRO on the peer yet: no ndo-xmit.
		base := XDPBasic | XDPRedirect | XDPRxSG
		if f.XDP == nil || f.XDP.Features != base {
			t.Fatalf("xdp facts %+v, want %s", f.XDP, base)
		}
		if !strings.Contains(d.Reason, "using the measured set") || d.Capabilities.XDPFeatures != base {
			t.Errorf("reason %q, capabilities %s: the measured set must win", d.Reason, d.Capabilities.XDPFeatures)
		}
		if d.Capabilities.XDPMode != "native" || d.Capabilities.AFXDPZeroCopy || d.Capabilities.KTLSTX || d.Capabilities.MultiBuffer {
			t.Errorf("capabilities %+v", d.Capabilities)
		}

		// An XDP program on np1 makes np0 a redirect target.
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
		})
		if err != nil {
			t.Fatalf("load XDP program: %v", err)
		}
		defer prog.Close()
		np1, err := netlink.LinkByName("np1")
		if err != nil {
			t.Fatal(err)
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: np1.Attrs().Index, Flags: link.XDPDriverMode})
		if err != nil {
			t.Fatalf("attach XDP to np1: %v", err)
		}
		defer l.Close()
		d, err = Detect("np0")
		if err != nil {
			t.Fatal(err)
		}
		if want := base | XDPNdoXmit | XDPNdoXmitSG; d.Facts.XDP.Features != want {
			t.Errorf("np0 xdp-features with a program on np1 = %s, want %s", d.Facts.XDP.Features, want)
		}
		// That is exactly the profile's set: no disagreement left.
		if strings.Contains(d.Reason, "xdp-features") {
			t.Errorf("reason %q still reports a disagreement", d.Reason)
		}
	})
}

// TestDetectVethJumbo: a veth whose MTU is above the single-buffer XDP
// limit needs multi-buffer XDP, and the reason says so.
func TestDetectVethJumbo(t *testing.T) {
	netnstest.InNew(t, func() {
		addVeth(t, "nj0", "nj1", 9000)
		d, err := Detect("nj0")
		if err != nil {
			t.Fatal(err)
		}
		if d.Facts.MTU != 9000 || !d.Capabilities.MultiBuffer {
			t.Errorf("MTU %d, multi-buffer %t; want 9000, true", d.Facts.MTU, d.Capabilities.MultiBuffer)
		}
		if !strings.Contains(d.Reason, "MTU 9000 is above the driver's single-buffer XDP limit of 3506") {
			t.Errorf("reason %q", d.Reason)
		}
	})
}

// TestDetectAll lists every interface but loopback, in ifindex order.
func TestDetectAll(t *testing.T) {
	netnstest.InNew(t, func() {
		addVeth(t, "na0", "na1", 1500)
		addVeth(t, "nb0", "nb1", 1500)
		ds, err := DetectAll()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		last := 0
		for _, d := range ds {
			got = append(got, d.Interface+"="+d.Profile.Name)
			if d.Facts.Ifindex <= last {
				t.Errorf("%s (ifindex %d) after ifindex %d: not in ifindex order", d.Interface, d.Facts.Ifindex, last)
			}
			last = d.Facts.Ifindex
		}
		// Each pair: the peer is created first, then the named end.
		want := []string{"na1=veth", "na0=veth", "nb1=veth", "nb0=veth"}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
	})
}

func TestReadFactsMissingInterface(t *testing.T) {
	_, err := ReadFacts("fm-nope0")
	if !errors.Is(err, errNoInterface) {
		t.Errorf("ReadFacts of a missing interface = %v, want errNoInterface", err)
	}
}
