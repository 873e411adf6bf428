package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// BundleSecret returns the SDS Secret named name that carries roots as a
// validation context: trusted_ca with the PEM of every root, inline.
func BundleSecret(name string, roots []*x509.Certificate) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: EncodeCerts(roots)}},
		}},
	}
}

// CertificateSecret returns the SDS Secret named name that carries an
// SVID: the chain (leaf first) and its private key, PEM, inline.
func CertificateSecret(name string, chain []*x509.Certificate, key crypto.Signer) (*tlsv3.Secret, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("sds secret %s: encode key: %w", name, err)
	}
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: EncodeCerts(chain)}},
			PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{
				InlineBytes: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
			}},
		}},
	}, nil
}
