package fib

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/fibmesh/fibmesh/internal/testenv"
	nicprofiles "github.com/fibmesh/fibmesh/nic-profiles"
	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// TestNICProfileIDs: every profile's ID is NIC_PROFILE_<NAME> of enum
// nic_profile in the compiled object, and the enum has one entry per
// profile.
func TestNICProfileIDs(t *testing.T) {
	spec, err := Spec(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("nic_profile", &enum); err != nil {
		t.Fatalf("enum nic_profile: %v", err)
	}
	values := map[string]uint64{}
	for _, v := range enum.Values {
		values[v.Name] = v.Value
	}
	ps, err := nicprofiles.Profiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		c := "NIC_PROFILE_" + strings.ToUpper(p.Name)
		v, ok := values[c]
		if !ok {
			t.Errorf("profile %s: no %s in enum nic_profile (xdp/headers/consts.h)", p.Name, c)
			continue
		}
		if uint64(p.ID) != v {
			t.Errorf("profile %s: ID %d, %s = %d", p.Name, p.ID, c, v)
		}
	}
	if got := values["NIC_PROFILE_LEN"]; got != uint64(len(nicprofiles.Names)) || int(xfib.FibNicProfileNIC_PROFILE_LEN) != len(ps) {
		t.Errorf("NIC_PROFILE_LEN = %d, %d profiles", got, len(ps))
	}
}

