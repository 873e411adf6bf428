package fib

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/checksum"
	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// The FIB the XDP table runs against. Ingress is always lo (ifindex 1);
// fm0 and fm1 are veth devices in a test namespace, in tx_ports.
//
//	10.1.0.0/24 -> fm0      10.1.0.7/32 -> fm1 (longer prefix wins)
//	10.2.0.0/16 -> fm0      10.2.3.0/24 -> fm1
//	10.3.0.0/24 -> lo       (hairpin: XDP_TX)
//	10.4.0.0/24 -> ifindex 4242, not in tx_ports
//	10.5.0.0/24 -> fm0, punt-new
//	policy: 10.1.0.9 tcp/443 STRICT, 10.1.0.9 udp/53 STRICT,
//	        10.1.0.10 tcp/443 PERMISSIVE
var (
	macA    = mustMAC("02:aa:00:00:00:01")
	macAPod = mustMAC("02:aa:00:00:00:02")
	macB    = mustMAC("02:bb:00:00:00:01")
	macBPod = mustMAC("02:bb:00:00:00:02")
	macLo   = mustMAC("02:cc:00:00:00:01")
	macLoGw = mustMAC("02:cc:00:00:00:02")
)

const goneIfindex = 4242

type testTopo struct {
	f          *FIB
	nhA, nhB   NextHop
	nhLo       NextHop
	nhGone     NextHop
	nhPuntNewA NextHop
}

// newTestTopo opens a FIB with the routes and policy above.
func newTestTopo(t testing.TB) *testTopo {
	t.Helper()
	f := openTestFIB(t)
	tn := newTestNetns(t, 1, "fm0", "fm1")
	a, b := tn.ifindex["fm0"], tn.ifindex["fm1"]
	tn.do(t, func() {
		if err := f.TxPorts.Add(a, b); err != nil {
			t.Fatalf("TxPorts.Add: %v", err)
		}
	})
	tp := &testTopo{
		f:          f,
		nhA:        NextHop{Ifindex: a, SrcMAC: macA, DstMAC: macAPod},
		nhB:        NextHop{Ifindex: b, SrcMAC: macB, DstMAC: macBPod},
		nhLo:       NextHop{Ifindex: loIfindex, SrcMAC: macLo, DstMAC: macLoGw},
		nhGone:     NextHop{Ifindex: goneIfindex, SrcMAC: macA, DstMAC: macAPod},
		nhPuntNewA: NextHop{Ifindex: a, SrcMAC: macA, DstMAC: macAPod, PuntNew: true},
	}
	routes := []Route{
		{netip.MustParsePrefix("10.1.0.0/24"), tp.nhA},
		{netip.MustParsePrefix("10.1.0.7/32"), tp.nhB},
		{netip.MustParsePrefix("10.2.0.0/16"), tp.nhA},
		{netip.MustParsePrefix("10.2.3.0/24"), tp.nhB},
		{netip.MustParsePrefix("10.3.0.0/24"), tp.nhLo},
		{netip.MustParsePrefix("10.4.0.0/24"), tp.nhGone},
		{netip.MustParsePrefix("10.5.0.0/24"), tp.nhPuntNewA},
	}
	if err := f.Routes.Put(routes...); err != nil {
		t.Fatalf("Routes.Put: %v", err)
	}
	pol := []PolicyEntry{
		{PolicyKey{netip.MustParseAddr("10.1.0.9"), 443, ProtoTCP}, ModeStrict, false},
		{PolicyKey{netip.MustParseAddr("10.1.0.9"), 53, ProtoUDP}, ModeStrict, false},
		{PolicyKey{netip.MustParseAddr("10.1.0.10"), 443, ProtoTCP}, ModePermissive, false},
	}
	if err := f.Policy.Put(pol...); err != nil {
		t.Fatalf("Policy.Put: %v", err)
	}
	return tp
}

