package fib

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/internal/checksum"
)

// The service VIPs of the tests, over the topology of newTestTopo:
//
//	10.96.0.10 udp/53   -> 10.1.0.20:5353 (fm0), 10.1.0.7:5353 (fm1)
//	10.96.0.10 tcp/80   -> 10.2.3.4:8080 (fm1), 10.2.0.5:8080 (fm0)
//	10.96.0.11 tcp/80   -> 10.3.0.5:8080 (lo: the ingress device, XDP_TX)
//	10.96.0.12 tcp/443  -> 10.1.0.9:443 (STRICT)
//	10.96.0.13 udp/53   -> 10.1.0.30:53 (an L4 policy punts it)
//	10.96.0.14 udp/53, tcp/80: no ready backend
var (
	vipDNS     = ServiceKey{netip.MustParseAddr("10.96.0.10"), 53, ProtoUDP}
	vipWeb     = ServiceKey{netip.MustParseAddr("10.96.0.10"), 80, ProtoTCP}
	vipHairpin = ServiceKey{netip.MustParseAddr("10.96.0.11"), 80, ProtoTCP}
	vipStrict  = ServiceKey{netip.MustParseAddr("10.96.0.12"), 443, ProtoTCP}
	vipPunt    = ServiceKey{netip.MustParseAddr("10.96.0.13"), 53, ProtoUDP}
	vipEmptyU  = ServiceKey{netip.MustParseAddr("10.96.0.14"), 53, ProtoUDP}
	vipEmptyT  = ServiceKey{netip.MustParseAddr("10.96.0.14"), 80, ProtoTCP}
)

func be(s string) Backend {
	ap := netip.MustParseAddrPort(s)
	return Backend{ap.Addr(), ap.Port()}
}

// The client of the service tests: its replies route out of fm0.
const svcClient = "10.2.9.9"

// l4Sum sets the TCP or UDP checksum of the IPv4 frame computed from
// scratch (pseudo-header included), independently of the program's
// incremental updates, and returns the frame.
func l4Sum(frame []byte) []byte {
	ip := frame[14:]
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	l4 := ip[ihl:tot]
	off := 16 // TCP
	if ip[9] == byte(ProtoUDP) {
		off = 6
	}
	l4[off], l4[off+1] = 0, 0
	ph := make([]byte, 12, 12+len(l4))
	copy(ph[0:8], ip[12:20])
	ph[9] = ip[9]
	binary.BigEndian.PutUint16(ph[10:], uint16(len(l4)))
	s := checksum.Internet(append(ph, l4...))
	if s == 0 && ip[9] == byte(ProtoUDP) {
		s = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], s)
	return frame
}

func svcUDP(src string, sport uint16, dst string, dport uint16) []byte {
	return l4Sum(ip4{Src: src, Dst: dst, Proto: ProtoUDP}.frame(udpHdr(sport, dport, []byte("query"))))
}

func svcTCP(src string, sport uint16, dst string, dport uint16) []byte {
	return l4Sum(ip4{Src: src, Dst: dst, Proto: ProtoTCP}.frame(tcpHdr(sport, dport)))
}

// pick returns the backend the data path must give flow k (fib.Pick).
func pick(table []Backend, k FlowKey) Backend {
	b, _ := Pick(table, k)
	return b
}

// sportFor returns a client port whose flow to svc lands on want.
func sportFor(t *testing.T, table []Backend, svc ServiceKey, want Backend) uint16 {
	t.Helper()
	for p := uint16(40000); p < 50000; p++ {
		if pick(table, FlowKey{Src: netip.MustParseAddr(svcClient), Dst: svc.VIP, SrcPort: p, DstPort: svc.Port, Proto: svc.Proto}) == want {
			return p
		}
	}
	t.Fatalf("no client port maps %s to %s", svc, want)
	return 0
}

