package ca

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// Source says where the CA's signing certificate and key come from: PEM
// files (CertFile and KeyFile, with RootsFile when the trust bundle holds
// more than CertFile), a Kubernetes Secret in Istio's cacerts layout
// (Secret, "NAMESPACE/NAME"), or else a root generated on first use and
// kept in Dir. The fibmesh-controller flags --ca-cert, --ca-key,
// --ca-roots, --ca-secret and --ca-dir fill it in.
type Source struct {
	Dir                          string
	CertFile, KeyFile, RootsFile string
	Secret                       string
}

// String says where the CA comes from, for a log line: "files CERT, KEY",
// "secret NAMESPACE/NAME" or "directory DIR".
func (s Source) String() string {
	switch {
	case s.CertFile != "":
		return "files " + s.CertFile + ", " + s.KeyFile
	case s.Secret != "":
		return "secret " + s.Secret
	}
	return "directory " + s.Dir
}

// Open loads or creates the CA that src names, for trustDomain, with
// opts. client is the cluster's, needed only for src.Secret (nil
// otherwise). Errors name the file, Secret or directory.
func Open(ctx context.Context, src Source, trustDomain string, client kubernetes.Interface, opts ...Option) (*CA, error) {
	switch {
	case src.CertFile != "" || src.KeyFile != "":
		if src.CertFile == "" || src.KeyFile == "" {
			return nil, errors.New("CA files: a certificate and a key go together")
		}
		if src.Secret != "" {
			return nil, fmt.Errorf("CA from files %s and Secret %s: pick one source", src.CertFile, src.Secret)
		}
		cert, err := os.ReadFile(src.CertFile)
		if err != nil {
			return nil, fmt.Errorf("CA certificate: %w", err)
		}
		key, err := os.ReadFile(src.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("CA key: %w", err)
		}
		var roots []byte
		if src.RootsFile != "" {
			if roots, err = os.ReadFile(src.RootsFile); err != nil {
				return nil, fmt.Errorf("CA trust bundle: %w", err)
			}
		}
		c, err := Load(trustDomain, cert, key, roots, opts...)
		if err != nil {
			return nil, fmt.Errorf("CA from %s and %s: %w", src.CertFile, src.KeyFile, err)
		}
		return c, nil
	case src.RootsFile != "":
		return nil, fmt.Errorf("CA trust bundle %s: it goes with a certificate and key file", src.RootsFile)
	case src.Secret != "":
		ns, name, ok := strings.Cut(src.Secret, "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("CA Secret %q: want NAMESPACE/NAME", src.Secret)
		}
		if client == nil {
			return nil, fmt.Errorf("CA Secret %s: needs a Kubernetes cluster, and there is none", src.Secret)
		}
		return FromSecret(ctx, client, ns, name, trustDomain, opts...)
	}
	if src.Dir == "" {
		return nil, errors.New("CA: no source (give a directory, files or a Secret)")
	}
	return LoadOrCreate(src.Dir, trustDomain, opts...)
}

// NewAuthenticator returns how agents prove which node they run on,
// with a description for a log line: the bootstrap token file tokenFile
// when it is set (the lab), else TokenReview through client for
// audiences (in a cluster), else an Authenticator that refuses every
// token, since no agent could be told from an impostor.
func NewAuthenticator(tokenFile string, client kubernetes.Interface, audiences []string) (Authenticator, string, error) {
	if tokenFile != "" {
		a, err := TokenFile(tokenFile)
		if err != nil {
			return nil, "", err
		}
		return a, "bootstrap tokens " + tokenFile, nil
	}
	if client != nil {
		return TokenReview(client, audiences), "TokenReview (audience " + strings.Join(audiences, ", ") + ")", nil
	}
	return refuseAll{}, "none (give --bootstrap-tokens FILE): every CSR is refused", nil
}

// refuseAll authenticates nobody.
type refuseAll struct{}

func (refuseAll) Authenticate(context.Context, string) (string, error) {
	return "", fmt.Errorf("%w: the controller has no way to authenticate agents (start it with --bootstrap-tokens FILE, or in a cluster)", ErrInvalidToken)
}
