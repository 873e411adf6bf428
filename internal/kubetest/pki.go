package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/fibmesh/fibmesh/internal/testpki"
)

// pki is the cluster's certificates and keys, as files for the API
// server's flags and PEM for the kubeconfig.
type pki struct {
	*testpki.CA
	caCert, servingCert, servingKey, saKey, saPub string // file paths
	adminCertPEM, adminKeyPEM                     []byte
}

// AdminUser is the admin's user name; its group is system:masters.
const AdminUser = "kubetest-admin"

// newPKI makes a throwaway CA that signs the API server's serving
// certificate (127.0.0.1, localhost and the in-cluster names) and the
// admin's client certificate, and a ServiceAccount token signing key.
func newPKI(dir string) (*pki, error) {
	ca, err := testpki.NewCA(pkix.Name{CommonName: "kubetest-ca"}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	k := &pki{CA: ca}
	servingCert, servingKey, err := k.IssuePEM(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	if k.adminCertPEM, k.adminKeyPEM, err = k.IssuePEM(&x509.Certificate{
		Subject:     pkix.Name{CommonName: AdminUser, Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saKeyDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	k.caCert, k.servingCert, k.servingKey = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key")
	k.saKey, k.saPub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	for path, b := range map[string][]byte{
		k.caCert:      k.PEM,
		k.servingCert: servingCert,
		k.servingKey:  servingKey,
		k.saKey:       pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saKeyDER}),
		k.saPub:       pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	return k, nil
}
