package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func cacertsSecret(t *testing.T, data map[string][]byte) *corev1.Secret {
	t.Helper()
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "fibmesh-system", Name: "cacerts"}, Data: data}
}

// rootPEM returns a new root of td as PEM cert and key.
func rootPEM(t *testing.T) (*x509.Certificate, []byte, []byte) {
	t.Helper()
	cert, key, err := NewRoot(td, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k, err := encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, EncodeCerts([]*x509.Certificate{cert}), k
}

func TestFromSecret(t *testing.T) {
	ctx := context.Background()
	root1, cert1, key1 := rootPEM(t)
	client := fake.NewClientset(cacertsSecret(t, map[string][]byte{CertFile: cert1, KeyFile: key1}))
	c, err := FromSecret(ctx, client, "fibmesh-system", "cacerts", td)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Root().Equal(root1) {
		t.Fatal("signing root is not the Secret's")
	}
	if _, err := c.RotateRoot(); !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), "fibmesh-system/cacerts") {
		t.Errorf("RotateRoot on a Secret CA: %v, want ErrReadOnly naming the Secret", err)
	}
	if err := c.Retire(root1); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Retire on a Secret CA: %v, want ErrReadOnly", err)
	}

	// Rotation through the Secret: new signing root, bundle old+new.
	var got [][]*x509.Certificate
	defer c.OnBundleChange(func(b []*x509.Certificate) { got = append(got, b) })()
	root2, cert2, key2 := rootPEM(t)
	bundle := EncodeCerts([]*x509.Certificate{root2, root1})
	if _, err := client.CoreV1().Secrets("fibmesh-system").Update(ctx, cacertsSecret(t, map[string][]byte{CertFile: cert2, KeyFile: key2, RootsFile: bundle}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Root().Equal(root2) || len(got) != 1 || !slices.EqualFunc(got[0], []*x509.Certificate{root2, root1}, (*x509.Certificate).Equal) {
		t.Errorf("after Reload: want signing root 2 and one notification of [2 1], got %d notifications", len(got))
	}
	if err := c.Reload(ctx); err != nil || len(got) != 1 {
		t.Errorf("Reload without change: %v, %d notifications, want no new one", err, len(got))
	}
}

func TestFromSecretErrors(t *testing.T) {
	_, cert, key := rootPEM(t)
	_, otherCert, _ := rootPEM(t)
	tests := []struct {
		name   string
		secret *corev1.Secret
		want   []string
	}{
		{"absent", nil, []string{"Secret fibmesh-system/cacerts not found", "kubectl create secret generic cacerts -n fibmesh-system"}},
		{"no key", cacertsSecret(t, map[string][]byte{CertFile: cert}), []string{"has no key ca-key.pem"}},
		{"no cert", cacertsSecret(t, map[string][]byte{KeyFile: key}), []string{"has no key ca-cert.pem"}},
		{"bad cert", cacertsSecret(t, map[string][]byte{CertFile: []byte("x"), KeyFile: key}), []string{"Secret fibmesh-system/cacerts key ca-cert.pem: no PEM CERTIFICATE"}},
		{"key mismatch", cacertsSecret(t, map[string][]byte{CertFile: otherCert, KeyFile: key}), []string{"key ca-key.pem does not match", "ca-cert.pem"}},
		{"bundle lacks root", cacertsSecret(t, map[string][]byte{CertFile: cert, KeyFile: key, RootsFile: otherCert}), []string{"root-cert.pem does not hold the root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			if tt.secret != nil {
				client = fake.NewClientset(tt.secret)
			}
			_, err := FromSecret(context.Background(), client, "fibmesh-system", "cacerts", td)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// An intermediate in ca-cert.pem is sent after the leaf.
func TestIntermediate(t *testing.T) {
	root, rootKey, err := NewRoot(td, 48*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Let the root sign an intermediate CA as Issue would a leaf, then
	// mark it CA.
	interKey := newKey(t)
	serial, _ := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	// The root is pathlen-unconstrained, so an intermediate is allowed.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(der)
	k, _ := encodeKey(interKey)
	c, err := Load(td, EncodeCerts([]*x509.Certificate{inter}), k, EncodeCerts([]*x509.Certificate{root}))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := c.Issue(plainCSR(t), "spiffe://cluster.local/ns/a/sa/b", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.Chain) != 2 || !iss.Chain[1].Equal(inter) {
		t.Fatalf("chain of %d, want leaf and intermediate", len(iss.Chain))
	}
	if _, err := verify(iss.Chain, iss.Roots, time.Now()); err != nil {
		t.Error(err)
	}
	if err := c.Retire(root); !errors.Is(err, ErrSigningRoot) {
		t.Errorf("Retire(the intermediate's root): %v, want ErrSigningRoot", err)
	}
	if _, err := Load(td, EncodeCerts([]*x509.Certificate{inter}), k, nil); err == nil || !strings.Contains(err.Error(), "not self-signed") {
		t.Errorf("intermediate without bundle: %v, want 'not self-signed'", err)
	}
}
