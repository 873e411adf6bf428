package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestUsageErrors checks that every mistake on the command line is a
// usageError (exit status 2) naming the bad value and the fix. The pin
// directory does not exist: the command line must be checked before the
// FIB is opened, so these need no root and no FIB.
func TestUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-fib")
	pd := []string{"--pin-dir", missing}
	set := func(args ...string) []string {
		return append(slices.Clone(pd), append([]string{"policy", "set"}, args...)...)
	}
	del := func(args ...string) []string {
		return append(slices.Clone(pd), append([]string{"policy", "delete"}, args...)...)
	}
	tests := []struct {
		name string
		args []string
		want []string // substrings of the message
	}{
		{"no command", pd, []string{"missing command", "fib, flows, stats, policy, attached or nic"}},
		{"no arguments at all", nil, []string{"missing command"}},
		{"bad -o", append([]string{"-o", "xml"}, append(pd, "stats")...), []string{`"xml"`, "table, json or yaml"}},
		{"empty -o", append([]string{"-o", ""}, append(pd, "stats")...), []string{`""`, "table, json or yaml"}},
		{"unknown flag", []string{"--nod", "node1", "stats"}, []string{"-nod"}},
		{"unknown command", append(pd, "routez"), []string{`"routez"`, "fib, flows, stats, policy, attached or nic"}},
		{"no node or pin dir", []string{"stats"}, []string{"--node NAME", "--pin-dir DIR"}},
		{"policy unknown subcommand", append(pd, "policy", "add"), []string{`"add"`, "set or delete"}},
		{"policy set no args", set(), []string{"policy set takes IP PORT PROTO MODE", "got 0", "policy set 10.200.2.11 8080 tcp STRICT"}},
		{"policy set too few", set("10.200.2.12", "8080", "tcp"), []string{"IP PORT PROTO MODE", "got 3", `"tcp"`}},
		{"policy set too many", set("10.200.2.12", "8080", "tcp", "STRICT", "now"), []string{"IP PORT PROTO MODE", "got 5", `"now"`}},
		{"policy delete too few", del("10.200.2.12", "8080"), []string{"policy delete takes IP PORT PROTO", "got 2"}},
		{"policy delete too many", del("10.200.2.12", "8080", "tcp", "STRICT"), []string{"IP PORT PROTO", "got 4"}},
		{"bad IP", set("10.200.2.300", "8080", "tcp", "STRICT"), []string{`IP "10.200.2.300"`, "IPv4 address"}},
		{"IPv6", set("fd00::1", "8080", "tcp", "STRICT"), []string{`IP "fd00::1"`, "IPv4 address"}},
		{"hostname", del("pod-a", "8080", "tcp"), []string{`IP "pod-a"`, "IPv4 address"}},
		{"port 0", set("10.200.2.12", "0", "tcp", "STRICT"), []string{`PORT "0"`, "1-65535"}},
		{"port 65536", set("10.200.2.12", "65536", "tcp", "STRICT"), []string{`PORT "65536"`, "1-65535"}},
		{"port abc", set("10.200.2.12", "abc", "tcp", "STRICT"), []string{`PORT "abc"`, "1-65535"}},
		{"port -1", del("10.200.2.12", "-1", "udp"), []string{`PORT "-1"`, "1-65535"}},
		{"proto icmp", set("10.200.2.12", "8080", "icmp", "STRICT"), []string{`PROTO "icmp"`, "tcp or udp"}},
		{"proto sctp", del("10.200.2.12", "8080", "sctp"), []string{`PROTO "sctp"`, "tcp or udp"}},
		{"bad mode", set("10.200.2.12", "8080", "tcp", "LOOSE"), []string{`"LOOSE"`, "UNSET, PERMISSIVE, STRICT, DISABLE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tt.args, &out)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("run(%q) = %v (%T), want a usageError", tt.args, err, err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("run(%q) = %q, want it to mention %q", tt.args, msg, w)
				}
			}
			if !strings.HasSuffix(msg, "(see fibctl --help)") {
				t.Errorf("run(%q) = %q, want it to point at --help", tt.args, msg)
			}
			if out.Len() != 0 {
				t.Errorf("run(%q) wrote %q to stdout, want nothing", tt.args, out.String())
			}
		})
	}
}

