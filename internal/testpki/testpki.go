// Package testpki issues throwaway mesh identities for tests and
// benchmarks: one ECDSA P-256 CA and SPIFFE SVIDs signed by it, as the
// fibmesh CA issues them (URI SAN spiffe://cluster.local/ns/NS/sa/SA, plus
// a DNS name for crypto/tls's hostname check).
package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"
)

// MTLS returns a client and a server config that authenticate each other
// with SVIDs for service accounts "client" and "server" in namespace ns;
// the server's certificate also names serverName, which the client asks
// for. Versions and suites are the caller's to set.
func MTLS(t testing.TB, ns, serverName string) (client, server *tls.Config) {
	t.Helper()
	ca, err := NewCA(pkix.Name{CommonName: "testpki"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	leaf := func(sa string) tls.Certificate {
		der, key, err := ca.Issue(SVID("cluster.local", ns, sa, serverName))
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	client = &tls.Config{Certificates: []tls.Certificate{leaf("client")}, RootCAs: pool, ServerName: serverName}
	server = &tls.Config{Certificates: []tls.Certificate{leaf("server")}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	return client, server
}
