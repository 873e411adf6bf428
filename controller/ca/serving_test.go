package ca

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestServingCert(t *testing.T) {
	clk := newClock()
	c, err := New(td, WithClock(clk.Now), WithRootLifetime(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sans := append(append([]string{}, ServingNames...), "10.100.0.254")
	s, err := NewServingCert(c, sans, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range c.Bundle() {
		pool.AddCert(r)
	}
	for _, name := range []string{"fibmesh-controller.fibmesh-system.svc", "10.100.0.254"} {
		_, err := first.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := first.Leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: pool, CurrentTime: clk.Now()}); err == nil {
		t.Error("certificate verified for a name it does not carry")
	}
	if got := first.Leaf.URIs; len(got) != 1 || got[0].String() != "spiffe://cluster.local"+ControllerIdentity {
		t.Errorf("URI SANs = %v", got)
	}

	clk.Add(29 * time.Minute)
	if again, _ := s.GetCertificate(nil); again != first {
		t.Error("renewed before half-life")
	}
	clk.Add(2 * time.Minute)
	renewed, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Error("not renewed after half-life")
	}
	if _, err := c.RotateRoot(); err != nil {
		t.Fatal(err)
	}
	if rotated, _ := s.GetCertificate(nil); rotated == renewed {
		t.Error("not re-issued after the root rotated")
	}
	if _, err := NewServingCert(c, nil, time.Hour); err == nil {
		t.Error("no SANs accepted")
	}
}
