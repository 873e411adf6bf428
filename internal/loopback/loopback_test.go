package loopback

import (
	"io"
	"net"
	"strings"
	"testing"
)

func TestTCPPair(t *testing.T) {
	c, s, err := TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer s.Close()
	if c.LocalAddr().String() != s.RemoteAddr().String() || c.RemoteAddr().String() != s.LocalAddr().String() {
		t.Errorf("ends do not face each other: %s->%s, %s->%s", c.LocalAddr(), c.RemoteAddr(), s.LocalAddr(), s.RemoteAddr())
	}
	for _, dir := range []struct {
		name     string
		from, to *net.TCPConn
	}{{"client to server", c, s}, {"server to client", s, c}} {
		if _, err := dir.from.Write([]byte("ping")); err != nil {
			t.Fatalf("%s: write: %v", dir.name, err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(dir.to, got); err != nil || string(got) != "ping" {
			t.Errorf("%s: read %q, %v", dir.name, got, err)
		}
	}
}

func TestPairReusesListener(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 3 {
		c, s, err := Pair(ln)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		s.Close()
	}
}

func TestPairClosedListener(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, _, err := Pair(ln); err == nil || !strings.Contains(err.Error(), "over loopback") {
		t.Fatalf("Pair over a closed listener = %v, want an error saying what failed over loopback", err)
	}
}
