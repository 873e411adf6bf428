package fib

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"github.com/google/go-cmp/cmp"

	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// checkNames checks that a Go name table mirrors a C enum ending in a
// _LEN entry: exactly n entries, none empty, no duplicates.
func checkNames(t *testing.T, enum string, names []string, n int) {
	t.Helper()
	if len(names) != n {
		t.Errorf("%s: Go table has %d names, C enum has %d entries", enum, len(names), n)
	}
	seen := map[string]int{}
	for i, name := range names {
		if name == "" {
			t.Errorf("%s: entry %d has no name", enum, i)
		}
		if j, dup := seen[name]; dup {
			t.Errorf("%s: entries %d and %d are both named %q", enum, j, i, name)
		}
		seen[name] = i
	}
}

func TestReasonNames(t *testing.T) {
	checkNames(t, "stat_reason", reasonNames[:], int(xfib.FibStatReasonSTAT_REASON_LEN))
	if NumReasons != int(xfib.FibStatReasonSTAT_REASON_LEN) {
		t.Errorf("NumReasons = %d, STAT_REASON_LEN = %d", NumReasons, xfib.FibStatReasonSTAT_REASON_LEN)
	}
	if got := Reasons(); len(got) != NumReasons || got[len(got)-1] != Reason(NumReasons-1) {
		t.Errorf("Reasons() = %v", got)
	}
	if got, want := Reason(NumReasons).String(), "reason-"+strconv.Itoa(NumReasons); got != want {
		t.Errorf("out of range reason prints %q, want %q", got, want)
	}
}

func TestActionNames(t *testing.T) {
	checkNames(t, "flow_action", actionNames[:], int(xfib.FibFlowActionFLOW_ACTION_LEN))
}

func TestModeNames(t *testing.T) {
	checkNames(t, "mtls_mode", modeNames[:], int(xfib.FibMtlsModeMTLS_MODE_LEN))
}

// TestStructSizes checks the bpf2go mirrors against the sizes in the
// compiled object's BTF.
func TestStructSizes(t *testing.T) {
	spec, err := Spec(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ctype string
		size  uintptr
	}{
		{"route_key", unsafe.Sizeof(xfib.FibRouteKey{})},
		{"nexthop", unsafe.Sizeof(xfib.FibNexthop{})},
		{"flow_key", unsafe.Sizeof(xfib.FibFlowKey{})},
		{"flow_val", unsafe.Sizeof(xfib.FibFlowVal{})},
		{"policy_key", unsafe.Sizeof(xfib.FibPolicyKey{})},
		{"policy_val", unsafe.Sizeof(xfib.FibPolicyVal{})},
		{"stat_val", unsafe.Sizeof(xfib.FibStatVal{})},
		{"bpf_devmap_val", unsafe.Sizeof(xfib.FibBpfDevmapVal{})},
	} {
		typ, err := spec.Types.AnyTypeByName(tc.ctype)
		if err != nil {
			t.Errorf("struct %s: %v", tc.ctype, err)
			continue
		}
		size, err := btf.Sizeof(typ)
		if err != nil {
			t.Errorf("struct %s: %v", tc.ctype, err)
			continue
		}
		if uintptr(size) != tc.size {
			t.Errorf("struct %s: BTF size %d, Go mirror %d", tc.ctype, size, tc.size)
		}
	}
	// The maps' key and value sizes are what the Go API marshals.
	for _, tc := range []struct {
		m          string
		key, value uintptr
	}{
		{xfib.FibMapRoutes, unsafe.Sizeof(xfib.FibRouteKey{}), unsafe.Sizeof(xfib.FibNexthop{})},
		{xfib.FibMapFlows, unsafe.Sizeof(xfib.FibFlowKey{}), unsafe.Sizeof(xfib.FibFlowVal{})},
		{xfib.FibMapPolicy, unsafe.Sizeof(xfib.FibPolicyKey{}), unsafe.Sizeof(xfib.FibPolicyVal{})},
		{xfib.FibMapStats, 4, unsafe.Sizeof(xfib.FibStatVal{})},
		{xfib.FibMapTxPorts, 4, unsafe.Sizeof(xfib.FibBpfDevmapVal{})},
	} {
		ms := spec.Maps[tc.m]
		if uintptr(ms.KeySize) != tc.key || uintptr(ms.ValueSize) != tc.value {
			t.Errorf("map %s: key/value size %d/%d, Go %d/%d", tc.m, ms.KeySize, ms.ValueSize, tc.key, tc.value)
		}
	}
}