// TestHelp: --help and -h are not errors (exit status 0).
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		if err := run([]string{arg}, io.Discard); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("run(%q) = %v, want flag.ErrHelp", arg, err)
		}
	}
}

// --- Root tests: a FIB pinned on bpffs, read and edited through run. ---

// testPinDir returns a fresh pin directory name under the agents' pin
// root (fm-tc-<random>), removed with fib.Remove when the test ends.
func testPinDir(t testing.TB) string {
	t.Helper()
	testenv.NeedBPFFS(t)
	dir := filepath.Join(fib.DefaultPinRoot, fmt.Sprintf("fm-tc-%08x", rand.Uint32()))
	t.Cleanup(func() {
		if err := fib.Remove(dir); err != nil {
			t.Errorf("remove test FIB: %v", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory %s still there after fib.Remove (stat: %v)", dir, err)
		}
	})
	return dir
}

// Contents of the test FIB.
var (
	macA = net.HardwareAddr{0x02, 0x66, 0x6d, 0x01, 0x01, 0x01}
	macB = net.HardwareAddr{0x02, 0x66, 0x6d, 0x01, 0x01, 0x02}
	macC = net.HardwareAddr{0x02, 0x66, 0x6d, 0x00, 0x02, 0x00}

	testRoutes = []fib.Route{
		{Prefix: netip.MustParsePrefix("10.200.1.11/32"), NextHop: fib.NextHop{Ifindex: 1, SrcMAC: macA, DstMAC: macB}},
		{Prefix: netip.MustParsePrefix("10.200.2.0/24"), NextHop: fib.NextHop{Ifindex: 1, SrcMAC: macA, DstMAC: macC, PuntNew: true}},
	}
	tcpFlow   = fib.FlowKey{Src: netip.MustParseAddr("10.200.1.11"), Dst: netip.MustParseAddr("10.200.2.12"), SrcPort: 40000, DstPort: 8080, Proto: fib.ProtoTCP}
	udpFlow   = fib.FlowKey{Src: netip.MustParseAddr("10.200.1.11"), Dst: netip.MustParseAddr("10.200.2.12"), SrcPort: 40001, DstPort: 5353, Proto: fib.ProtoUDP}
	testFlows = []fib.FlowEntry{
		{Key: tcpFlow, Flow: fib.Flow{Action: fib.ActionForward, SrcID: 7, DstID: 9, NATKind: fib.NATDst, NAT: netip.MustParseAddrPort("10.200.2.13:8081")}},
		{Key: udpFlow, Flow: fib.Flow{Action: fib.ActionDrop, SrcID: 7, DstID: 11}},
	}
	testPolicy = []fib.PolicyEntry{
		{Key: fib.PolicyKey{Addr: netip.MustParseAddr("10.200.2.11"), Port: 8080, Proto: fib.ProtoTCP}, Mode: fib.ModePermissive},
		{Key: fib.PolicyKey{Addr: netip.MustParseAddr("10.200.2.12"), Port: 5353, Proto: fib.ProtoUDP}, Mode: fib.ModeDisable},
	}
)

// pinTestFIB loads a FIB pinned in a fresh directory (nothing attached),
// fills it with testRoutes, testFlows and testPolicy, and sends one UDP
// packet of udpFlow through the program so that the counters of the
// flow and the stats are not all zero. It returns the pin directory and
// the FIB (closed when the test ends).
func pinTestFIB(t testing.TB) (string, *fib.FIB) {
	t.Helper()
	dir := testPinDir(t)
	f, err := fib.Open(fib.Options{PinDir: dir, MaxFlows: 1024})
	if err != nil {
		t.Fatalf("fib.Open: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Routes.Put(testRoutes...); err != nil {
		t.Fatal(err)
	}
	if err := f.Flows.Put(testFlows...); err != nil {
		t.Fatal(err)
	}
	if err := f.Policy.Put(testPolicy...); err != nil {
		t.Fatal(err)
	}
	pkt := udpFrame(udpFlow, []byte("hello"))
	if _, err := f.Program().Run(&ebpf.RunOptions{
		Data:    pkt,
		DataOut: make([]byte, len(pkt)+512),
		// struct xdp_md: data, data_end, data_meta, ingress_ifindex (lo), rx_queue_index, egress_ifindex.
		Context: [6]uint32{0, uint32(len(pkt)), 0, 1, 0, 0},
	}); err != nil {
		t.Fatalf("run the FIB over a UDP packet: %v", err)
	}
	fl, ok, err := f.Flows.Get(udpFlow)
	if err != nil || !ok || fl.Packets != 1 {
		t.Fatalf("after one packet, flow %s = %+v, %v, %v; want 1 packet counted", udpFlow, fl, ok, err)
	}
	return dir, f
}

// udpFrame returns an Ethernet frame with an IPv4 UDP datagram of flow k.
func udpFrame(k fib.FlowKey, payload []byte) []byte {
	b := make([]byte, 14+20+8, 14+20+8+len(payload))
	copy(b[0:6], macA)
	copy(b[6:12], macB)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8], ip[9] = 64, byte(fib.ProtoUDP)
	src, dst := k.Src.As4(), k.Dst.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := b[34:42]
	binary.BigEndian.PutUint16(udp[0:], k.SrcPort)
	binary.BigEndian.PutUint16(udp[2:], k.DstPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// fibctl runs the command line and fails the test on an error.
func fibctl(t testing.TB, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(args, &out); err != nil {
		t.Fatalf("fibctl %s: %v", strings.Join(args, " "), err)
	}
	return out.String()
}

// tableLines returns the header and the rows of a table, each with its
// columns joined by one space, the rows sorted (flows and policy are
// listed in hash order).
func tableLines(out string) (header string, rows []string) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	rows = lines[1:]
	slices.Sort(rows)
	return lines[0], rows
}

// decodeList decodes a JSON or YAML list of objects, sorted by the
// values of the keys named in by (flows and policy come in hash order).
func decodeList(t testing.TB, format, out string, by ...string) []map[string]any {
	t.Helper()
	var got []map[string]any
	var err error
	switch format {
	case "json":
		d := json.NewDecoder(strings.NewReader(out))
		err = d.Decode(&got)
		if err == nil && d.More() {
			err = errors.New("more than one JSON value")
		}
	case "yaml":
		if strings.HasPrefix(strings.TrimSpace(out), "[") {
			t.Errorf("-o yaml printed JSON-looking %q", out)
		}
		err = yaml.UnmarshalStrict([]byte(out), &got)
	}
	if err != nil {
		t.Fatalf("decode -o %s output %q: %v", format, out, err)
	}
	key := func(m map[string]any) string {
		var s []string
		for _, k := range by {
			s = append(s, fmt.Sprint(m[k]))
		}
		return strings.Join(s, " ")
	}
	slices.SortFunc(got, func(a, b map[string]any) int { return strings.Compare(key(a), key(b)) })
	return got
}

// TestShow reads every list of a pinned FIB in table, JSON and YAML.
// The JSON and YAML field names are fibctl's contract with scripts, so
// the expectations spell them out rather than reuse fibctl's types.
func TestShow(t *testing.T) {
	dir, f := pinTestFIB(t)
	stats, err := f.Stats.Read()
	if err != nil {
		t.Fatal(err)
	}
	if stats[fib.ReasonRX].Packets != 1 {
		t.Fatalf("rx counter = %d after one packet, want 1", stats[fib.ReasonRX].Packets)
	}
	udpGot, _, err := f.Flows.Get(udpFlow)
	if err != nil {
		t.Fatal(err)
	}
	var wantStatsTable []string
	var wantStats []map[string]any
	for _, r := range fib.Reasons() {
		c := stats[r]
		wantStatsTable = append(wantStatsTable, fmt.Sprintf("%s %d %d", r, c.Packets, c.Bytes))
		wantStats = append(wantStats, map[string]any{"reason": r.String(), "packets": float64(c.Packets), "bytes": float64(c.Bytes)})
	}
	slices.Sort(wantStatsTable)

	tests := []struct {
		cmd        string
		by         []string // sort keys of JSON/YAML lists
		wantHeader string
		wantRows   []string // sorted
		want       []map[string]any
		// idle, when set, checks the flows' idleMs and removes it
		// from the comparison: it depends on the clock.
		idle bool
	}{
		{
			cmd:        "fib",
			by:         []string{"prefix"},
			wantHeader: "PREFIX IFINDEX SRC MAC DST MAC FLAGS",
			wantRows: []string{
				"10.200.1.11/32 1 02:66:6d:01:01:01 02:66:6d:01:01:02 -",
				"10.200.2.0/24 1 02:66:6d:01:01:01 02:66:6d:00:02:00 punt-new",
			},
			want: []map[string]any{
				{"prefix": "10.200.1.11/32", "ifindex": 1.0, "srcMAC": "02:66:6d:01:01:01", "dstMAC": "02:66:6d:01:01:02", "puntNew": false},
				{"prefix": "10.200.2.0/24", "ifindex": 1.0, "srcMAC": "02:66:6d:01:01:01", "dstMAC": "02:66:6d:00:02:00", "puntNew": true},
			},
		},
		{
			cmd:        "flows",
			by:         []string{"proto", "src"},
			wantHeader: "PROTO SOURCE DESTINATION ACTION NAT PACKETS BYTES IDLE",
			// The UDP row's IDLE is a duration; it is checked in JSON.
			wantRows: []string{
				"tcp 10.200.1.11:40000 10.200.2.12:8080 forward dnat 10.200.2.13:8081 0 0 never",
				fmt.Sprintf("udp 10.200.1.11:40001 10.200.2.12:5353 drop - 1 %d", udpGot.Bytes),
			},
			want: []map[string]any{
				{"proto": "tcp", "src": "10.200.1.11:40000", "dst": "10.200.2.12:8080", "action": "forward", "nat": "dnat 10.200.2.13:8081", "srcID": 7.0, "dstID": 9.0, "packets": 0.0, "bytes": 0.0, "idleMs": -1.0},
				{"proto": "udp", "src": "10.200.1.11:40001", "dst": "10.200.2.12:5353", "action": "drop", "srcID": 7.0, "dstID": 11.0, "packets": 1.0, "bytes": float64(udpGot.Bytes)},
			},
			idle: true,
		},
		{
			cmd:        "stats",
			wantHeader: "REASON PACKETS BYTES",
			wantRows:   wantStatsTable,
			want:       wantStats, // in counter order: not sorted
		},
		{
			cmd:        "policy",
			by:         []string{"addr", "port"},
			wantHeader: "PROTO ADDRESS PORT MODE",
			wantRows: []string{
				"tcp 10.200.2.11 8080 PERMISSIVE",
				"udp 10.200.2.12 5353 DISABLE",
			},
			want: []map[string]any{
				{"proto": "tcp", "addr": "10.200.2.11", "port": 8080.0, "mode": "PERMISSIVE"},
				{"proto": "udp", "addr": "10.200.2.12", "port": 5353.0, "mode": "DISABLE"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.cmd+"/table", func(t *testing.T) {
			out := fibctl(t, "--pin-dir", dir, tt.cmd)
			header, rows := tableLines(out)
			if header != tt.wantHeader {
				t.Errorf("header = %q, want %q", header, tt.wantHeader)
			}
			if tt.idle {
				// Drop the UDP flow's IDLE column ("12ms"), checked in JSON.
				for i, r := range rows {
					if strings.HasPrefix(r, "udp ") {
						rows[i] = r[:strings.LastIndexByte(r, ' ')]
					}
				}
			}
			if d := cmp.Diff(tt.wantRows, rows); d != "" {
				t.Errorf("fibctl %s rows (-want +got):\n%s\noutput:\n%s", tt.cmd, d, out)
			}
		})
		for _, format := range []string{"json", "yaml"} {
			t.Run(tt.cmd+"/"+format, func(t *testing.T) {
				out := fibctl(t, "--pin-dir", dir, "-o", format, tt.cmd)
				got := decodeList(t, format, out, tt.by...)
				if tt.idle {
					for _, m := range got {
						if m["proto"] != "udp" {
							continue
						}
						// One packet went through a moment ago.
						if idle, ok := m["idleMs"].(float64); !ok || idle < 0 || idle > 60_000 {
							t.Errorf("udp flow idleMs = %v, want 0..60000 (a packet was just counted)", m["idleMs"])
						}
						delete(m, "idleMs")
					}
				}
				if d := cmp.Diff(tt.want, got); d != "" {
					t.Errorf("fibctl -o %s %s (-want +got):\n%s\noutput:\n%s", format, tt.cmd, d, out)
				}
			})
		}
	}

	t.Run("routes is fib", func(t *testing.T) {
		if a, b := fibctl(t, "--pin-dir", dir, "routes"), fibctl(t, "--pin-dir", dir, "fib"); a != b {
			t.Errorf("routes printed\n%s\nfib printed\n%s", a, b)
		}
	})
}

// TestStatsNamesEveryReason: the stats table has one row per fib.Reason,
// in counter order, named as fib.Reason.String names it.
func TestStatsNamesEveryReason(t *testing.T) {
	dir, _ := pinTestFIB(t)
	out := fibctl(t, "--pin-dir", dir, "stats")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var got []string
	for _, l := range lines[1:] {
		got = append(got, strings.Fields(l)[0])
	}
	var want []string
	for _, r := range fib.Reasons() {
		want = append(want, r.String())
	}
	if len(want) != fib.NumReasons {
		t.Fatalf("fib.Reasons() has %d entries, fib.NumReasons is %d", len(want), fib.NumReasons)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("stats reasons (-want +got):\n%s", d)
	}
	for _, name := range want {
		if strings.HasPrefix(name, "reason-") {
			t.Errorf("reason %s has no name", name)
		}
	}
}

// TestAttached lists the interfaces with a pinned FIB link: none, then
// lo of a private network namespace.
func TestAttached(t *testing.T) {
	dir, f := pinTestFIB(t)
	for format, want := range map[string]string{"table": "INTERFACE\n", "json": "[]\n", "yaml": "[]\n"} {
		if got := fibctl(t, "--pin-dir", dir, "-o", format, "attached"); got != want {
			t.Errorf("fibctl -o %s attached with nothing attached = %q, want %q", format, got, want)
		}
	}

	// Attach to lo of a network namespace of this test, which lives until
	// the test ends (its handle is closed then).
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	netnstest.Do(t, ns, func() {
		if _, _, err := f.Attach("lo"); err != nil {
			t.Fatalf("attach to lo in a new network namespace: %v", err)
		}
	})

	if got, want := fibctl(t, "--pin-dir", dir, "attached"), "INTERFACE\nlo\n"; got != want {
		t.Errorf("fibctl attached = %q, want %q", got, want)
	}
	for _, format := range []string{"json", "yaml"} {
		out := fibctl(t, "--pin-dir", dir, "-o", format, "attached")
		var got []string
		if err := yaml.UnmarshalStrict([]byte(out), &got); err != nil { // YAML is a superset of JSON
			t.Fatalf("decode -o %s attached %q: %v", format, out, err)
		}
		if d := cmp.Diff([]string{"lo"}, got); d != "" {
			t.Errorf("fibctl -o %s attached (-want +got):\n%s", format, d)
		}
	}
}

// TestPolicySetDelete edits the policy map through fibctl and checks
// both fibctl's listing and the map itself.
func TestPolicySetDelete(t *testing.T) {
	dir, f := pinTestFIB(t)
	key := fib.PolicyKey{Addr: netip.MustParseAddr("10.200.2.12"), Port: 8080, Proto: fib.ProtoTCP}
	mapHas := func(t *testing.T) []fib.PolicyEntry {
		t.Helper()
		ps, err := f.Policy.List()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(ps, func(a, b fib.PolicyEntry) int { return strings.Compare(a.Key.String(), b.Key.String()) })
		return ps
	}
	sorted := func(es ...fib.PolicyEntry) []fib.PolicyEntry {
		es = slices.Clone(es)
		slices.SortFunc(es, func(a, b fib.PolicyEntry) int { return strings.Compare(a.Key.String(), b.Key.String()) })
		return es
	}
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

	if out := fibctl(t, "--pin-dir", dir, "policy", "set", "10.200.2.12", "8080", "tcp", "STRICT"); out != "" {
		t.Errorf("policy set printed %q, want nothing", out)
	}
	_, rows := tableLines(fibctl(t, "--pin-dir", dir, "policy"))
	wantRows := []string{"tcp 10.200.2.11 8080 PERMISSIVE", "tcp 10.200.2.12 8080 STRICT", "udp 10.200.2.12 5353 DISABLE"}
	if d := cmp.Diff(wantRows, rows); d != "" {
		t.Errorf("policy after set (-want +got):\n%s", d)
	}
	want := sorted(append(slices.Clone(testPolicy), fib.PolicyEntry{Key: key, Mode: fib.ModeStrict})...)
	if d := cmp.Diff(want, mapHas(t), cmpAddr); d != "" {
		t.Errorf("policy map after set (-want +got):\n%s", d)
	}

	// Set again, protocol and mode in other cases: the entry is replaced.
	fibctl(t, "--pin-dir", dir, "policy", "set", "10.200.2.12", "8080", "TCP", "disable")
	want = sorted(append(slices.Clone(testPolicy), fib.PolicyEntry{Key: key, Mode: fib.ModeDisable})...)
	if d := cmp.Diff(want, mapHas(t), cmpAddr); d != "" {
		t.Errorf("policy map after a second set (-want +got):\n%s", d)
	}

	if out := fibctl(t, "--pin-dir", dir, "policy", "delete", "10.200.2.12", "8080", "tcp"); out != "" {
		t.Errorf("policy delete printed %q, want nothing", out)
	}
	_, rows = tableLines(fibctl(t, "--pin-dir", dir, "policy"))
	if d := cmp.Diff([]string{"tcp 10.200.2.11 8080 PERMISSIVE", "udp 10.200.2.12 5353 DISABLE"}, rows); d != "" {
		t.Errorf("policy after delete (-want +got):\n%s", d)
	}
	if d := cmp.Diff(sorted(testPolicy...), mapHas(t), cmpAddr); d != "" {
		t.Errorf("policy map after delete (-want +got):\n%s", d)
	}
	// Deleting what is not there is not an error (a retried delete).
	fibctl(t, "--pin-dir", dir, "policy", "delete", "10.200.2.12", "8080", "tcp")
}

// TestNoFIB: every command on a pin directory without a FIB (the agent
// is not running, or --node is mistyped) says so; it is not a usage
// error.
func TestNoFIB(t *testing.T) {
	dir := testPinDir(t) // never created
	node := filepath.Base(dir)
	for _, args := range [][]string{
		{"--pin-dir", dir, "fib"},
		{"--pin-dir", dir, "flows"},
		{"--pin-dir", dir, "stats"},
		{"--pin-dir", dir, "policy"},
		{"--pin-dir", dir, "policy", "set", "10.200.2.12", "8080", "tcp", "STRICT"},
		{"--pin-dir", dir, "policy", "delete", "10.200.2.12", "8080", "tcp"},
		{"--pin-dir", dir, "attached"},
		{"--node", node, "stats"},
		{"--node", node, "-o", "json", "attached"},
	} {
		var out bytes.Buffer
		err := run(args, &out)
		if err == nil {
			t.Errorf("fibctl %s succeeded with no FIB pinned, printed %q", strings.Join(args, " "), out.String())
			continue
		}
		var ue usageError
		if errors.As(err, &ue) {
			t.Errorf("fibctl %s = usage error %q, want a missing-FIB error", strings.Join(args, " "), err)
		}
		for _, w := range []string{dir, "is the agent running"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("fibctl %s = %q, want it to mention %q", strings.Join(args, " "), err, w)
			}
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fibctl created %s (stat: %v); it must only read", dir, err)
	}
}

func TestGlobalFlagsLast(t *testing.T) {
	tests := []struct{ in, want []string }{
		{[]string{"--node", "fm-node1", "certs"}, []string{"certs", "--node", "fm-node1"}},
		{[]string{"--node", "fm-node1", "-o", "json", "certs"}, []string{"certs", "--node", "fm-node1", "-o", "json"}},
		{[]string{"--node=fm-node2", "config", "dump", "FDS"}, []string{"config", "dump", "--node", "fm-node2", "FDS"}},
		{[]string{"--node", "fm-node1", "fib"}, []string{"--node", "fm-node1", "fib"}},
		{[]string{"--node", "fm-node1", "config", "status"}, []string{"--node", "fm-node1", "config", "status"}},
		{[]string{"certs", "--node", "fm-node1"}, []string{"certs", "--node", "fm-node1"}},
		{[]string{"--pin-dir", "/x", "certs"}, []string{"--pin-dir", "/x", "certs"}},
	}
	for _, tt := range tests {
		if got := globalFlagsLast(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("globalFlagsLast(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
