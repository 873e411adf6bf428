package testpki

import (
	"crypto/tls"
	"net"
	"testing"
)

// TestMTLS: the two configs complete a mutual handshake, and each side
// sees the other's SPIFFE ID.
func TestMTLS(t *testing.T) {
	ccfg, scfg := MTLS(t, "default", "svc.test")
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	s := tls.Server(b, scfg)
	go func() { errc <- s.Handshake() }()
	c := tls.Client(a, ccfg)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0].URIs[0].String(); got != "spiffe://cluster.local/ns/default/sa/server" {
		t.Errorf("server ID %s", got)
	}
	if got := s.ConnectionState().PeerCertificates[0].URIs[0].String(); got != "spiffe://cluster.local/ns/default/sa/client" {
		t.Errorf("client ID %s", got)
	}
}
