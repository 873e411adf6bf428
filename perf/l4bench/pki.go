package l4bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// certLifetime covers any run of the bench; the PKI is thrown away after.
const certLifetime = 24 * time.Hour

// WritePKI creates a throwaway CA and two SVID-like leaf certificates for
// the haproxy pair in dir, as the mesh's CA issues them: ECDSA P-256, a
// SPIFFE URI SAN (spiffe://<trust domain>/ns/<plain ns>/sa/client-plain
// and .../server-plain), client and server auth; the server's also names
// t.ServerName for haproxy's host check. It returns the files' paths:
// ca.pem, client.pem and server.pem (certificate then PKCS#8 key, mode
// 0600).
func WritePKI(dir string, t Topology) (Files, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"fibmesh bench-l4 throwaway CA"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(certLifetime),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Files{}, fmt.Errorf("bench-l4 CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: filepath.Join(dir, "ca.pem"), ClientPEM: filepath.Join(dir, "client.pem"), ServerPEM: filepath.Join(dir, "server.pem")}
	if err := os.WriteFile(f.CA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return Files{}, err
	}
	leaf := func(path string, serial int64, sa string, dns []string) error {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		id, err := url.Parse(t.SpiffeID(t.PlainNamespace, sa))
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(certLifetime),
			URIs: []*url.URL{id}, DNSNames: dns, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("certificate for %s: %w", sa, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return err
		}
		out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
		return os.WriteFile(path, out, 0o600)
	}
	if err := leaf(f.ClientPEM, 2, "client-plain", nil); err != nil {
		return Files{}, err
	}
	if err := leaf(f.ServerPEM, 3, "server-plain", []string{t.ServerName()}); err != nil {
		return Files{}, err
	}
	return f, nil
}
