package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestIssue(t *testing.T) {
	clk := newClock()
	c, err := New(td, WithClock(clk.Now), WithRootLifetime(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	const id = "spiffe://cluster.local/ns/production/sa/reviews"
	tests := []struct {
		name         string
		ttl          time.Duration
		wantNotAfter time.Time
	}{
		{"default lifetime", 0, now.Add(DefaultTTL)},
		{"asked lifetime", time.Hour, now.Add(time.Hour)},
		{"capped at the maximum", 365 * 24 * time.Hour, now.Add(DefaultMaxTTL)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := c.Issue(plainCSR(t), id, tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if len(iss.Chain) != 1 {
				t.Fatalf("chain has %d certificates, want the leaf only", len(iss.Chain))
			}
			leaf := iss.Chain[0]
			got := struct {
				URIs                []string
				DNS, Email          []string
				IPs                 []net.IP
				KeyUsage            x509.KeyUsage
				ExtKeyUsage         []x509.ExtKeyUsage
				IsCA                bool
				NotBefore, NotAfter time.Time
				SerialBits          bool
			}{
				URIs: urls(leaf.URIs), DNS: leaf.DNSNames, Email: leaf.EmailAddresses, IPs: leaf.IPAddresses,
				KeyUsage: leaf.KeyUsage, ExtKeyUsage: leaf.ExtKeyUsage, IsCA: leaf.IsCA,
				NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
				SerialBits: leaf.SerialNumber.BitLen() > 64 && leaf.SerialNumber.BitLen() <= 128,
			}
			want := got
			want.URIs = []string{id}
			want.DNS, want.Email, want.IPs = nil, nil, nil
			want.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
			want.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
			want.IsCA = false
			want.NotBefore, want.NotAfter = now.Add(-ClockSkew), tt.wantNotAfter
			want.SerialBits = true
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("leaf (-want +got):\n%s", d)
			}
			gotID, err := verify(iss.Chain, iss.Roots, now)
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if gotID.String() != id {
				t.Errorf("verified ID %s, want %s", gotID, id)
			}
		})
	}
}

func urls(us []*url.URL) []string {
	var s []string
	for _, u := range us {
		s = append(s, u.String())
	}
	return s
}

func TestIssueCappedAtRoot(t *testing.T) {
	clk := newClock()
	c, err := New(td, WithClock(clk.Now), WithRootLifetime(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(40 * time.Hour) // 8h left on the root
	iss, err := c.Issue(plainCSR(t), "spiffe://cluster.local/ns/a/sa/b", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := iss.Chain[0].NotAfter, c.Root().NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter %s, want the root's %s", got, want)
	}
	clk.Add(9 * time.Hour)
	if _, err := c.Issue(plainCSR(t), "spiffe://cluster.local/ns/a/sa/b", 0); !errors.Is(err, ErrRootExpired) {
		t.Errorf("after the root expired: %v, want ErrRootExpired", err)
	}
}

func TestIssueRefuses(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	badSig := csrDER(t, &x509.CertificateRequest{}, key)
	badSig[len(badSig)-3] ^= 0xff
	tests := []struct {
		name    string
		csr     *x509.CertificateRequest
		der     []byte // parsed through CheckCSR when set
		id      string
		wantErr error
		wantMsg string
	}{
		{name: "DNS SAN", csr: parseCSR(t, csrDER(t, &x509.CertificateRequest{DNSNames: []string{"evil.example"}}, key)), id: "spiffe://cluster.local/ns/a/sa/b", wantErr: ErrBadCSR, wantMsg: "DNS:evil.example"},
		{name: "URI SAN", csr: parseCSR(t, csrDER(t, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: td, Path: "/ns/kube-system/sa/admin"}}}, key)), id: "spiffe://cluster.local/ns/a/sa/b", wantErr: ErrBadCSR, wantMsg: "URI:spiffe://cluster.local/ns/kube-system/sa/admin"},
		{name: "IP SAN", csr: parseCSR(t, csrDER(t, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, key)), id: "spiffe://cluster.local/ns/a/sa/b", wantErr: ErrBadCSR},
		{name: "bad signature", der: badSig, id: "spiffe://cluster.local/ns/a/sa/b", wantErr: ErrBadCSR},
		{name: "not DER", der: []byte("-----BEGIN CERTIFICATE REQUEST-----"), id: "spiffe://cluster.local/ns/a/sa/b", wantErr: ErrBadCSR, wantMsg: "DER"},
		{name: "other trust domain", csr: plainCSR(t), id: "spiffe://example.org/ns/a/sa/b", wantErr: ErrBadIdentity},
		{name: "no path", csr: plainCSR(t), id: "spiffe://cluster.local", wantErr: ErrBadIdentity},
		{name: "not SPIFFE", csr: plainCSR(t), id: "https://cluster.local/ns/a", wantErr: ErrBadIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := tt.csr
			var err error
			if tt.der != nil {
				csr, err = CheckCSR(tt.der)
			}
			if err == nil {
				_, err = c.Issue(csr, tt.id, 0)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestExpiredSVIDFailsVerification(t *testing.T) {
	clk := newClock()
	c, err := New(td, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := c.Issue(plainCSR(t), "spiffe://cluster.local/ns/a/sa/b", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := iss.Chain[0]
	for _, tt := range []struct {
		name string
		at   time.Time
		ok   bool
	}{
		{"just issued", clk.Now(), true},
		{"a little clock skew", clk.Now().Add(-30 * time.Second), true},
		{"last second", leaf.NotAfter, true},
		{"past NotAfter", leaf.NotAfter.Add(time.Second), false},
		{"before NotBefore", leaf.NotBefore.Add(-time.Second), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verify(iss.Chain, iss.Roots, tt.at)
			if (err == nil) != tt.ok {
				t.Errorf("verify at %s: %v, want ok=%v", tt.at, err, tt.ok)
			}
			// The same with the standard library's VerifyOptions.
			_, err = leaf.Verify(x509.VerifyOptions{Roots: pool(iss.Roots), CurrentTime: tt.at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if (err == nil) != tt.ok {
				t.Errorf("x509 verify at %s: %v, want ok=%v", tt.at, err, tt.ok)
			}
		})
	}
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestRotation(t *testing.T) {
	clk := newClock()
	c, err := New(td, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	var bundles [][]*x509.Certificate
	cancel := c.OnBundleChange(func(b []*x509.Certificate) { bundles = append(bundles, b) })
	defer cancel()

	const id = "spiffe://cluster.local/ns/a/sa/b"
	old := c.Root()
	oldSVID, err := c.Issue(plainCSR(t), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	newRoot, err := c.RotateRoot()
	if err != nil {
		t.Fatal(err)
	}
	if newRoot.Equal(old) || !c.Root().Equal(newRoot) {
		t.Fatal("RotateRoot did not install a new signing root")
	}
	if got := c.Bundle(); !slices.EqualFunc(got, []*x509.Certificate{newRoot, old}, (*x509.Certificate).Equal) {
		t.Fatalf("bundle after rotation has %d roots, want new then old", len(got))
	}
	newSVID, err := c.Issue(plainCSR(t), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	// New SVIDs chain to the new root only.
	if _, err := verify(newSVID.Chain, []*x509.Certificate{newRoot}, now); err != nil {
		t.Errorf("new SVID against the new root: %v", err)
	}
	if _, err := verify(newSVID.Chain, []*x509.Certificate{old}, now); err == nil {
		t.Error("new SVID verifies against the old root")
	}
	// Overlap: the old SVID still verifies against the bundle.
	if _, err := verify(oldSVID.Chain, c.Bundle(), now); err != nil {
		t.Errorf("old SVID against the overlapping bundle: %v", err)
	}
	if err := c.Retire(newRoot); !errors.Is(err, ErrSigningRoot) {
		t.Errorf("Retire(signing root): %v, want ErrSigningRoot", err)
	}
	if err := c.Retire(old); err != nil {
		t.Fatal(err)
	}
	if err := c.Retire(old); !errors.Is(err, ErrNotInBundle) {
		t.Errorf("Retire twice: %v, want ErrNotInBundle", err)
	}
	if _, err := verify(oldSVID.Chain, c.Bundle(), now); err == nil {
		t.Error("old SVID still verifies after its root was retired")
	}
	if _, err := verify(newSVID.Chain, c.Bundle(), now); err != nil {
		t.Errorf("new SVID after retiring the old root: %v", err)
	}

	want := [][]*x509.Certificate{{newRoot, old}, {newRoot}}
	if !slices.EqualFunc(bundles, want, func(a, b []*x509.Certificate) bool { return slices.EqualFunc(a, b, (*x509.Certificate).Equal) }) {
		t.Errorf("OnBundleChange saw %d bundles, want 2: [new old], [new]", len(bundles))
	}
	cancel()
	if _, err := c.RotateRoot(); err != nil {
		t.Fatal(err)
	}
	if len(bundles) != 2 {
		t.Error("OnBundleChange called after cancel")
	}
}

func TestRotateChecksRoot(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	other, otherKey, err := NewRoot("example.org", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	good, goodKey, err := NewRoot(td, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	iss, err := c.Issue(plainCSR(t), "spiffe://cluster.local/ns/a/sa/b", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cert *x509.Certificate
		key  crypto.Signer
		want string
	}{
		{"other trust domain", other, otherKey, `for trust domain "example.org"`},
		{"key mismatch", good, otherKey, "does not match"},
		{"leaf, not CA", iss.Chain[0], goodKey, "not a CA"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Rotate(tt.cert, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Rotate: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}