// xdpCase is one frame through the FIB.
type xdpCase struct {
	name string
	pkt  []byte
	want uint32 // XDP action
	// fwd is the next hop of a forwarded frame: the expected output is
	// pkt with its MACs, TTL and checksum rewritten. Nil: unchanged.
	fwd *NextHop
	// reasons are the counters that must rise besides ReasonRX.
	reasons []Reason
	// flows are installed before the run and removed after it; each must
	// count the packet. rawFlows are written to the map directly.
	flows    []FlowEntry
	rawFlows map[FlowKey]uint32 // key -> raw action
	routes   []Route            // added for this case only
	// runErr: the kernel refuses the frame; nothing may be counted.
	runErr error
}

func key(proto Proto, src string, sport uint16, dst string, dport uint16) FlowKey {
	return FlowKey{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport, Proto: proto}
}

// xdpCases is the table; the fuzz test seeds its corpus from it.
func xdpCases(tp *testTopo) []xdpCase {
	const client = "192.0.2.1"
	tcp := func(dst string, dport uint16) []byte {
		return ip4{Src: client, Dst: dst, Proto: ProtoTCP}.frame(tcpHdr(40000, dport))
	}
	udp := func(dst string, dport uint16) []byte {
		return ip4{Src: client, Dst: dst, Proto: ProtoUDP}.frame(udpHdr(40000, dport, []byte("hello")))
	}
	withTTL := func(ttl uint8) []byte {
		return ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoTCP, TTL: ttl, ttl0: ttl == 0}.frame(tcpHdr(40000, 80))
	}
	mutIP := func(pkt []byte, fn func(ip []byte)) []byte {
		fn(pkt[14:])
		return pkt
	}
	fixedIPv4 := tcp("10.1.0.1", 80)

	// Short UDP datagram (30 bytes) in a minimum-size frame: 16 bytes of
	// Ethernet padding, non-zero so that "untouched" means something.
	padded := cat(ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoUDP}.frame(udpHdr(40000, 9, []byte("hi"))), bytes.Repeat([]byte{0xa5}, 16))

	// IPv6: 40-byte header + 8-byte UDP header to 2001:db8::1.
	ipv6 := make([]byte, 40)
	ipv6[0] = 0x60
	binary.BigEndian.PutUint16(ipv6[4:], 8)
	ipv6[6], ipv6[7] = 17, 64
	copy(ipv6[8:], netip.MustParseAddr("2001:db8::2").AsSlice())
	copy(ipv6[24:], netip.MustParseAddr("2001:db8::1").AsSlice())
	ipv6 = ether(etherTypeIPv6, cat(ipv6, udpHdr(1, 2, nil)))

	arp := ether(etherTypeARP, []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 10, 1, 0, 1})
	// An 802.1Q tag (VLAN 100) in front of an IPv4 frame the FIB would route.
	vlan := ether(etherTypeVLAN, cat([]byte{0x00, 0x64, 0x08, 0x00}, fixedIPv4[14:]))

	icmpTo := func(dst string, typ uint8, id uint16) []byte {
		return ip4{Src: client, Dst: dst, Proto: ProtoICMP}.frame(icmpEcho(typ, id, 1))
	}
	nh := func(n NextHop) *NextHop { return &n }

	return []xdpCase{
		// --- Routing ---
		{name: "route hit /24", pkt: tcp("10.1.0.1", 80), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "route hit /32 wins over /24", pkt: tcp("10.1.0.7", 80), want: xdpRedirect, fwd: nh(tp.nhB), reasons: []Reason{ReasonRedirect}},
		{name: "longest prefix /24 wins over /16", pkt: udp("10.2.3.4", 53), want: xdpRedirect, fwd: nh(tp.nhB), reasons: []Reason{ReasonRedirect}},
		{name: "shorter prefix /16 still matches", pkt: udp("10.2.9.9", 53), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{
			name: "default route /0", pkt: tcp("172.16.0.1", 80), want: xdpRedirect, fwd: nh(tp.nhB), reasons: []Reason{ReasonRedirect},
			routes: []Route{{netip.MustParsePrefix("0.0.0.0/0"), tp.nhB}},
		},
		{name: "route miss passes", pkt: tcp("172.16.0.1", 80), want: xdpPass, reasons: []Reason{ReasonPassRouteMiss}},
		{name: "TTL=1 passes (stack sends time exceeded)", pkt: withTTL(1), want: xdpPass, reasons: []Reason{ReasonPassTTL}},
		{name: "TTL=0 passes", pkt: withTTL(0), want: xdpPass, reasons: []Reason{ReasonPassTTL}},
		{name: "TTL=2 forwarded with TTL=1", pkt: withTTL(2), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "TTL=255 forwarded", pkt: withTTL(255), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "hairpin to ingress device is XDP_TX", pkt: tcp("10.3.0.5", 80), want: xdpTX, fwd: nh(tp.nhLo), reasons: []Reason{ReasonTX}},
		{name: "next hop not in tx_ports passes unmodified", pkt: tcp("10.4.0.5", 80), want: xdpPass, reasons: []Reason{ReasonPassNoTxPort}},
		{name: "unknown L4 protocol (GRE) forwarded", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: 47}.frame([]byte{0, 0, 8, 0}), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},

		// --- Malformed and odd frames ---
		// BPF_PROG_TEST_RUN refuses frames shorter than ETH_HLEN (and no
		// driver delivers one), so the program's own check cannot run.
		{name: "truncated Ethernet (13 bytes) refused by the kernel", pkt: fixedIPv4[:13], runErr: unix.EINVAL},
		{name: "Ethernet header only, IPv4 type", pkt: fixedIPv4[:14], want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "truncated IPv4 header (19 bytes)", pkt: fixedIPv4[:14+19], want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "IHL=4", pkt: mutIP(tcp("10.1.0.1", 80), func(ip []byte) { ip[0] = 0x44; setIPv4Checksum(ip[:20]) }), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "version 6 in an IPv4 frame", pkt: mutIP(tcp("10.1.0.1", 80), func(ip []byte) { ip[0] = 0x65; setIPv4Checksum(ip[:20]) }), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "tot_len larger than frame", pkt: mutIP(tcp("10.1.0.1", 80), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], 41); setIPv4Checksum(ip[:20]) }), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "tot_len smaller than header", pkt: mutIP(tcp("10.1.0.1", 80), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], 19); setIPv4Checksum(ip[:20]) }), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "IHL=6 (options) forwarded", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoTCP, Options: []byte{0x94, 0x04, 0, 0}}.frame(tcpHdr(40000, 80)), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "IHL=6 options: policy reads ports after them", pkt: ip4{Src: client, Dst: "10.1.0.9", Proto: ProtoTCP, Options: []byte{0x94, 0x04, 0, 0}}.frame(tcpHdr(40000, 443)), want: xdpDrop, reasons: []Reason{ReasonDropStrict}},
		{name: "Ethernet padding after short datagram forwarded", pkt: padded, want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "truncated TCP header", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoTCP}.frame(tcpHdr(40000, 80)[:10]), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "TCP data offset < 5", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoTCP}.frame(func() []byte { h := tcpHdr(40000, 80); h[12] = 4 << 4; return h }()), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "truncated UDP header", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoUDP}.frame(udpHdr(40000, 53, nil)[:4]), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		// On the wire a short frame is padded to 60 bytes: a truncated L4
		// header must be judged by the datagram's end (tot_len), not by
		// the frame's, or the FIB parses ports out of the padding.
		{name: "truncated UDP header in a padded frame", pkt: cat(ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoUDP}.frame(udpHdr(40000, 53, nil)[:4]), make([]byte, 22)), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "UDP without header in a padded frame", pkt: cat(ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoUDP}.frame(nil), make([]byte, 26)), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "truncated TCP header in a padded frame", pkt: cat(ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoTCP}.frame(tcpHdr(40000, 80)[:10]), bytes.Repeat([]byte{0x50}, 20)), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "truncated ICMP header in a padded frame", pkt: cat(ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoICMP}.frame(icmpEcho(8, 1, 1)[:4]), make([]byte, 22)), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "truncated ICMP header", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoICMP}.frame(icmpEcho(8, 1, 1)[:6]), want: xdpPass, reasons: []Reason{ReasonPassMalformed}},
		{name: "non-first fragment passes, even to a STRICT port", pkt: ip4{Src: client, Dst: "10.1.0.9", Proto: ProtoTCP, Frag: 185}.frame(tcpHdr(40000, 443)), want: xdpPass, reasons: []Reason{ReasonPassFragment}},
		{name: "last fragment (offset, no MF) passes", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoUDP, Frag: 0x2000 | 1}.frame([]byte("12345678")), want: xdpPass, reasons: []Reason{ReasonPassFragment}},
		{name: "first fragment (MF, offset 0) forwarded", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoUDP, Frag: 0x2000}.frame(udpHdr(40000, 53, []byte("part1..."))), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "tiny first fragment (MF, TCP header cut) dropped", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoTCP, Frag: 0x2000}.frame(tcpHdr(40000, 443)[:10]), want: xdpDrop, reasons: []Reason{ReasonDropTinyFragment}},
		{name: "tiny first fragment (MF, UDP header cut) dropped", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoUDP, Frag: 0x2000}.frame(udpHdr(40000, 53, nil)[:4]), want: xdpDrop, reasons: []Reason{ReasonDropTinyFragment}},
		{name: "first fragment to a STRICT port dropped", pkt: ip4{Src: client, Dst: "10.1.0.9", Proto: ProtoUDP, Frag: 0x2000}.frame(udpHdr(40000, 53, []byte("part1..."))), want: xdpDrop, reasons: []Reason{ReasonDropStrict}},
		{name: "DF set forwarded", pkt: ip4{Src: client, Dst: "10.1.0.1", Proto: ProtoTCP, Frag: 0x4000}.frame(tcpHdr(40000, 80)), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "IPv6 passes unchanged", pkt: ipv6, want: xdpPass, reasons: []Reason{ReasonPassIPv6}},
		{name: "ARP passes", pkt: arp, want: xdpPass, reasons: []Reason{ReasonPassNonIPv4}},
		{name: "VLAN-tagged passes", pkt: vlan, want: xdpPass, reasons: []Reason{ReasonPassNonIPv4}},

		// --- Policy ---
		{name: "STRICT drops TCP", pkt: tcp("10.1.0.9", 443), want: xdpDrop, reasons: []Reason{ReasonDropStrict}},
		{name: "STRICT drops UDP", pkt: udp("10.1.0.9", 53), want: xdpDrop, reasons: []Reason{ReasonDropStrict}},
		{name: "STRICT on another port does not drop", pkt: tcp("10.1.0.9", 80), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "STRICT tcp/443 does not drop udp/443", pkt: udp("10.1.0.9", 443), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		{name: "PERMISSIVE does not drop", pkt: tcp("10.1.0.10", 443), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect}},
		// TestXDP installs a forward flow for this 5-tuple and checks that
		// it never counts a packet: policy decides before flows.
		{name: "STRICT wins over a forward flow", pkt: tcp("10.1.0.9", 443), want: xdpDrop, reasons: []Reason{ReasonDropStrict}},

		// --- Flows ---
		{
			name: "flow forward counts and forwards", pkt: tcp("10.1.0.1", 8080), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect},
			flows: []FlowEntry{{key(ProtoTCP, client, 40000, "10.1.0.1", 8080), Flow{Action: ActionForward}}},
		},
		{
			name: "flow drop", pkt: tcp("10.1.0.1", 8081), want: xdpDrop, reasons: []Reason{ReasonDropFlow},
			flows: []FlowEntry{{key(ProtoTCP, client, 40000, "10.1.0.1", 8081), Flow{Action: ActionDrop}}},
		},
		{
			name: "flow pass", pkt: udp("10.1.0.1", 8082), want: xdpPass, reasons: []Reason{ReasonPassFlow},
			flows: []FlowEntry{{key(ProtoUDP, client, 40000, "10.1.0.1", 8082), Flow{Action: ActionPass}}},
		},
		{
			name: "flow drop without a route", pkt: tcp("172.16.0.1", 8083), want: xdpDrop, reasons: []Reason{ReasonDropFlow},
			flows: []FlowEntry{{key(ProtoTCP, client, 40000, "172.16.0.1", 8083), Flow{Action: ActionDrop}}},
		},
		{
			name: "flow forward without a route passes", pkt: tcp("172.16.0.1", 8084), want: xdpPass, reasons: []Reason{ReasonPassRouteMiss},
			flows: []FlowEntry{{key(ProtoTCP, client, 40000, "172.16.0.1", 8084), Flow{Action: ActionForward}}},
		},
		{
			name: "unknown flow action fails closed", pkt: tcp("10.1.0.1", 8085), want: xdpDrop, reasons: []Reason{ReasonDropFlow},
			rawFlows: map[FlowKey]uint32{key(ProtoTCP, client, 40000, "10.1.0.1", 8085): 7},
		},
		{
			name: "unknown flow action FLOW_ACTION_LEN fails closed", pkt: tcp("10.1.0.1", 8086), want: xdpDrop, reasons: []Reason{ReasonDropFlow},
			rawFlows: map[FlowKey]uint32{key(ProtoTCP, client, 40000, "10.1.0.1", 8086): uint32(xfib.FibFlowActionFLOW_ACTION_LEN)},
		},

		// --- Punt (no agent socket: fail closed) ---
		{name: "punt-new route without socket drops", pkt: tcp("10.5.0.1", 80), want: xdpDrop, reasons: []Reason{ReasonDropPuntNoSocket}},
		{
			name: "punt-new route with a forward flow forwards", pkt: tcp("10.5.0.1", 81), want: xdpRedirect, fwd: nh(tp.nhPuntNewA), reasons: []Reason{ReasonRedirect},
			flows: []FlowEntry{{key(ProtoTCP, client, 40000, "10.5.0.1", 81), Flow{Action: ActionForward}}},
		},
		{
			name: "flow punt without socket drops", pkt: tcp("10.1.0.1", 8087), want: xdpDrop, reasons: []Reason{ReasonDropPuntNoSocket},
			flows: []FlowEntry{{key(ProtoTCP, client, 40000, "10.1.0.1", 8087), Flow{Action: ActionPunt}}},
		},
		{name: "punt-new route, TTL=1, no socket: punt decides first", pkt: ip4{Src: client, Dst: "10.5.0.1", Proto: ProtoTCP, TTL: 1}.frame(tcpHdr(40000, 80)), want: xdpDrop, reasons: []Reason{ReasonDropPuntNoSocket}},

		// --- ICMP: echo flows are keyed by identifier ---
		{
			name: "ICMP echo keyed by identifier", pkt: icmpTo("10.1.0.1", 8, 0x1234), want: xdpDrop, reasons: []Reason{ReasonDropFlow},
			flows: []FlowEntry{{key(ProtoICMP, client, 0x1234, "10.1.0.1", 0), Flow{Action: ActionDrop}}},
		},
		{
			name: "ICMP echo with another identifier forwarded", pkt: icmpTo("10.1.0.1", 8, 0x1235), want: xdpRedirect, fwd: nh(tp.nhA), reasons: []Reason{ReasonRedirect},
		},
		{
			name: "ICMP echo reply keyed by identifier", pkt: icmpTo("10.1.0.1", 0, 0x4321), want: xdpPass, reasons: []Reason{ReasonPassFlow},
			flows: []FlowEntry{{key(ProtoICMP, client, 0x4321, "10.1.0.1", 0), Flow{Action: ActionPass}}},
		},
		{
			name: "ICMP unreachable is not keyed by the id bytes", pkt: icmpTo("10.1.0.1", 3, 0x5555), want: xdpDrop, reasons: []Reason{ReasonDropFlow},
			flows: []FlowEntry{{key(ProtoICMP, client, 0, "10.1.0.1", 0), Flow{Action: ActionDrop}}},
		},
	}
}

