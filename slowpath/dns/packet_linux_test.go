package dns

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestAnswerFromQueryDestination: an answer leaves from the address the
// query was sent to, whatever the server socket is bound to. 127.0.0.2 is
// on lo but not the source the kernel would pick for a reply to 127.0.0.1.
func TestAnswerFromQueryDestination(t *testing.T) {
	for _, tc := range []struct {
		network, bind, client, to string
	}{
		{"udp", ":0", "127.0.0.1:0", "127.0.0.2"},  // dual-stack, IPv4 query
		{"udp4", ":0", "127.0.0.1:0", "127.0.0.2"}, // IPv4 socket
		{"udp", "127.0.0.2:0", "127.0.0.1:0", "127.0.0.2"},
		{"udp6", ":0", "[::1]:0", "::1"},
		{"udp", ":0", "[::1]:0", "::1"},
	} {
		t.Run(tc.network+"/"+tc.bind+"/"+tc.to, func(t *testing.T) {
			pc, err := net.ListenPacket(tc.network, tc.bind)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			rw := newPacketRW(pc)
			if _, plain := rw.(plainRW); plain {
				t.Fatalf("%s %s: plain reader, want one that knows the destination", tc.network, tc.bind)
			}
			c, err := net.ListenPacket("udp", tc.client)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.to), pc.LocalAddr().(*net.UDPAddr).AddrPort().Port())
			if _, err := c.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(to)); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(ioTimeout))
			buf := make([]byte, 16)
			_, from, dst, err := rw.read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if dst.Unmap() != to.Addr() {
				t.Errorf("query's destination %v, want %v", dst, to.Addr())
			}
			if err := rw.write([]byte("a"), from, dst); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(ioTimeout))
			_, src, err := c.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got := src.(*net.UDPAddr).AddrPort(); netip.AddrPortFrom(got.Addr().Unmap(), got.Port()) != to {
				t.Errorf("answer from %v, want from %v", got, to)
			}
		})
	}
}
