package netnstest

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	hostA = netip.MustParseAddrPort("10.199.0.1:40000")
	hostB = netip.MustParseAddrPort("10.199.0.2:443")
)

// tcpFrame builds an Ethernet frame with an IPv4 or IPv6 TCP segment.
func tcpFrame(src, dst netip.AddrPort, seq uint32, flags uint8, payload []byte) []byte {
	tcp := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = flags
	tcp = append(tcp, payload...)
	eth := make([]byte, 14)
	var ip []byte
	if src.Addr().Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = 64, 6
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
	} else {
		binary.BigEndian.PutUint16(eth[12:], 0x86dd)
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6], ip[7] = 6, 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	}
	return cat(eth, ip, tcp)
}

func TestParseFrame(t *testing.T) {
	v6a, v6b := netip.MustParseAddrPort("[fd00::1]:1"), netip.MustParseAddrPort("[fd00::2]:2")
	padded := cat(tcpFrame(hostA, hostB, 7, tcpSYN, nil), make([]byte, 6)) // 54 -> 60 bytes
	vlan := tcpFrame(hostA, hostB, 9, 0, []byte("v"))
	vlan = cat(vlan[:12], []byte{0x81, 0x00, 0x00, 0x05}, vlan[12:])
	gso := tcpFrame(hostA, hostB, 1, 0, []byte("big"))
	binary.BigEndian.PutUint16(gso[16:], 0) // IPv4 total length 0: GSO over 64 KiB
	udp := tcpFrame(hostA, hostB, 1, 0, nil)
	udp[14+9] = 17
	frag := tcpFrame(hostA, hostB, 1, 0, nil)
	frag[14+6] = 0x20 // more fragments
	shortTCP := tcpFrame(hostA, hostB, 1, 0, nil)[:14+20+10]
	binary.BigEndian.PutUint16(shortTCP[16:], 30)
	badOff := tcpFrame(hostA, hostB, 1, 0, nil)
	badOff[14+20+12] = 15 << 4
	longIP := tcpFrame(hostA, hostB, 1, 0, nil)
	binary.BigEndian.PutUint16(longIP[16:], 1000)
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06

	tests := []struct {
		name    string
		frame   []byte
		want    segment
		wantErr string
	}{
		{name: "IPv4 data", frame: tcpFrame(hostA, hostB, 1000, 0x18, []byte("hello")), want: segment{src: hostA, dst: hostB, seq: 1000, flags: 0x18, payload: []byte("hello")}},
		{name: "IPv6 FIN", frame: tcpFrame(v6a, v6b, 5, tcpFIN, []byte("x")), want: segment{src: v6a, dst: v6b, seq: 5, flags: tcpFIN, payload: []byte("x")}},
		{name: "Ethernet padding is not payload", frame: padded, want: segment{src: hostA, dst: hostB, seq: 7, flags: tcpSYN, payload: []byte{}}},
		{name: "802.1Q tag", frame: vlan, want: segment{src: hostA, dst: hostB, seq: 9, payload: []byte("v")}},
		{name: "GSO total length 0", frame: gso, want: segment{src: hostA, dst: hostB, seq: 1, payload: []byte("big")}},
		{name: "UDP", frame: udp, wantErr: errNotTCP.Error()},
		{name: "IPv4 fragment", frame: frag, wantErr: errNotTCP.Error()},
		{name: "ARP", frame: arp, wantErr: errNotTCP.Error()},
		{name: "runt", frame: []byte{1, 2, 3}, wantErr: "no Ethernet header"},
		{name: "TCP header cut", frame: shortTCP, wantErr: "TCP header truncated"},
		{name: "TCP data offset past the end", frame: badOff, wantErr: "TCP data offset 60"},
		{name: "IPv4 length past the frame", frame: longIP, wantErr: "total length 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFrame(tt.frame)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFrame error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFrame: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(segment{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("segment (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseFrame feeds the frame parser arbitrary bytes: a capture parses
// whatever the veth carried.
func FuzzParseFrame(f *testing.F) {
	f.Add(tcpFrame(hostA, hostB, 1000, 0x18, []byte("hello")))
	f.Add(tcpFrame(netip.MustParseAddrPort("[fd00::1]:1"), netip.MustParseAddrPort("[fd00::2]:2"), 5, tcpFIN, []byte("x")))
	f.Fuzz(func(t *testing.T, frame []byte) {
		seg, err := parseFrame(frame)
		if err != nil {
			return
		}
		if len(seg.payload) > len(frame) {
			t.Fatalf("payload of %d bytes from a %d-byte frame", len(seg.payload), len(frame))
		}
		r := newReassembler(seg.src, seg.dst, 100, nil)
		r.add(seg)
		r.finish()
	})
}