func TestXDP(t *testing.T) {
	tp := newTestTopo(t)
	f := tp.f
	prog := f.Program()

	// A forward flow behind a STRICT port: policy must decide first and
	// the flow must not count the packet.
	strictFlow := key(ProtoTCP, "192.0.2.1", 40000, "10.1.0.9", 443)
	if err := f.Flows.Put(FlowEntry{strictFlow, Flow{Action: ActionForward}}); err != nil {
		t.Fatal(err)
	}

	cases := xdpCases(tp)
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range tc.routes {
				if err := f.Routes.Put(r); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Routes.Delete(r.Prefix) })
			}
			var flowKeys []FlowKey
			for _, e := range tc.flows {
				if err := f.Flows.Put(e); err != nil {
					t.Fatal(err)
				}
				flowKeys = append(flowKeys, e.Key)
			}
			for k, a := range tc.rawFlows {
				// Flows.Put refuses unknown actions; write the raw value.
				bk, err := flowKey(k)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.objs.Flows.Put(&bk, &xfib.FibFlowVal{Action: a}); err != nil {
					t.Fatal(err)
				}
				flowKeys = append(flowKeys, k)
			}
			t.Cleanup(func() { f.Flows.Delete(flowKeys...) })

			in := append([]byte(nil), tc.pkt...)
			before, err := f.Stats.Read()
			if err != nil {
				t.Fatal(err)
			}
			got, out, err := runXDP(prog, in, loIfindex, 0)
			after, serr := f.Stats.Read()
			if serr != nil {
				t.Fatal(serr)
			}
			if !bytes.Equal(in, tc.pkt) {
				t.Fatal("prog.Run modified its input buffer")
			}
			if tc.runErr != nil {
				if !isErrno(err, tc.runErr.(unix.Errno)) {
					t.Fatalf("Run error = %v, want %v", err, tc.runErr)
				}
				if d := deltaDiff(make([]Counter, NumReasons), statsDelta(before, after)); d != "" {
					t.Errorf("counters moved on a refused run (-want +got):\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got != tc.want {
				t.Errorf("action = %s, want %s", actionName[got], actionName[tc.want])
			}
			want := tc.pkt
			if tc.fwd != nil {
				want = forwarded(tc.pkt, tc.fwd.SrcMAC, tc.fwd.DstMAC)
				// The recomputed checksum must verify: a header summed
				// with its checksum is 0xffff.
				ip := out[14:]
				if ihl := int(ip[0]&0xf) * 4; checksum.IPv4Header(ip[:ihl]) != binary.BigEndian.Uint16(ip[10:]) {
					t.Errorf("output IPv4 checksum %#04x, want %#04x", binary.BigEndian.Uint16(ip[10:]), checksum.IPv4Header(ip[:ihl]))
				}
			}
			if d := cmp.Diff(want, out); d != "" {
				t.Errorf("output frame (-want +got):\n%s", d)
			}
			if d := deltaDiff(wantDelta(len(tc.pkt), tc.reasons...), statsDelta(before, after)); d != "" {
				t.Errorf("counter deltas (-want +got):\n%s", d)
			}
			for _, k := range flowKeys {
				fl, ok, err := f.Flows.Get(k)
				if err != nil || !ok {
					t.Fatalf("Flows.Get(%s) = %v, %v", k, ok, err)
				}
				if fl.Packets != 1 || fl.Bytes != uint64(len(tc.pkt)) || fl.LastSeenNs == 0 {
					t.Errorf("flow %s counters = %d packets, %d bytes, last seen %d; want 1, %d, non-zero", k, fl.Packets, fl.Bytes, fl.LastSeenNs, len(tc.pkt))
				}
			}
		})
	}

	fl, ok, err := f.Flows.Get(strictFlow)
	if err != nil || !ok {
		t.Fatalf("Flows.Get(%s) = %v, %v", strictFlow, ok, err)
	}
	if fl.Packets != 0 {
		t.Errorf("flow behind a STRICT port counted %d packets: policy must drop before flows", fl.Packets)
	}
}

