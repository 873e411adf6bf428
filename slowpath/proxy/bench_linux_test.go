package proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkTunnelStream is the throughput of one stream through both
// halves of the mesh: app → outbound → mTLS tunnel → inbound → app (the
// echo server, so bytes cross twice each way).
func BenchmarkTunnelStream(b *testing.B) {
	l := newLabB(b)
	c := dialMaybe(b, l.pair.A, l.pair.A.AddrPort(15001))
	if c == nil {
		b.Fatal("reset")
	}
	buf := make([]byte, 256<<10)
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, c, int64(b.N)*int64(len(buf)))
		done <- err
	}()
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTunnelConnect is connections per second: each one a new
// tunnel (TCP, TLS 1.3 handshake, PROXY header, app connect), one byte
// echoed, closed.
func BenchmarkTunnelConnect(b *testing.B) {
	l := newLabB(b)
	one := []byte{1}
	for range b.N {
		var c net.Conn
		err := l.pair.A.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", l.pair.A.AddrPort(15001).String(), 10*time.Second)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		c.Write(one)
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
