package proxy

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

func TestVerifyPeer(t *testing.T) {
	mesh := newTestCA(t, "cluster.local")
	other := newTestCA(t, "other.local")
	rogue := newTestCA(t, "cluster.local") // same trust domain, not in the bundle
	p, err := New(Config{
		Snapshot:    func() *xdsconf.Snapshot { return nil },
		Certificate: nil,
		TrustBundle: func() []*x509.Certificate { return []*x509.Certificate{mesh.cert} },
		TrustDomain: mesh.td,
	})
	if err == nil {
		t.Fatalf("New without Certificate: no error (%v)", p)
	}
	p = newUnitProxy(t, mesh)
	tests := []struct {
		name   string
		certs  func() []*x509.Certificate
		reason string // "" ok
	}{
		{"good", func() []*x509.Certificate { c, _ := mesh.svid(t, "/ns/a/sa/b"); return []*x509.Certificate{c.Leaf} }, ""},
		{"none", func() []*x509.Certificate { return nil }, ReasonNoClientCert},
		{"no SPIFFE ID", func() []*x509.Certificate { c, _ := mesh.svid(t, ""); return []*x509.Certificate{c.Leaf} }, ReasonBadCertificate},
		{"other trust domain", func() []*x509.Certificate { c, _ := other.svid(t, "/ns/a/sa/b"); return []*x509.Certificate{c.Leaf} }, ReasonBadTrustDomain},
		{"not signed by the bundle", func() []*x509.Certificate { c, _ := rogue.svid(t, "/ns/a/sa/b"); return []*x509.Certificate{c.Leaf} }, ReasonBadCertificate},
		{"a CA as leaf", func() []*x509.Certificate { return []*x509.Certificate{mesh.cert} }, ReasonBadCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := p.verifyPeer(tt.certs())
			if tt.reason == "" {
				if err != nil || id.String() != "spiffe://cluster.local/ns/a/sa/b" {
					t.Fatalf("verifyPeer = %v, %v", id, err)
				}
				return
			}
			var ve *verifyError
			if !errors.As(err, &ve) || ve.reason != tt.reason {
				t.Fatalf("verifyPeer error = %v, want reason %s", err, tt.reason)
			}
		})
	}
}

// Verified chains are remembered against the bundle they verified with,
// until the first certificate expires; another bundle starts over.
func TestVerifiedChains(t *testing.T) {
	mesh := newTestCA(t, "cluster.local")
	c, _ := mesh.svid(t, "/ns/a/sa/b")
	chain := []*x509.Certificate{c.Leaf}
	roots := []*x509.Certificate{mesh.cert}
	var v verifiedChains
	now := time.Now()
	if v.ok(chain, roots, now) {
		t.Fatal("a chain never verified is ok")
	}
	v.add(chain, roots)
	if !v.ok(chain, roots, now) {
		t.Error("a verified chain is not remembered")
	}
	if v.ok(chain, roots, c.Leaf.NotAfter.Add(time.Second)) {
		t.Error("an expired chain is ok")
	}
	if v.ok(chain, []*x509.Certificate{mesh.cert}, now) {
		t.Error("a chain verified against another bundle (a rotation) is ok")
	}
	other, _ := mesh.svid(t, "/ns/a/sa/c")
	if v.ok([]*x509.Certificate{other.Leaf}, roots, now) {
		t.Error("another certificate is ok")
	}
	// verifyPeer fills and uses it with a stable bundle.
	p := newUnitProxy(t, mesh)
	if _, err := p.verifyPeer(chain); err != nil {
		t.Fatal(err)
	}
	if _, err := p.verifyPeer(chain); err != nil {
		t.Fatal(err)
	}
}