// icmpUnreachable is the answer to a UDP datagram for a VIP without
// backends, built by hand: ICMP type 3 code 3 from the VIP, quoting the
// datagram's IP header and first 8 bytes.
func icmpUnreachable(in []byte) []byte {
	ip := in[14:]
	quote := append([]byte(nil), ip[:28]...)
	icmp := make([]byte, 8, 36)
	icmp[0], icmp[1] = 3, 3
	icmp = append(icmp, quote...)
	binary.BigEndian.PutUint16(icmp[2:], checksum.Internet(icmp))
	out := ip4{Src: netip.AddrFrom4([4]byte(ip[16:20])).String(), Dst: netip.AddrFrom4([4]byte(ip[12:16])).String(),
		Proto: ProtoICMP, Frag: 0x4000}.frame(icmp)
	copy(out[0:6], in[6:12])
	copy(out[6:12], in[0:6])
	return out
}

// tcpReset is the RST a host without a listener sends for the segment in
// (RFC 9293 3.10.7.1), built by hand.
func tcpReset(in []byte) []byte {
	ip := in[14:]
	tcp := ip[20:]
	h := make([]byte, 20)
	copy(h[0:2], tcp[2:4])
	copy(h[2:4], tcp[0:2])
	h[12] = 5 << 4
	if tcp[13]&0x10 != 0 { // ACK: seq = its ack
		copy(h[4:8], tcp[8:12])
		h[13] = 0x04
	} else {
		n := uint32(len(ip) - 20 - int(tcp[12]>>4)*4)
		if tcp[13]&0x02 != 0 {
			n++
		}
		if tcp[13]&0x01 != 0 {
			n++
		}
		binary.BigEndian.PutUint32(h[8:12], binary.BigEndian.Uint32(tcp[4:8])+n)
		h[13] = 0x14 // RST|ACK
	}
	out := l4Sum(ip4{Src: netip.AddrFrom4([4]byte(ip[16:20])).String(), Dst: netip.AddrFrom4([4]byte(ip[12:16])).String(),
		Proto: ProtoTCP, Frag: 0x4000}.frame(h))
	copy(out[0:6], in[6:12])
	copy(out[6:12], in[0:6])
	return out
}

func withTCPFlags(frame []byte, flags byte) []byte {
	frame[14+20+13] = flags
	binary.BigEndian.PutUint32(frame[14+20+8:], 777777) // ack
	return l4Sum(frame)
}

func svcKeyOf(frame []byte) FlowKey {
	ip := frame[14:]
	return FlowKey{Src: netip.AddrFrom4([4]byte(ip[12:16])), Dst: netip.AddrFrom4([4]byte(ip[16:20])),
		SrcPort: binary.BigEndian.Uint16(ip[20:]), DstPort: binary.BigEndian.Uint16(ip[22:]), Proto: Proto(ip[9])}
}

// svcFlow is what a flow entry must hold (counters aside).
type svcFlow struct {
	Action  Action
	NATKind NATKind
	NAT     netip.AddrPort
}

