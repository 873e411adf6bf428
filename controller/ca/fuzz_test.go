package ca

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
)

// FuzzCheckCSR: CSRs come from the network; CheckCSR must never panic and
// must wrap ErrBadCSR whenever it refuses.
func FuzzCheckCSR(f *testing.F) {
	key := newKey(f)
	f.Add(csrDER(f, &x509.CertificateRequest{}, key))
	f.Add(csrDER(f, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: td, Path: "/ns/a/sa/b"}}}, key))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := CheckCSR(der)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error %v does not wrap ErrBadCSR", err)
			}
			return
		}
		if len(csr.URIs)+len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
			t.Fatal("accepted a CSR with SANs")
		}
	})
}

// FuzzParseTokens: the token file parser must not panic, and what it
// accepts has no token shared between lines.
func FuzzParseTokens(f *testing.F) {
	f.Add([]byte("# c\nnode1 tok-1\n\nnode2\ttok-2\n"))
	f.Add([]byte("node1 a b\n"))
	f.Add([]byte("node1 same\nnode2 same\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseTokens("tokens", data)
		if err != nil {
			return
		}
		seen := map[[32]byte]bool{}
		for _, e := range entries {
			if seen[e.sum] {
				t.Fatal("a token accepted twice")
			}
			seen[e.sum] = true
		}
	})
}