// cDefine reads "#define NAME value" from xdp/headers/consts.h.
func cDefine(t *testing.T, name string) int {
	t.Helper()
	src, err := os.ReadFile("../../xdp/headers/consts.h")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define\s+` + name + `\s+(\d+)\s*$`).FindSubmatch(src)
	if m == nil {
		t.Fatalf("consts.h: no #define %s", name)
	}
	n, err := strconv.Atoi(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPuntConstants(t *testing.T) {
	if got := cDefine(t, "PUNT_QUEUES"); got != PuntQueues {
		t.Errorf("PuntQueues = %d, PUNT_QUEUES = %d", PuntQueues, got)
	}
	if got := cDefine(t, "MAX_PUNT_SLOTS"); got != maxPuntSlots {
		t.Errorf("maxPuntSlots = %d, MAX_PUNT_SLOTS = %d", maxPuntSlots, got)
	}
	// The compiled object is what runs: its xsks map must match too.
	spec, err := Spec(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[xfib.FibMapXsks].MaxEntries; int(got) != maxPuntSlots {
		t.Errorf("xsks max_entries = %d, maxPuntSlots = %d (object out of date? run go generate ./xdp/...)", got, maxPuntSlots)
	}
	if maxPuntSlots%PuntQueues != 0 {
		t.Errorf("MAX_PUNT_SLOTS %d is not a multiple of PUNT_QUEUES %d", maxPuntSlots, PuntQueues)
	}
}

func TestSpecOptions(t *testing.T) {
	spec, err := Spec(Options{MaxFlows: 4096, MaxRoutes: 128})
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[xfib.FibMapFlows].MaxEntries; got != 4096 {
		t.Errorf("flows max_entries = %d, want 4096", got)
	}
	if got := spec.Maps[xfib.FibMapRoutes].MaxEntries; got != 128 {
		t.Errorf("routes max_entries = %d, want 128", got)
	}
	for name, m := range spec.Maps {
		if m.Pinning != 0 {
			t.Errorf("map %s is pinned without a PinDir", name)
		}
	}
}

func TestAddrConversion(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "10.1.2.3", "192.0.2.255", "255.255.255.255", "1.0.0.0", "0.0.0.1"} {
		a := netip.MustParseAddr(s)
		v, err := addrToBE(a)
		if err != nil {
			t.Fatalf("addrToBE(%s): %v", s, err)
		}
		// In memory, the integer holds the wire bytes.
		var mem [4]byte
		binary.NativeEndian.PutUint32(mem[:], v)
		if d := cmp.Diff(a.As4(), mem); d != "" {
			t.Errorf("addrToBE(%s) memory (-want +got):\n%s", s, d)
		}
		if got := beToAddr(v); got != a {
			t.Errorf("beToAddr(addrToBE(%s)) = %s", s, got)
		}
	}
	for _, s := range []string{"2001:db8::1", "::ffff:10.1.2.3"} {
		_, err := addrToBE(netip.MustParseAddr(s))
		if err == nil || !strings.Contains(err.Error(), "not an IPv4 address") {
			t.Errorf("addrToBE(%s) error = %v, want one saying it is not IPv4", s, err)
		}
	}
	if _, err := addrToBE(netip.Addr{}); err == nil {
		t.Error("addrToBE(zero Addr) succeeded")
	}
}

func TestPortConversion(t *testing.T) {
	for _, p := range []uint16{0, 1, 53, 80, 443, 0x1234, 0xff00, 65535} {
		v := portToBE(p)
		var mem [2]byte
		binary.NativeEndian.PutUint16(mem[:], v)
		if got := binary.BigEndian.Uint16(mem[:]); got != p {
			t.Errorf("portToBE(%d) memory holds %d in network order", p, got)
		}
		if got := beToPort(v); got != p {
			t.Errorf("beToPort(portToBE(%d)) = %d", p, got)
		}
	}
}

func TestMACConversion(t *testing.T) {
	for _, tc := range []struct {
		in      net.HardwareAddr
		want    [6]uint8
		wantErr string
	}{
		{in: mustMAC("02:aa:bb:cc:dd:ee"), want: [6]uint8{2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}},
		{in: mustMAC("ff:ff:ff:ff:ff:ff"), want: [6]uint8{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{in: nil, wantErr: "want 6 bytes, got 0"},
		{in: net.HardwareAddr{1, 2, 3, 4, 5}, wantErr: "want 6 bytes, got 5"},
		{in: mustMAC("00:00:00:00:fe:80:00:00"), wantErr: "want 6 bytes, got 8"},
	} {
		got, err := macTo6(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("macTo6(%v) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("macTo6(%v): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("macTo6(%v) (-want +got):\n%s", tc.in, d)
		}
		if back := net.HardwareAddr(got[:]).String(); back != tc.in.String() {
			t.Errorf("round trip %v -> %s", tc.in, back)
		}
	}
}

func TestFlowKeyConversion(t *testing.T) {
	for _, k := range []FlowKey{
		key(ProtoTCP, "192.0.2.1", 40000, "10.1.0.1", 443),
		key(ProtoUDP, "10.0.0.1", 53, "10.0.0.2", 0xff01),
		key(ProtoICMP, "10.0.0.1", 0x1234, "10.0.0.2", 0),
	} {
		bk, err := flowKey(k)
		if err != nil {
			t.Fatalf("flowKey(%s): %v", k, err)
		}
		if d := cmp.Diff(k, flowKeyFromMap(bk), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
			t.Errorf("round trip (-want +got):\n%s", d)
		}
		if r := k.Reverse().Reverse(); r != k {
			t.Errorf("%s reversed twice = %s", k, r)
		}
	}
	if _, err := flowKey(key(ProtoTCP, "2001:db8::1", 1, "10.0.0.1", 2)); err == nil || !strings.Contains(err.Error(), "source") {
		t.Errorf("IPv6 source: error = %v, want one naming the source", err)
	}
	if _, err := flowKey(key(ProtoTCP, "10.0.0.1", 1, "2001:db8::1", 2)); err == nil || !strings.Contains(err.Error(), "destination") {
		t.Errorf("IPv6 destination: error = %v, want one naming the destination", err)
	}
}

func TestParse(t *testing.T) {
	type result struct {
		Val     string
		ErrPart []string // substrings the error must contain
	}
	for _, tc := range []struct {
		parse func(string) (string, error)
		in    string
		want  result
	}{
		{parseProto, "tcp", result{Val: "tcp"}},
		{parseProto, "UDP", result{Val: "udp"}},
		{parseProto, "Icmp", result{Val: "icmp"}},
		{parseProto, "sctp", result{ErrPart: []string{`"sctp"`, "tcp, udp or icmp"}}},
		{parseProto, "", result{ErrPart: []string{`""`}}},
		{parseProto, "6", result{ErrPart: []string{`"6"`}}},
		{parseAction, "forward", result{Val: "forward"}},
		{parseAction, "PASS", result{Val: "pass"}},
		{parseAction, "Drop", result{Val: "drop"}},
		{parseAction, "punt", result{Val: "punt"}},
		{parseAction, "accept", result{ErrPart: []string{`"accept"`, "forward, pass, drop, punt"}}},
		{parseAction, "", result{ErrPart: []string{"unknown flow action"}}},
		{parseMode, "strict", result{Val: "STRICT"}},
		{parseMode, "PERMISSIVE", result{Val: "PERMISSIVE"}},
		{parseMode, "Disable", result{Val: "DISABLE"}},
		{parseMode, "unset", result{Val: "UNSET"}},
		{parseMode, "STRICTLY", result{ErrPart: []string{`"STRICTLY"`, "UNSET, PERMISSIVE, STRICT, DISABLE"}}},
		{parseMode, "2", result{ErrPart: []string{"unknown mTLS mode"}}},
	} {
		v, err := tc.parse(tc.in)
		var got result
		if err != nil {
			for _, p := range tc.want.ErrPart {
				if strings.Contains(err.Error(), p) {
					got.ErrPart = append(got.ErrPart, p)
				} else {
					got.ErrPart = append(got.ErrPart, "missing "+p+" in: "+err.Error())
				}
			}
			if len(tc.want.ErrPart) == 0 {
				got.ErrPart = []string{"unexpected error: " + err.Error()}
			}
		} else {
			got.Val = v
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("parse %q (-want +got):\n%s", tc.in, d)
		}
	}
}

func parseProto(s string) (string, error)  { p, err := ParseProto(s); return p.String(), err }
func parseAction(s string) (string, error) { a, err := ParseAction(s); return a.String(), err }
func parseMode(s string) (string, error)   { m, err := ParseMode(s); return m.String(), err }

func TestStringers(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Proto(47).String(), "proto-47"},
		{Action(9).String(), "action-9"},
		{Mode(9).String(), "MODE-9"},
		{ReasonDropPuntNoSocket.String(), "drop_punt_no_socket"},
		{key(ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 2).String(), "tcp 10.0.0.1:1 -> 10.0.0.2:2"},
		{PolicyKey{netip.MustParseAddr("10.0.0.1"), 443, ProtoTCP}.String(), "tcp 10.0.0.1:443"},
		{Route{netip.MustParsePrefix("10.0.0.0/8"), NextHop{Ifindex: 3, SrcMAC: macA, DstMAC: macB, PuntNew: true}}.String(), "10.0.0.0/8 -> if3 02:aa:00:00:00:01>02:bb:00:00:00:01 punt-new"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
