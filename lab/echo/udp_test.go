package echo

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"
)

func TestServeUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	info := Info{Service: "dns", Pod: "dns-1", Namespace: "kube-system", Node: "node1"}
	go func() { done <- ServeUDP(ctx, pc, info) }()

	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, payload := range [][]byte{[]byte("flow 1"), bytes.Repeat([]byte{0xab}, 2000)} {
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 4096)
		n, err := c.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		if n > 1472 {
			t.Errorf("reply of %d bytes: more than one 1500-byte frame", n)
		}
		var rep UDPReply
		if err := json.Unmarshal(b[:n], &rep); err != nil {
			t.Fatalf("reply %q: %v", b[:n], err)
		}
		want := payload[:min(len(payload), MaxUDPEcho)]
		if rep.Info != info || rep.Peer != c.LocalAddr().String() || !bytes.Equal(rep.Data, want) || rep.Bytes != len(payload) {
			t.Errorf("reply %+v, want %+v from %s with %d bytes of data, %d received", rep, info, c.LocalAddr(), len(want), len(payload))
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeUDP after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDP did not return after cancel")
	}
}