// TestXDPFlowCountersAccumulate sends the same flow's packets several
// times: the flow's counters add up and LastSeenNs moves forward.
func TestXDPFlowCountersAccumulate(t *testing.T) {
	tp := newTestTopo(t)
	k := key(ProtoUDP, "192.0.2.1", 5000, "10.1.0.1", 5001)
	if err := tp.f.Flows.Put(FlowEntry{k, Flow{Action: ActionForward, SrcID: 7, DstID: 9}}); err != nil {
		t.Fatal(err)
	}
	var last uint64
	var bytesSent uint64
	for i := 1; i <= 3; i++ {
		pkt := ip4{Src: "192.0.2.1", Dst: "10.1.0.1", Proto: ProtoUDP}.frame(udpHdr(5000, 5001, bytes.Repeat([]byte{'x'}, i*10)))
		bytesSent += uint64(len(pkt))
		if got, _, err := runXDP(tp.f.Program(), pkt, loIfindex, 0); err != nil || got != xdpRedirect {
			t.Fatalf("run %d = %s, %v; want XDP_REDIRECT", i, actionName[got], err)
		}
		fl, _, err := tp.f.Flows.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		want := Flow{Action: ActionForward, SrcID: 7, DstID: 9, Packets: uint64(i), Bytes: bytesSent, LastSeenNs: fl.LastSeenNs}
		if d := cmp.Diff(want, fl, cmpNetip); d != "" {
			t.Errorf("after %d packets (-want +got):\n%s", i, d)
		}
		if fl.LastSeenNs <= last {
			t.Errorf("LastSeenNs %d did not move past %d", fl.LastSeenNs, last)
		}
		last = fl.LastSeenNs
	}
}