// TestNICFor: a detection's constants.
func TestNICFor(t *testing.T) {
	veth, _ := nicprofiles.ByName("veth")
	ice, _ := nicprofiles.ByName("ice")
	for _, tc := range []struct {
		name  string
		facts nicprofiles.Facts
		want  NIC
	}{
		{"veth, MTU 1500", nicprofiles.Facts{Interface: "fm0", Driver: "veth", MTU: 1500,
			XDP: &nicprofiles.XDPFacts{Features: nicprofiles.XDPBasic | nicprofiles.XDPRedirect | nicprofiles.XDPRxSG}},
			NIC{Profile: veth.ID, MaxFrame: 1518}},
		{"veth, MTU 9000: frags", nicprofiles.Facts{Interface: "fm0", Driver: "veth", MTU: 9000,
			XDP: &nicprofiles.XDPFacts{Features: nicprofiles.XDPBasic | nicprofiles.XDPRedirect | nicprofiles.XDPRxSG}},
			NIC{Profile: veth.ID, Frags: true, MaxFrame: 9018}},
		{"ice, MTU 3046: still single-buffer", nicprofiles.Facts{Interface: "eth0", Driver: "ice", MTU: 3046},
			NIC{Profile: ice.ID, MaxFrame: 3064}},
		{"unknown driver", nicprofiles.Facts{Interface: "eth0", Driver: "e1000e", MTU: 1500},
			NIC{Profile: 0, MaxFrame: 1518}},
		{"MTU unknown: no limit", nicprofiles.Facts{Interface: "eth0", Driver: "veth"},
			NIC{Profile: veth.ID}},
	} {
		d, err := nicprofiles.Choose(tc.facts)
		if err != nil {
			t.Fatal(err)
		}
		if got := NICFor(d); got != tc.want {
			t.Errorf("%s: NICFor = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if got, want := (NIC{Profile: veth.ID, Frags: true, MaxFrame: 9018}).String(), "veth frags max-frame=9018"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := (NIC{Profile: 99}).String(), "profile-99"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestProgramForReadBack loads the FIB with several profiles' constants
// and reads them back from the kernel (the programs' .rodata maps).
func TestProgramForReadBack(t *testing.T) {
	testenv.NeedRoot(t)
	f, err := Open(Options{MaxFlows: 1024, NIC: NIC{Profile: 3, MaxFrame: 1518}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadNIC(f.Program())
	if err != nil {
		t.Fatalf("ReadNIC(Program): %v", err)
	}
	if want := (NIC{Profile: 3, MaxFrame: 1518}); got != want {
		t.Errorf("Program constants %+v, want Options.NIC %+v", got, want)
	}
	if p, err := f.ProgramFor(NIC{Profile: 3, MaxFrame: 1518}); err != nil || p != f.Program() {
		t.Errorf("ProgramFor(Options.NIC) = %v, %v; want Program itself", p, err)
	}
	for _, n := range []NIC{
		{},
		{Profile: uint32(xfib.FibNicProfileNIC_PROFILE_VETH), MaxFrame: 1518},
		{Profile: uint32(xfib.FibNicProfileNIC_PROFILE_MLX5CORE), Frags: true, MaxFrame: 9018},
		{Profile: uint32(xfib.FibNicProfileNIC_PROFILE_VIRTIO_NET), MaxFrame: 65535},
	} {
		p, err := f.ProgramFor(n)
		if err != nil {
			t.Fatalf("ProgramFor(%s): %v", n, err)
		}
		again, err := f.ProgramFor(n)
		if err != nil || again != p {
			t.Errorf("ProgramFor(%s) twice: a second program %v, %v", n, again, err)
		}
		got, err := ReadNIC(p)
		if err != nil {
			t.Fatalf("ReadNIC(%s): %v", n, err)
		}
		if got != n {
			t.Errorf("constants read back %+v, want %+v", got, n)
		}
		// The copies share the FIB's maps: the same stats map.
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		ids, _ := info.MapIDs()
		statsInfo, err := f.objs.Stats.Info()
		if err != nil {
			t.Fatal(err)
		}
		statsID, _ := statsInfo.ID()
		found := false
		for _, id := range ids {
			found = found || id == statsID
		}
		if !found {
			t.Errorf("program for %s does not use the FIB's stats map (ids %v, stats %d)", n, ids, statsID)
		}
	}
	if _, err := ReadNIC(passProgram(t)); err == nil {
		t.Error("ReadNIC of a program without .rodata succeeded")
	}
}

// passProgram loads an XDP program that returns XDP_PASS and has no
// maps.
func passProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}}
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestXDPFrameLimit runs frames through copies of the program with
// different constants: cfg_max_frame_len sends longer frames to the
// stack (pass_frame_too_big), and a frags-aware copy sends frames that
// span several buffers there too, counting their whole length (a test run
// splits a frame over a page-sized buffer and frags, as a multi-buffer
// driver does).
func TestXDPFrameLimit(t *testing.T) {
	f := openTestFIB(t)
	tn := newTestNetns(t, 1, "fl0")
	a := tn.ifindex["fl0"]
	tn.do(t, func() {
		if err := f.TxPorts.Add(a); err != nil {
			t.Fatal(err)
		}
	})
	nh := NextHop{Ifindex: a, SrcMAC: macA, DstMAC: macAPod}
	if err := f.Routes.Put(Route{netip.MustParsePrefix("10.8.0.0/16"), nh}); err != nil {
		t.Fatal(err)
	}
	udp := func(payload int) []byte {
		return ip4{Src: "192.0.2.1", Dst: "10.8.0.1", Proto: ProtoUDP}.frame(udpHdr(4000, 53, bytes.Repeat([]byte{'x'}, payload)))
	}
	small, big, jumbo := udp(100), udp(400), udp(6000) // 142, 442, 6042 bytes
	tests := []struct {
		name    string
		nic     NIC
		pkt     []byte
		want    uint32
		reasons []Reason
	}{
		{"no limit: forwarded", NIC{}, big, xdpRedirect, []Reason{ReasonRedirect}},
		{"under the limit: forwarded", NIC{MaxFrame: 200}, small, xdpRedirect, []Reason{ReasonRedirect}},
		{"at the limit: forwarded", NIC{MaxFrame: uint32(len(big))}, big, xdpRedirect, []Reason{ReasonRedirect}},
		{"over the limit: to the stack", NIC{MaxFrame: uint32(len(big)) - 1}, big, xdpPass, []Reason{ReasonPassFrameTooBig}},
		{"a veth profile with MTU 1500", NIC{Profile: uint32(xfib.FibNicProfileNIC_PROFILE_VETH), MaxFrame: 1518}, big, xdpRedirect, []Reason{ReasonRedirect}},
		{"frags-aware, one buffer: forwarded", NIC{Frags: true, MaxFrame: 9018}, big, xdpRedirect, []Reason{ReasonRedirect}},
		{"frags-aware, several buffers: to the stack", NIC{Frags: true, MaxFrame: 9018}, jumbo, xdpPass, []Reason{ReasonPassFrameTooBig}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := f.ProgramFor(tt.nic)
			if err != nil {
				t.Fatal(err)
			}
			before, err := f.Stats.Read()
			if err != nil {
				t.Fatal(err)
			}
			got, out, err := runXDP(prog, append([]byte(nil), tt.pkt...), loIfindex, 0)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			after, err := f.Stats.Read()
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("action = %s, want %s", actionName[got], actionName[tt.want])
			}
			want := tt.pkt
			if tt.want == xdpRedirect {
				want = forwarded(tt.pkt, nh.SrcMAC, nh.DstMAC)
			}
			if d := cmp.Diff(want, out[:len(want)]); d != "" {
				t.Errorf("output frame (-want +got):\n%s", d)
			}
			if d := deltaDiff(wantDelta(len(tt.pkt), tt.reasons...), statsDelta(before, after)); d != "" {
				t.Errorf("counter deltas (-want +got):\n%s", d)
			}
		})
	}

}

// TestAttachUsesProfile attaches the FIB to real veths: Attach detects
// each one's profile and the attached program carries its constants; a
// jumbo MTU gets the frags-aware copy, which still attaches natively.
func TestAttachUsesProfile(t *testing.T) {
	f := openTestFIB(t)
	tn := newTestNetns(t, 1, "fa0", "fa1")
	veth := uint32(xfib.FibNicProfileNIC_PROFILE_VETH)
	tn.do(t, func() {
		for _, n := range []string{"fa1", "fa1p"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := netlink.LinkSetMTU(l, 9000); err != nil {
				t.Fatalf("set %s MTU 9000: %v", n, err)
			}
		}
		for _, tc := range []struct {
			ifname string
			want   NIC
		}{
			{"fa0", NIC{Profile: veth, MaxFrame: 1518}},
			{"fa1", NIC{Profile: veth, Frags: true, MaxFrame: 9018}},
		} {
			mode, _, err := f.Attach(tc.ifname)
			if err != nil {
				t.Fatalf("Attach(%s): %v", tc.ifname, err)
			}
			if mode != AttachDriver {
				t.Errorf("Attach(%s) mode %s, want driver", tc.ifname, mode)
			}
			l, err := netlink.LinkByName(tc.ifname)
			if err != nil {
				t.Fatal(err)
			}
			if l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
				t.Fatalf("%s: no XDP program attached", tc.ifname)
			}
			prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(l.Attrs().Xdp.ProgId))
			if err != nil {
				t.Fatalf("open %s's XDP program: %v", tc.ifname, err)
			}
			got, err := ReadNIC(prog)
			prog.Close()
			if err != nil {
				t.Fatalf("ReadNIC(%s): %v", tc.ifname, err)
			}
			if got != tc.want {
				t.Errorf("%s runs with %+v, want %+v", tc.ifname, got, tc.want)
			}
		}
	})
}

// TestProgramForNeedsProgram: a FIB opened from pins has no program to
// specialise.
func TestProgramForNeedsProgram(t *testing.T) {
	f := &FIB{}
	if _, err := f.ProgramFor(NIC{}); err == nil || !strings.Contains(err.Error(), "OpenPinned") {
		t.Errorf("ProgramFor on a FIB without its program = %v, want an error naming OpenPinned", err)
	}
}
