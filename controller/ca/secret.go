package ca

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// FromSecret returns the CA kept in the Secret namespace/name, in Istio's
// "cacerts" layout: keys ca-cert.pem (the signing CA), ca-key.pem (its
// key) and, optional when ca-cert.pem is a self-signed root,
// root-cert.pem (the trust bundle).
//
// FromSecret never creates the Secret: a CA Secret is provided by the
// operator (or a tool such as cert-manager), and a typo in its name must
// not silently mint a new root. For a CA that creates its own root, use
// LoadOrCreate. For the same reason the CA is read-only: Rotate,
// RotateRoot and Retire return ErrReadOnly; rotate by updating the Secret
// (new ca-cert.pem/ca-key.pem, root-cert.pem holding old and new roots)
// and calling Reload.
func FromSecret(ctx context.Context, client kubernetes.Interface, namespace, name string, trustDomain string, opts ...Option) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", trustDomain, err)
	}
	c := &CA{cfg: newConfig(opts), td: td, secret: &secretSource{client: client, namespace: namespace, name: name}}
	m, err := c.secret.load(ctx, td, c.cfg.now())
	if err != nil {
		return nil, err
	}
	c.set(m)
	return c, nil
}

// secretSource is where a CA from FromSecret reads its state.
type secretSource struct {
	client          kubernetes.Interface
	namespace, name string
}

func (s *secretSource) String() string { return "Secret " + s.namespace + "/" + s.name }

func (s *secretSource) load(ctx context.Context, td spiffeid.TrustDomain, now time.Time) (*material, error) {
	sec, err := s.client.CoreV1().Secrets(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("ca: %s not found: create it with kubectl create secret generic %s -n %s --from-file=%s --from-file=%s [--from-file=%s]",
			s, s.name, s.namespace, CertFile, KeyFile, RootsFile)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: get %s: %w", s, err)
	}
	in := func(key string) (pemInput, error) {
		name := fmt.Sprintf("%s key %s", s, key)
		v, ok := sec.Data[key]
		if !ok && key != RootsFile {
			return pemInput{}, fmt.Errorf("ca: %s has no key %s: it needs %s and %s (and %s when %s is not self-signed)", s, key, CertFile, KeyFile, RootsFile, CertFile)
		}
		return pemInput{v, name}, nil
	}
	cert, err := in(CertFile)
	if err != nil {
		return nil, err
	}
	key, err := in(KeyFile)
	if err != nil {
		return nil, err
	}
	roots, _ := in(RootsFile)
	m, err := parseMaterial(td, now, cert, key, roots, false)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return m, nil
}