// TestXDPDevmapForgetsDeletedDevice: when a next hop's device goes away
// the kernel drops it from tx_ports and the FIB passes instead of
// redirecting into nothing (pass_no_tx_port).
func TestXDPDevmapForgetsDeletedDevice(t *testing.T) {
	f := openTestFIB(t)
	tn := newTestNetns(t, 1, "fm9")
	idx := tn.ifindex["fm9"]
	tn.do(t, func() {
		if err := f.TxPorts.Add(idx); err != nil {
			t.Fatal(err)
		}
	})
	if err := f.Routes.Put(Route{netip.MustParsePrefix("10.9.0.0/16"), NextHop{Ifindex: idx, SrcMAC: macA, DstMAC: macAPod}}); err != nil {
		t.Fatal(err)
	}
	pkt := ip4{Src: "192.0.2.1", Dst: "10.9.0.1", Proto: ProtoTCP}.frame(tcpHdr(1, 2))
	if got, _, err := runXDP(f.Program(), pkt, loIfindex, 0); err != nil || got != xdpRedirect {
		t.Fatalf("before delete: %s, %v; want XDP_REDIRECT", actionName[got], err)
	}
	tn.do(t, func() {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkDel(l); err != nil {
			t.Fatal(err)
		}
	})
	ports, err := f.TxPorts.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 0 {
		t.Errorf("tx_ports after device delete = %v, want empty", ports)
	}
	before, _ := f.Stats.Read()
	got, out, err := runXDP(f.Program(), pkt, loIfindex, 0)
	if err != nil || got != xdpPass {
		t.Fatalf("after delete: %s, %v; want XDP_PASS", actionName[got], err)
	}
	after, _ := f.Stats.Read()
	if d := cmp.Diff(pkt, out); d != "" {
		t.Errorf("frame modified (-want +got):\n%s", d)
	}
	if d := deltaDiff(wantDelta(len(pkt), ReasonPassNoTxPort), statsDelta(before, after)); d != "" {
		t.Errorf("counter deltas (-want +got):\n%s", d)
	}
}
