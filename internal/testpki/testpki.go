// Package testpki issues throwaway mesh identities for tests and
// benchmarks: one ECDSA P-256 CA and SPIFFE SVIDs signed by it, as the
// fibmesh CA issues them (URI SAN spiffe://cluster.local/ns/NS/sa/SA, plus
// a DNS name for crypto/tls's hostname check).
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// MTLS returns a client and a server config that authenticate each other
// with SVIDs for service accounts "client" and "server" in namespace ns;
// the server's certificate also names serverName, which the client asks
// for. Versions and suites are the caller's to set.
func MTLS(t testing.TB, ns, serverName string) (client, server *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := func(serial int64, sa string) tls.Certificate {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		u := &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/" + ns + "/sa/" + sa}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			URIs: []*url.URL{u}, DNSNames: []string{serverName}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	client = &tls.Config{Certificates: []tls.Certificate{leaf(2, "client")}, RootCAs: pool, ServerName: serverName}
	server = &tls.Config{Certificates: []tls.Certificate{leaf(3, "server")}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	return client, server
}