func TestXDPServices(t *testing.T) {
	tp := newTestTopo(t)
	f := tp.f
	prog := f.Program()
	tables := map[ServiceKey][]Backend{
		vipDNS:     {be("10.1.0.20:5353"), be("10.1.0.7:5353"), be("10.1.0.20:5353"), be("10.1.0.7:5353"), be("10.1.0.7:5353")},
		vipWeb:     {be("10.2.3.4:8080"), be("10.2.0.5:8080"), be("10.2.3.4:8080")},
		vipHairpin: {be("10.3.0.5:8080")},
		vipStrict:  {be("10.1.0.9:443")},
		vipPunt:    {be("10.1.0.30:53")},
		vipEmptyU:  nil,
		vipEmptyT:  nil,
	}
	for k, tb := range tables {
		if err := f.Services.Put(k, tb); err != nil {
			t.Fatalf("Services.Put(%s): %v", k, err)
		}
	}
	if err := f.Policy.Put(PolicyEntry{Key: PolicyKey{netip.MustParseAddr("10.1.0.30"), 53, ProtoUDP}, Mode: ModePermissive, Punt: true}); err != nil {
		t.Fatal(err)
	}

	dnsFwd := sportFor(t, tables[vipDNS], vipDNS, be("10.1.0.7:5353")) // lands on fm1
	dnsA := sportFor(t, tables[vipDNS], vipDNS, be("10.1.0.20:5353"))  // lands on fm0
	webB := sportFor(t, tables[vipWeb], vipWeb, be("10.2.3.4:8080"))
	vip := func(k ServiceKey) string { return k.VIP.String() }
	// A client port whose slot holds the client itself (10.1.0.20 is a
	// backend of vipDNS): Pick moves it to the next slot's backend.
	selfPort := uint16(0)
	for p := uint16(40000); p < 50000 && selfPort == 0; p++ {
		k := FlowKey{Src: netip.MustParseAddr("10.1.0.20"), Dst: vipDNS.VIP, SrcPort: p, DstPort: 53, Proto: ProtoUDP}
		if tables[vipDNS][FlowHash(k)%uint32(len(tables[vipDNS]))].Addr == k.Src {
			selfPort = p
		}
	}
	if got := pick(tables[vipDNS], key(ProtoUDP, "10.1.0.20", selfPort, vip(vipDNS), 53)); got != be("10.1.0.7:5353") {
		t.Fatalf("Pick gave the client %s, want the other backend", got)
	}

	type step struct {
		name    string
		pkt     []byte
		want    uint32
		out     []byte   // the frame as it must leave
		reasons []Reason // counters besides ReasonRX
	}
	cases := []struct {
		name  string
		steps []step
		// flows the map must hold after the steps (and no other).
		flows map[FlowKey]svcFlow
		// before runs first (a table change between steps, ...).
		between func(t *testing.T)
	}{
		{
			name: "udp new flow: DNAT to the Maglev pick, entries both ways, redirect",
			steps: []step{{
				pkt:     svcUDP(svcClient, dnsFwd, vip(vipDNS), 53),
				want:    xdpRedirect,
				out:     forwarded(svcUDP(svcClient, dnsFwd, "10.1.0.7", 5353), tp.nhB.SrcMAC, tp.nhB.DstMAC),
				reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonRedirect},
			}},
			flows: map[FlowKey]svcFlow{
				key(ProtoUDP, svcClient, dnsFwd, vip(vipDNS), 53):  {ActionForward, NATDst, netip.MustParseAddrPort("10.1.0.7:5353")},
				key(ProtoUDP, "10.1.0.7", 5353, svcClient, dnsFwd): {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.10:53")},
			},
		},
		{
			name: "reply: reverse NAT to the VIP, then routed to the client",
			steps: []step{
				{
					pkt:     svcUDP(svcClient, dnsA, vip(vipDNS), 53),
					want:    xdpRedirect,
					out:     forwarded(svcUDP(svcClient, dnsA, "10.1.0.20", 5353), tp.nhA.SrcMAC, tp.nhA.DstMAC),
					reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonRedirect},
				},
				{
					name:    "reply",
					pkt:     svcUDP("10.1.0.20", 5353, svcClient, dnsA),
					want:    xdpRedirect,
					out:     forwarded(svcUDP(vip(vipDNS), 53, svcClient, dnsA), tp.nhA.SrcMAC, tp.nhA.DstMAC),
					reasons: []Reason{ReasonServiceSNAT, ReasonRedirect},
				},
			},
			flows: map[FlowKey]svcFlow{
				key(ProtoUDP, svcClient, dnsA, vip(vipDNS), 53):   {ActionForward, NATDst, netip.MustParseAddrPort("10.1.0.20:5353")},
				key(ProtoUDP, "10.1.0.20", 5353, svcClient, dnsA): {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.10:53")},
			},
		},
		{
			name: "self-hairpin: a client that is a backend is given another backend, not itself",
			steps: []step{{
				pkt:     svcUDP("10.1.0.20", selfPort, vip(vipDNS), 53),
				want:    xdpRedirect,
				out:     forwarded(svcUDP("10.1.0.20", selfPort, "10.1.0.7", 5353), tp.nhB.SrcMAC, tp.nhB.DstMAC),
				reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonRedirect},
			}},
			flows: map[FlowKey]svcFlow{
				key(ProtoUDP, "10.1.0.20", selfPort, vip(vipDNS), 53):  {ActionForward, NATDst, netip.MustParseAddrPort("10.1.0.7:5353")},
				key(ProtoUDP, "10.1.0.7", 5353, "10.1.0.20", selfPort): {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.10:53")},
			},
		},
		{
			name: "udp without a checksum: stays without one",
			steps: []step{{
				pkt: func() []byte {
					p := svcUDP(svcClient, dnsFwd, vip(vipDNS), 53)
					p[14+20+6], p[14+20+7] = 0, 0
					return p
				}(),
				want: xdpRedirect,
				out: func() []byte {
					p := forwarded(svcUDP(svcClient, dnsFwd, "10.1.0.7", 5353), tp.nhB.SrcMAC, tp.nhB.DstMAC)
					p[14+20+6], p[14+20+7] = 0, 0
					return p
				}(),
				reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonRedirect},
			}},
			flows: map[FlowKey]svcFlow{
				key(ProtoUDP, svcClient, dnsFwd, vip(vipDNS), 53):  {ActionForward, NATDst, netip.MustParseAddrPort("10.1.0.7:5353")},
				key(ProtoUDP, "10.1.0.7", 5353, svcClient, dnsFwd): {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.10:53")},
			},
		},
		{
			name: "tcp: DNAT with the TCP checksum patched; affinity survives a new table",
			steps: []step{
				{
					pkt:     svcTCP(svcClient, webB, vip(vipWeb), 80),
					want:    xdpRedirect,
					out:     forwarded(svcTCP(svcClient, webB, "10.2.3.4", 8080), tp.nhB.SrcMAC, tp.nhB.DstMAC),
					reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonRedirect},
				},
				{
					name:    "after the table changed: same backend, no new pick",
					pkt:     svcTCP(svcClient, webB, vip(vipWeb), 80),
					want:    xdpRedirect,
					out:     forwarded(svcTCP(svcClient, webB, "10.2.3.4", 8080), tp.nhB.SrcMAC, tp.nhB.DstMAC),
					reasons: []Reason{ReasonServiceDNAT, ReasonRedirect},
				},
			},
			between: func(t *testing.T) {
				if err := f.Services.Put(vipWeb, []Backend{be("10.2.0.5:8080")}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Services.Put(vipWeb, tables[vipWeb]) })
			},
			flows: map[FlowKey]svcFlow{
				key(ProtoTCP, svcClient, webB, vip(vipWeb), 80):  {ActionForward, NATDst, netip.MustParseAddrPort("10.2.3.4:8080")},
				key(ProtoTCP, "10.2.3.4", 8080, svcClient, webB): {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.10:80")},
			},
		},
		{
			name: "hairpin: a local backend behind the ingress device goes back out of it",
			steps: []step{{
				pkt:     svcTCP(svcClient, 41000, vip(vipHairpin), 80),
				want:    xdpTX,
				out:     forwarded(svcTCP(svcClient, 41000, "10.3.0.5", 8080), tp.nhLo.SrcMAC, tp.nhLo.DstMAC),
				reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonTX},
			}},
			flows: map[FlowKey]svcFlow{
				key(ProtoTCP, svcClient, 41000, vip(vipHairpin), 80): {ActionForward, NATDst, netip.MustParseAddrPort("10.3.0.5:8080")},
				key(ProtoTCP, "10.3.0.5", 8080, svcClient, 41000):    {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.11:80")},
			},
		},
		{
			name: "a STRICT backend port: plaintext through the VIP is dropped after DNAT",
			steps: []step{{
				pkt:     svcTCP(svcClient, 41001, vip(vipStrict), 443),
				want:    xdpDrop,
				reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonDropStrict},
			}},
			flows: map[FlowKey]svcFlow{
				key(ProtoTCP, svcClient, 41001, vip(vipStrict), 443): {ActionForward, NATDst, netip.MustParseAddrPort("10.1.0.9:443")},
				key(ProtoTCP, "10.1.0.9", 443, svcClient, 41001):     {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.12:443")},
			},
		},
		{
			name: "an L4 policy on the backend port: the way out starts as punt (no agent here: dropped, counted)",
			steps: []step{{
				pkt:     svcUDP(svcClient, 41002, vip(vipPunt), 53),
				want:    xdpDrop,
				reasons: []Reason{ReasonServiceNewFlow, ReasonServiceDNAT, ReasonDropPuntNoSocket},
			}},
			flows: map[FlowKey]svcFlow{
				key(ProtoUDP, svcClient, 41002, vip(vipPunt), 53): {ActionPunt, NATDst, netip.MustParseAddrPort("10.1.0.30:53")},
				key(ProtoUDP, "10.1.0.30", 53, svcClient, 41002):  {ActionForward, NATSrc, netip.MustParseAddrPort("10.96.0.13:53")},
			},
		},
		{
			name: "no backend, udp: ICMP port unreachable from the VIP, back out",
			steps: []step{{
				pkt:     svcUDP(svcClient, 41003, vip(vipEmptyU), 53),
				want:    xdpTX,
				out:     icmpUnreachable(svcUDP(svcClient, 41003, vip(vipEmptyU), 53)),
				reasons: []Reason{ReasonServiceNoBackend},
			}},
		},
		{
			name: "no backend, tcp SYN: RST|ACK acknowledging it",
			steps: []step{{
				pkt:     svcTCP(svcClient, 41004, vip(vipEmptyT), 80),
				want:    xdpTX,
				out:     tcpReset(svcTCP(svcClient, 41004, vip(vipEmptyT), 80)),
				reasons: []Reason{ReasonServiceNoBackend},
			}},
		},
		{
			name: "no backend, tcp ACK with data: RST with its ack as seq",
			steps: []step{{
				pkt:     withTCPFlags(svcTCP(svcClient, 41005, vip(vipEmptyT), 80), 0x10),
				want:    xdpTX,
				out:     tcpReset(withTCPFlags(svcTCP(svcClient, 41005, vip(vipEmptyT), 80), 0x10)),
				reasons: []Reason{ReasonServiceNoBackend},
			}},
		},
		{
			name: "no backend, tcp RST: never answered",
			steps: []step{{
				pkt:     withTCPFlags(svcTCP(svcClient, 41006, vip(vipEmptyT), 80), 0x04),
				want:    xdpDrop,
				reasons: []Reason{ReasonDropServiceNoBackend},
			}},
		},
		{
			name: "the VIP on a port that is no service: routed as it is (no route: pass)",
			steps: []step{{
				pkt:     svcUDP(svcClient, 41007, vip(vipDNS), 54),
				want:    xdpPass,
				out:     svcUDP(svcClient, 41007, vip(vipDNS), 54),
				reasons: []Reason{ReasonPassRouteMiss},
			}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { clearFlows(t, f) })
			for i, st := range tc.steps {
				if i == 1 && tc.between != nil {
					tc.between(t)
				}
				before, err := f.Stats.Read()
				if err != nil {
					t.Fatal(err)
				}
				got, out, err := runXDP(prog, st.pkt, loIfindex, 0)
				if err != nil {
					t.Fatalf("step %d %s: Run: %v", i, st.name, err)
				}
				after, err := f.Stats.Read()
				if err != nil {
					t.Fatal(err)
				}
				if got != st.want {
					t.Errorf("step %d %s: action = %s, want %s", i, st.name, actionName[got], actionName[st.want])
				}
				if st.out != nil {
					if d := cmp.Diff(st.out, out); d != "" {
						t.Errorf("step %d %s: frame (-want +got):\n%s", i, st.name, d)
					}
				}
				if d := deltaDiff(wantDelta(len(st.pkt), st.reasons...), statsDelta(before, after)); d != "" {
					t.Errorf("step %d %s: counters (-want +got):\n%s", i, st.name, d)
				}
			}
			all, err := f.Flows.List()
			if err != nil {
				t.Fatal(err)
			}
			got := map[FlowKey]svcFlow{}
			for _, e := range all {
				got[e.Key] = svcFlow{e.Flow.Action, e.Flow.NATKind, e.Flow.NAT}
			}
			if tc.flows == nil {
				tc.flows = map[FlowKey]svcFlow{}
			}
			if d := cmp.Diff(tc.flows, got, cmpNetip); d != "" {
				t.Errorf("flow entries (-want +got):\n%s", d)
			}
		})
	}
}

