package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// pemInput is PEM and the name of where it came from, for errors.
type pemInput struct {
	data []byte
	name string
}

// material is a CA's state: the signing certificate, its key, the bundle.
type material struct {
	cert  *x509.Certificate
	key   crypto.Signer
	roots []*x509.Certificate
}

// parseMaterial parses and checks a signing certificate, its key and an
// optional bundle (roots.data nil: cert must be a self-signed root). With
// recoverKey, a key that does not match cert but matches a root of the
// bundle makes that root the signer: what an interrupted rotation of a CA
// directory leaves (the bundle and key are written before the cert).
func parseMaterial(td spiffeid.TrustDomain, now time.Time, cert, key, roots pemInput, recoverKey bool) (*material, error) {
	certs, err := parseCerts(cert)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s holds %d certificates, want exactly one: the CA that signs workload certificates (put roots in the bundle)", cert.name, len(certs))
	}
	signer := certs[0]
	k, err := parseKey(key)
	if err != nil {
		return nil, err
	}
	var bundle []*x509.Certificate
	if roots.data != nil {
		if bundle, err = parseCerts(roots); err != nil {
			return nil, err
		}
		for _, r := range bundle {
			if !r.IsCA {
				return nil, fmt.Errorf("%s: certificate %q is not a CA (CA:false): the bundle holds root CAs only", roots.name, r.Subject)
			}
		}
	}
	if recoverKey && !publicKeysEqual(signer.PublicKey, k.Public()) {
		for _, r := range bundle {
			if publicKeysEqual(r.PublicKey, k.Public()) {
				signer = r
				break
			}
		}
	}
	if err := checkSigner(td, signer, k, now, cert.name); err != nil {
		if publicKeysEqual(signer.PublicKey, k.Public()) {
			return nil, err
		}
		return nil, fmt.Errorf("%s does not match %s: %w", key.name, cert.name, err)
	}
	switch {
	case roots.data == nil && !selfSigned(signer):
		return nil, fmt.Errorf("%s %q is not self-signed: provide its root CA in %s", cert.name, signer.Subject, roots.name)
	case roots.data == nil:
		bundle = []*x509.Certificate{signer}
	case issuerIn(signer, bundle) == nil:
		return nil, fmt.Errorf("%s does not hold the root that signed %s %q (issuer %q): add it", roots.name, cert.name, signer.Subject, signer.Issuer)
	}
	return &material{cert: signer, key: k, roots: bundle}, nil
}

func parseCerts(in pemInput) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := in.data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: unexpected PEM block %q, want CERTIFICATE", in.name, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", in.name, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", in.name)
	}
	return certs, nil
}

func parseKey(in pemInput) (crypto.Signer, error) {
	b, _ := pem.Decode(in.data)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM block: want a PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", in.name)
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("%s: unexpected PEM block %q: want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", in.name, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.name, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key type %T cannot sign", in.name, k)
	}
	return s, nil
}

// EncodeCerts returns certs as concatenated PEM CERTIFICATE blocks.
func EncodeCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

var errNoCA = errors.New("no CA")
