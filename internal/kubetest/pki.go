package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// pki is the cluster's certificates and keys, as files for the API
// server's flags and PEM for the kubeconfig.
type pki struct {
	caCert, servingCert, servingKey, saKey, saPub string // file paths
	caPEM, adminCertPEM, adminKeyPEM              []byte
	ca                                            *x509.Certificate
	caKey                                         *ecdsa.PrivateKey
}

// AdminUser is the admin's user name; its group is system:masters.
const AdminUser = "kubetest-admin"

// newPKI makes a throwaway CA (ECDSA P-256: fast to generate, which an
// RSA key of 2048 bits is not) that signs the API server's serving
// certificate (127.0.0.1, localhost and the in-cluster names) and the
// admin's client certificate, and a ServiceAccount token signing key.
func newPKI(dir string) (*pki, error) {
	k := &pki{}
	var err error
	if k.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubetest-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &k.caKey.PublicKey, k.caKey)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if k.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	k.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	servingCert, servingKey, err := k.Issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	if k.adminCertPEM, k.adminKeyPEM, err = k.Issue(&x509.Certificate{
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
		k.caCert:      k.caPEM,
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

var (
	serialMu sync.Mutex
	serial   = big.NewInt(1)
)

// Issue signs tmpl (its subject, names and usages) with the cluster's CA
// and a new P-256 key, valid for a day, and returns the certificate and
// key as PEM.
func (k *pki) Issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serialMu.Lock()
	serial.Add(serial, big.NewInt(1))
	tmpl.SerialNumber = new(big.Int).Set(serial)
	serialMu.Unlock()
	tmpl.NotBefore, tmpl.NotAfter = k.ca.NotBefore, k.ca.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.ca, &key.PublicKey, k.caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
