package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// newUnitProxy is a Proxy for tests that serve no pod.
func newUnitProxy(t testing.TB, ca *testCA, opts ...func(*Config)) *Proxy {
	t.Helper()
	cfg := Config{
		Snapshot: func() *xdsconf.Snapshot { return nil },
		Certificate: func(ns, pod string) (*tls.Certificate, spiffeid.ID, error) {
			c, id := ca.svid(t, "/ns/"+ns+"/sa/"+pod)
			return c, id, nil
		},
		TrustBundle: func() []*x509.Certificate { return []*x509.Certificate{ca.cert} },
		TrustDomain: ca.td,
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// relayHarness is app ⇄ relay ⇄ server over loopback, the relay run by
// p for an outbound conn of a fake pod.
type relayHarness struct {
	app, server *net.TCPConn
	c           *conn
	done        chan ConnInfo
}

func startRelay(t *testing.T, p *Proxy) *relayHarness {
	t.Helper()
	app, down := tcpPair(t)
	up, server := tcpPair(t)
	ps := &podState{p: p, pod: Pod{Namespace: "ns", Name: "pod"}, conns: map[uint64]*conn{}}
	ps.ctx, ps.cancel = context.WithCancel(context.Background())
	t.Cleanup(ps.cancel)
	c := ps.newConn(slowpath.OutboundPort, down)
	if !c.setUpstream(up) {
		t.Fatal("setUpstream refused")
	}
	h := &relayHarness{app: app, server: server, c: c, done: make(chan ConnInfo, 1)}
	go func() {
		p.relay(c, tcpStream{down}, tcpStream{up})
		h.done <- c.snapshot()
	}()
	return h
}

func (h *relayHarness) wait(t *testing.T) ConnInfo {
	t.Helper()
	select {
	case i := <-h.done:
		return i
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
	}
	return ConnInfo{}
}

func TestRelayHalfClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := newUnitProxy(t, newTestCA(t, "cluster.local"))
	h := startRelay(t, p)
	req := make([]byte, 1<<20)
	resp := make([]byte, 3<<20)
	rand.Read(req)
	rand.Read(resp)
	// The app sends its request and half-closes; the server reads it to
	// EOF and only then answers: the relay must carry the FIN and keep
	// the other direction open.
	errc := make(chan error, 1)
	go func() {
		got, err := io.ReadAll(h.server)
		if err == nil && !bytes.Equal(got, req) {
			err = errors.New("server got other bytes than the app sent")
		}
		if err == nil {
			_, err = h.server.Write(resp)
		}
		h.server.CloseWrite()
		errc <- err
	}()
	if _, err := h.app.Write(req); err != nil {
		t.Fatal(err)
	}
	h.app.CloseWrite()
	got, err := io.ReadAll(h.app)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("app read %d bytes, %v; want the %d-byte response", len(got), err, len(resp))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	info := h.wait(t)
	if info.BytesOut != uint64(len(req)) || info.BytesIn != uint64(len(resp)) || info.State != StateClosed || info.Reason != "done" {
		t.Errorf("conn = out %d in %d state %s reason %q; want %d, %d, closed, done", info.BytesOut, info.BytesIn, info.State, info.Reason, len(req), len(resp))
	}
	if n := len(p.Connections()); n != 0 {
		t.Errorf("Connections() has %d rows for a proxy with no pod", n)
	}
}

func TestRelayResetPropagates(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := newUnitProxy(t, newTestCA(t, "cluster.local"))
	for _, side := range []string{"app resets", "server resets"} {
		t.Run(side, func(t *testing.T) {
			h := startRelay(t, p)
			from, to := h.app, h.server
			if side == "server resets" {
				from, to = h.server, h.app
			}
			if _, err := from.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(to, buf); err != nil {
				t.Fatal(err)
			}
			from.SetLinger(0)
			from.Close()
			to.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := to.Read(buf)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("other side read %v, want ECONNRESET", err)
			}
			if info := h.wait(t); info.Reason != "reset" {
				t.Errorf("reason %q, want reset", info.Reason)
			}
		})
	}
}

func TestRelayIdleTimeout(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := newUnitProxy(t, newTestCA(t, "cluster.local"), func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	h := startRelay(t, p)
	// Traffic one way only, for longer than the idle timeout: the quiet
	// direction must not time out while the other one flows.
	stop := time.Now().Add(600 * time.Millisecond)
	go func() {
		for time.Now().Before(stop) {
			if _, err := h.server.Write([]byte("tick")); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // pacing the traffic, not synchronisation
		}
	}()
	start := time.Now()
	n, err := io.Copy(io.Discard, h.app)
	if err != nil {
		t.Fatalf("app read: %v", err)
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("closed after %v with traffic flowing (%d bytes)", d, n)
	}
	if info := h.wait(t); info.Reason != "idle timeout" {
		t.Errorf("reason %q, want idle timeout", info.Reason)
	}
}
