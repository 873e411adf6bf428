package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"
	"time"
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

// TestCAIssue: leaves chain to the CA, get distinct serials, and carry
// the SVID's ID and names.
func TestCAIssue(t *testing.T) {
	ca, err := NewCA(pkix.Name{CommonName: "t"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	serials := map[string]bool{}
	for _, sa := range []string{"a", "b"} {
		der, _, err := ca.Issue(SVID("td.test", "ns1", sa, "x.test"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "x.test", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: %v", sa, err)
		}
		if got, want := c.URIs[0].String(), "spiffe://td.test/ns/ns1/sa/"+sa; got != want {
			t.Errorf("URI %s, want %s", got, want)
		}
		serials[c.SerialNumber.String()] = true
	}
	if len(serials) != 2 {
		t.Errorf("serials %v, want two distinct", serials)
	}
}
