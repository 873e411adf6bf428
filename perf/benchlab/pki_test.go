package benchlab

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

func TestWritePKI(t *testing.T) {
	spec := PKISpec{TrustDomain: "cluster.local", Namespace: "bench-plain", ClientSA: "client-plain", ServerSA: "server-plain", ServerDNS: "server-plain.bench-plain.svc"}
	f, err := WritePKI(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	other, err := WritePKI(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, id, dns string
		usage         x509.ExtKeyUsage
	}{
		{f.ClientPEM, "spiffe://cluster.local/ns/bench-plain/sa/client-plain", "", x509.ExtKeyUsageClientAuth},
		{f.ServerPEM, "spiffe://cluster.local/ns/bench-plain/sa/server-plain", spec.ServerDNS, x509.ExtKeyUsageServerAuth},
	} {
		c, err := tls.LoadX509KeyPair(tc.path, tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		leaf := c.Leaf
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tc.id {
			t.Errorf("%s: URI SANs %v, want %s", tc.path, leaf.URIs, tc.id)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.dns, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Errorf("%s does not verify against its CA: %v", tc.path, err)
		}
		otherPEM, _ := os.ReadFile(other.CA)
		otherRoots := x509.NewCertPool()
		otherRoots.AppendCertsFromPEM(otherPEM)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: otherRoots, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err == nil {
			t.Errorf("%s verifies against another PKI's CA", tc.path)
		}
		if st, _ := os.Stat(tc.path); st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 (it holds the key)", tc.path, st.Mode().Perm())
		}
	}
}
