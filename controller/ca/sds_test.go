package ca

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func TestBundleSecret(t *testing.T) {
	clk := newClock()
	c, err := New(td, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RotateRoot(); err != nil {
		t.Fatal(err)
	}
	roots := c.Bundle()
	s := BundleSecret("ROOTCA", roots)
	if err := s.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll: %v", err)
	}
	if s.GetName() != "ROOTCA" {
		t.Errorf("name %q", s.GetName())
	}
	data := s.GetValidationContext().GetTrustedCa().GetInlineBytes()
	var got []*x509.Certificate
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, cert)
	}
	if len(got) != 2 || !got[0].Equal(roots[0]) || !got[1].Equal(roots[1]) {
		t.Errorf("trusted_ca holds %d roots, want the bundle's 2 in order", len(got))
	}
}

func TestCertificateSecret(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	iss, err := c.Issue(parseCSR(t, csrDER(t, &x509.CertificateRequest{}, key)), "spiffe://cluster.local/ns/a/sa/b", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := CertificateSecret("default", iss.Chain, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll: %v", err)
	}
	if len(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()) == 0 || len(s.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) == 0 {
		t.Error("empty chain or key")
	}
}