func clearFlows(t *testing.T, f *FIB) {
	t.Helper()
	all, err := f.Flows.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if err := f.Flows.Delete(e.Key); err != nil {
			t.Fatal(err)
		}
	}
}

// TestXDPServiceSpread sends 2,000 new UDP flows to a VIP with a weighted
// table: each lands on exactly the backend FlowHash predicts (the Go
// mirror of the program's hash), so each backend's share is its share
// of the table.
func TestXDPServiceSpread(t *testing.T) {
	tp := newTestTopo(t)
	f := tp.f
	svc := ServiceKey{netip.MustParseAddr("10.96.0.40"), 9000, ProtoUDP}
	// Weights 1:2:3 over a 101-slot table.
	var table []Backend
	for i := range 101 {
		switch {
		case i%6 == 0:
			table = append(table, be("10.1.0.41:9000"))
		case i%6 <= 2:
			table = append(table, be("10.1.0.42:9000"))
		default:
			table = append(table, be("10.1.0.43:9000"))
		}
	}
	if err := f.Services.Put(svc, table); err != nil {
		t.Fatal(err)
	}
	held, ok, err := f.Services.Get(svc)
	if err != nil || !ok {
		t.Fatalf("Services.Get = %v, %v", ok, err)
	}
	if d := cmp.Diff(table, held, cmpNetip); d != "" {
		t.Fatalf("table read back (-put +got):\n%s", d)
	}
	counts := map[Backend]int{}
	for i := range 2000 {
		src := fmt.Sprintf("10.2.%d.%d", 10+i/250, 1+i%250)
		k := FlowKey{Src: netip.MustParseAddr(src), Dst: svc.VIP, SrcPort: uint16(30000 + i), DstPort: svc.Port, Proto: ProtoUDP}
		want := pick(table, k)
		act, out, err := runXDP(f.Program(), svcUDP(src, k.SrcPort, svc.VIP.String(), svc.Port), loIfindex, 0)
		if err != nil {
			t.Fatal(err)
		}
		if act != xdpRedirect {
			t.Fatalf("flow %s: action %s", k, actionName[act])
		}
		if gotTo := svcKeyOf(out); gotTo.Dst != want.Addr || gotTo.DstPort != want.Port {
			t.Fatalf("flow %s went to %s:%d, FlowHash says %s", k, gotTo.Dst, gotTo.DstPort, want)
		}
		counts[want]++
	}
	t.Logf("2000 flows over table shares 17/34/50 of 101: %v", counts)
}

