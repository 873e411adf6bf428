package testpki

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
	"sync"
	"time"
)

// CA is a throwaway certificate authority with an ECDSA P-256 key (fast
// to generate, which an RSA key of 2048 bits is not). Its certificates are
// valid from an hour before NewCA until its lifetime is over.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is Cert, PEM-encoded.
	PEM []byte

	mu     sync.Mutex
	serial int64
}

// NewCA makes a self-signed CA named subject, valid for lifetime.
func NewCA(subject pkix.Name, lifetime time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}, nil
}

// Issue signs tmpl (its subject, names and extended usages) with a new
// P-256 key. It sets the serial number (unique within the CA), the
// validity (the CA's) and the key usage (digital signature).
func (ca *CA) Issue(tmpl *x509.Certificate) (der []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ca.mu.Lock()
	ca.serial++
	tmpl.SerialNumber = big.NewInt(ca.serial)
	ca.mu.Unlock()
	tmpl.NotBefore, tmpl.NotAfter = ca.Cert.NotBefore, ca.Cert.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		name := tmpl.Subject.CommonName
		if name == "" && len(tmpl.URIs) > 0 {
			name = tmpl.URIs[0].String()
		}
		return nil, nil, fmt.Errorf("certificate for %s: %w", name, err)
	}
	return der, key, nil
}

// IssuePEM is Issue with the certificate and its key (SEC 1, "EC PRIVATE
// KEY") PEM-encoded.
func (ca *CA) IssuePEM(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	der, key, err := ca.Issue(tmpl)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// SVID returns the template of a SPIFFE SVID as the fibmesh CA issues
// them: URI SAN spiffe://<trustDomain>/ns/<ns>/sa/<sa>, client and server
// auth, and dnsNames for crypto/tls's hostname check.
func SVID(trustDomain, ns, sa string, dnsNames ...string) *x509.Certificate {
	return &x509.Certificate{
		URIs:        []*url.URL{{Scheme: "spiffe", Host: trustDomain, Path: "/ns/" + ns + "/sa/" + sa}},
		DNSNames:    dnsNames,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
}
