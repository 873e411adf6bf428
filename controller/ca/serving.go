package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"
)

// DefaultServingTTL is the lifetime of the controller's serving
// certificate; ServingCert renews it at half-life.
const DefaultServingTTL = 24 * time.Hour

// ServingNames are the DNS names agents in a cluster use for the
// controller: its Service fibmesh-controller in fibmesh-system.
var ServingNames = []string{
	"fibmesh-controller",
	"fibmesh-controller.fibmesh-system",
	"fibmesh-controller.fibmesh-system.svc",
	"fibmesh-controller.fibmesh-system.svc.cluster.local",
}

// ControllerIdentity is the path of the controller's SPIFFE ID, which its
// serving certificate carries as its URI SAN besides the DNS and IP SANs.
const ControllerIdentity = "/ns/fibmesh-system/sa/fibmesh-controller"

// IssueServing signs a TLS server certificate for the controller itself:
// pub's key, the DNS names and IP addresses in sans (each entry is an IP
// if it parses as one), the controller's SPIFFE ID, ExtKeyUsage
// ServerAuth. It lives ttl (capped like Issue's).
func (c *CA) IssueServing(pub crypto.PublicKey, sans []string, ttl time.Duration) (*Issued, error) {
	if len(sans) == 0 {
		return nil, errors.New("ca: a serving certificate needs at least one DNS name or IP")
	}
	if ttl <= 0 || ttl > c.cfg.maxTTL {
		ttl = min(DefaultServingTTL, c.cfg.maxTTL)
	}
	tmpl := &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{{Scheme: "spiffe", Host: c.td.Name(), Path: ControllerIdentity}},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	return c.sign(tmpl, pub, ttl, fmt.Sprintf("serving certificate for %v", sans))
}

// ServingCert is the controller's TLS serving certificate, issued by its
// own CA and renewed (with a fresh key) once half its lifetime has
// passed, or when the CA's signing root changed. Use GetCertificate in a
// tls.Config.
type ServingCert struct {
	ca   *CA
	sans []string
	ttl  time.Duration

	mu     sync.Mutex
	cert   *tls.Certificate
	renew  time.Time
	signer *x509.Certificate
}

// NewServingCert issues the first certificate for sans at once, so a bad
// configuration fails at start-up rather than at the first handshake.
func NewServingCert(c *CA, sans []string, ttl time.Duration) (*ServingCert, error) {
	s := &ServingCert{ca: c, sans: sans, ttl: ttl}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.get() }

func (s *ServingCert) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.ca.cfg.now()
	s.ca.mu.Lock()
	signer := s.ca.signer
	s.ca.mu.Unlock()
	if s.cert != nil && now.Before(s.renew) && signer == s.signer {
		return s.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	is, err := s.ca.IssueServing(key.Public(), s.sans, s.ttl)
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) { // keep serving the old one until it expires
			return s.cert, nil
		}
		return nil, err
	}
	leaf := is.Chain[0]
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range is.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.cert, s.signer = tc, signer
	s.renew = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return tc, nil
}