// l4SumValid reports whether frame's TCP or UDP checksum verifies; ok is
// false when there is none to check (not TCP/UDP, truncated, a fragment,
// UDP without a checksum).
func l4SumValid(frame []byte) (valid, ok bool) {
	if len(frame) < 34 || binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv4 {
		return false, false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ihl < 20 || tot < ihl+8 || tot > len(ip) || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return false, false
	}
	l4 := ip[ihl:tot]
	switch Proto(ip[9]) {
	case ProtoTCP:
		if len(l4) < 20 {
			return false, false
		}
	case ProtoUDP:
		if binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return false, false
		}
	default:
		return false, false
	}
	ph := make([]byte, 12, 12+len(l4))
	copy(ph[0:8], ip[12:20])
	ph[9] = ip[9]
	binary.BigEndian.PutUint16(ph[10:], uint16(len(l4)))
	return checksum.Internet(append(ph, l4...)) == 0, true
}

// FuzzServices runs arbitrary frames through a FIB with the service VIPs
// of TestXDPServices and checks what holds for any input: the run
// succeeds with PASS, DROP, TX or REDIRECT; a frame the program rewrote
// (NAT, or an ICMP/RST answer) keeps a valid IPv4 header checksum and a
// valid TCP/UDP checksum where the input's were valid (answers always
// have valid ones); RX counts once.
func FuzzServices(f *testing.F) {
	tp := newTestTopo(f)
	fib := tp.f
	for k, tb := range map[ServiceKey][]Backend{
		vipDNS: {be("10.1.0.20:5353"), be("10.1.0.7:5353")}, vipWeb: {be("10.2.3.4:8080")},
		vipHairpin: {be("10.3.0.5:8080")}, vipEmptyU: nil, vipEmptyT: nil,
	} {
		if err := fib.Services.Put(k, tb); err != nil {
			f.Fatal(err)
		}
	}
	for _, seed := range [][]byte{
		svcUDP(svcClient, 40000, "10.96.0.10", 53), svcTCP(svcClient, 40001, "10.96.0.10", 80),
		svcUDP("10.1.0.20", 5353, svcClient, 40000), svcTCP(svcClient, 40002, "10.96.0.14", 80),
		svcUDP(svcClient, 40003, "10.96.0.14", 53), withTCPFlags(svcTCP(svcClient, 40004, "10.96.0.14", 80), 0x10),
	} {
		f.Add(seed)
	}
	prog := fib.Program()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < 14 || len(pkt) > maxFuzzFrame {
			return
		}
		before, err := fib.Stats.Read()
		if err != nil {
			t.Fatal(err)
		}
		act, out, err := runXDP(prog, pkt, loIfindex, 0)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		after, err := fib.Stats.Read()
		if err != nil {
			t.Fatal(err)
		}
		if act != xdpPass && act != xdpDrop && act != xdpTX && act != xdpRedirect {
			t.Fatalf("action %d (%s)", act, actionName[act])
		}
		if act == xdpDrop && !bytes.Equal(out, pkt) {
			// A dropped frame is not seen again; its bytes do not
			// matter, but the program must not have answered it.
			if d := statsDelta(before, after); d[ReasonServiceNoBackend].Packets != 0 {
				t.Fatalf("dropped after counting an answer")
			}
		}
		if act != xdpDrop && !bytes.Equal(out, pkt) {
			if len(out) >= 34 {
				oip := out[14:]
				ihl := int(oip[0]&0xf) * 4
				inValid := len(pkt) >= 34 && checksum.IPv4Header(pkt[14:14+int(pkt[14]&0xf)*4]) == binary.BigEndian.Uint16(pkt[24:26])
				if inValid && len(oip) >= ihl && checksum.IPv4Header(oip[:ihl]) != binary.BigEndian.Uint16(oip[10:12]) {
					t.Fatalf("rewritten frame's IPv4 checksum is wrong:\n in %x\nout %x", pkt, out)
				}
			}
			inOK, inHas := l4SumValid(pkt)
			outOK, outHas := l4SumValid(out)
			if inHas && inOK && outHas && !outOK {
				t.Fatalf("rewritten frame's L4 checksum is wrong:\n in %x\nout %x", pkt, out)
			}
		}
		if d := statsDelta(before, after); d[ReasonRX].Packets != 1 {
			t.Fatalf("rx rose by %d", d[ReasonRX].Packets)
		}
		if n, err := fib.Flows.List(); err == nil && len(n) > 3000 {
			clearFlows(t, fib)
		}
	})
}
