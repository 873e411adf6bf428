package benchlab

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fibmesh/fibmesh/internal/testpki"
)

// certLifetime covers any run of a bench; the PKI is thrown away after.
const certLifetime = 24 * time.Hour

// PKISpec names the identities of a throwaway PKI for a pair of sidecar
// proxies outside the mesh (the benches' haproxy pair).
type PKISpec struct {
	// TrustDomain and Namespace make the SPIFFE IDs
	// spiffe://<TrustDomain>/ns/<Namespace>/sa/<ClientSA or ServerSA>.
	TrustDomain, Namespace string
	ClientSA, ServerSA     string
	// ServerDNS is the DNS name in the server's certificate, which the
	// client-side proxy sends as SNI and verifies.
	ServerDNS string
}

// SpiffeID returns spiffe://<trust domain>/ns/<ns>/sa/<sa>.
func SpiffeID(trustDomain, ns, sa string) string {
	return "spiffe://" + trustDomain + "/ns/" + ns + "/sa/" + sa
}

// PKIFiles are the paths WritePKI wrote: the root certificate, and each
// leaf's certificate followed by its private key (haproxy's crt format).
type PKIFiles struct {
	CA, ClientPEM, ServerPEM string
}

// WritePKI creates a throwaway CA and two SVID-like leaf certificates in
// dir, as the mesh's CA issues them: ECDSA P-256, a SPIFFE URI SAN,
// client and server auth; the server's also names s.ServerDNS. It writes
// ca.pem, client.pem and server.pem (certificate then PKCS#8 key, mode
// 0600).
func WritePKI(dir string, s PKISpec) (PKIFiles, error) {
	ca, err := testpki.NewCA(pkix.Name{Organization: []string{"fibmesh bench throwaway CA"}}, certLifetime)
	if err != nil {
		return PKIFiles{}, fmt.Errorf("bench CA: %w", err)
	}
	f := PKIFiles{CA: filepath.Join(dir, "ca.pem"), ClientPEM: filepath.Join(dir, "client.pem"), ServerPEM: filepath.Join(dir, "server.pem")}
	if err := os.WriteFile(f.CA, ca.PEM, 0o644); err != nil {
		return PKIFiles{}, err
	}
	leaf := func(path, sa string, dns ...string) error {
		der, key, err := ca.Issue(testpki.SVID(s.TrustDomain, s.Namespace, sa, dns...))
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
		return os.WriteFile(path, out, 0o600)
	}
	if err := leaf(f.ClientPEM, s.ClientSA); err != nil {
		return PKIFiles{}, err
	}
	var dns []string
	if s.ServerDNS != "" {
		dns = []string{s.ServerDNS}
	}
	if err := leaf(f.ServerPEM, s.ServerSA, dns...); err != nil {
		return PKIFiles{}, err
	}
	return f, nil
}
