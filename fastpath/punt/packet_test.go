package punt

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/checksum"
)

// frame builds Ethernet/IPv4 + l4 bytes with a correct header checksum.
func frame(proto byte, ttl byte, l4 []byte) []byte {
	f := make([]byte, 14+20+len(l4))
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8], ip[9] = ttl, proto
	copy(ip[12:], []byte{10, 200, 1, 11})
	copy(ip[16:], []byte{10, 200, 2, 12})
	binary.BigEndian.PutUint16(ip[10:], checksum.Internet(ip))
	copy(f[34:], l4)
	return f
}

func ports(sp, dp uint16, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:], sp)
	binary.BigEndian.PutUint16(b[2:], dp)
	if n >= 20 {
		b[12] = 5 << 4
	}
	return b
}

var (
	srcIP = netip.MustParseAddr("10.200.1.11")
	dstIP = netip.MustParseAddr("10.200.2.12")
)

func TestParseFrame(t *testing.T) {
	echo := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	frag := frame(17, 64, ports(1, 2, 8))
	binary.BigEndian.PutUint16(frag[14+6:], 0x0010) // offset 16*8
	ipv6 := frame(17, 64, ports(1, 2, 8))
	binary.BigEndian.PutUint16(ipv6[12:], 0x86dd)
	badVer := frame(6, 64, ports(1, 2, 20))
	badVer[14] = 0x65
	longTot := frame(17, 64, ports(1, 2, 8))
	binary.BigEndian.PutUint16(longTot[14+2:], 200)
	for _, tc := range []struct {
		name    string
		in      []byte
		want    fib.FlowKey
		wantErr string
	}{
		{"tcp", frame(6, 64, ports(40000, 8080, 20)), fib.FlowKey{Src: srcIP, Dst: dstIP, SrcPort: 40000, DstPort: 8080, Proto: fib.ProtoTCP}, ""},
		{"udp", frame(17, 64, ports(5353, 53, 8)), fib.FlowKey{Src: srcIP, Dst: dstIP, SrcPort: 5353, DstPort: 53, Proto: fib.ProtoUDP}, ""},
		{"icmp echo keyed by id", frame(1, 64, echo), fib.FlowKey{Src: srcIP, Dst: dstIP, SrcPort: 0x1234, Proto: fib.ProtoICMP}, ""},
		{"non-first fragment has no ports", frag, fib.FlowKey{Src: srcIP, Dst: dstIP, Proto: fib.ProtoUDP}, ""},
		{"other protocol", frame(47, 64, make([]byte, 4)), fib.FlowKey{Src: srcIP, Dst: dstIP, Proto: 47}, ""},
		{"short ethernet", make([]byte, 10), fib.FlowKey{}, "shorter than an Ethernet header"},
		{"ipv6", ipv6, fib.FlowKey{}, "not an IPv4 frame"},
		{"truncated ip", frame(6, 64, nil)[:30], fib.FlowKey{}, "IPv4 header truncated"},
		{"version 6 in ipv4", badVer, fib.FlowKey{}, "version 6"},
		{"total length past frame", longTot, fib.FlowKey{}, "total length 200"},
		{"truncated tcp", frame(6, 64, ports(1, 2, 10)), fib.FlowKey{}, "TCP header truncated"},
		{"truncated udp", frame(17, 64, ports(1, 2, 6)), fib.FlowKey{}, "UDP header truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFrame(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("key (-want +got):\n%s", d)
			}
		})
	}
	if _, err := ParseFrame(ipv6); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("ipv6: %v; want ErrNotIPv4", err)
	}
}

func TestForward(t *testing.T) {
	nh := fib.NextHop{Ifindex: 3, SrcMAC: net.HardwareAddr{2, 0x66, 0x6d, 0, 1, 0}, DstMAC: net.HardwareAddr{2, 0x66, 0x6d, 0, 2, 0}}
	f := frame(17, 64, ports(1, 2, 8))
	orig := append([]byte(nil), f...)
	if err := Forward(f, nh); err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(f[0:6], []byte(nh.DstMAC)) || !cmp.Equal(f[6:12], []byte(nh.SrcMAC)) {
		t.Errorf("MACs %x %x", f[0:6], f[6:12])
	}
	if f[14+8] != 63 {
		t.Errorf("TTL %d; want 63", f[14+8])
	}
	if checksum.Internet(f[14:34]) != 0 {
		t.Errorf("IPv4 header checksum does not verify")
	}
	if !cmp.Equal(f[34:], orig[34:]) {
		t.Errorf("payload changed")
	}
	if err := Forward(frame(17, 1, ports(1, 2, 8)), nh); err == nil {
		t.Error("forwarded a TTL 1 packet")
	}
	if err := Forward(frame(17, 64, ports(1, 2, 8)), fib.NextHop{SrcMAC: net.HardwareAddr{1}}); err == nil {
		t.Error("forwarded with a bad MAC")
	}
}

func TestParseFrameAllocs(t *testing.T) {
	f := frame(6, 64, ports(40000, 8080, 20))
	if n := testing.AllocsPerRun(100, func() { ParseFrame(f) }); n != 0 {
		t.Errorf("ParseFrame allocates %v times per call; want 0", n)
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(frame(6, 64, ports(40000, 8080, 20)))
	f.Add(frame(17, 64, ports(1, 2, 8)))
	f.Add(frame(1, 64, []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}))
	f.Add([]byte{})
	nh := fib.NextHop{Ifindex: 1, SrcMAC: make(net.HardwareAddr, 6), DstMAC: make(net.HardwareAddr, 6)}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseFrame(b)
		if err != nil {
			return
		}
		if !k.Src.Is4() || !k.Dst.Is4() {
			t.Fatalf("parsed key with non-IPv4 addresses: %v", k)
		}
		c := append([]byte(nil), b...)
		if Forward(c, nh) == nil && checksum.Internet(c[14:14+int(c[14]&0xf)*4]) != 0 {
			t.Fatalf("forwarded frame's header checksum does not verify")
		}
	})
}
