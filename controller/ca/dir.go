package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// File names in a CA directory and keys of a CA Secret: Istio's "cacerts"
// names, so that one set of files serves both.
const (
	// CertFile holds the signing CA certificate, PEM.
	CertFile = "ca-cert.pem"
	// KeyFile holds its private key, PEM (PKCS#8, SEC 1 or PKCS#1).
	KeyFile = "ca-key.pem"
	// RootsFile holds the trust bundle, PEM: the signing root and the
	// previous roots not yet retired. Optional where CertFile is a
	// self-signed root.
	RootsFile = "root-cert.pem"
)

// LoadOrCreate returns the CA kept in dir: on first start (no CertFile and
// no KeyFile) it generates a root for trustDomain (NewRoot) and writes it;
// later it loads CertFile, KeyFile and RootsFile. Rotations and
// retirements are written back to dir. Files are replaced atomically
// (written to a temporary file, synced, renamed); the key is 0600, the
// certificates 0644, dir is created 0700.
func LoadOrCreate(dir, trustDomain string, opts ...Option) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", trustDomain, err)
	}
	c := &CA{cfg: newConfig(opts), td: td}
	d := dirStore(dir)
	m, err := d.load(td, c.cfg)
	switch {
	case errors.Is(err, errNoCA):
		cert, key, err := NewRoot(trustDomain, c.cfg.rootLifetime, c.cfg.now())
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("ca: create CA directory: %w", err)
		}
		m = &material{cert: cert, key: key, roots: []*x509.Certificate{cert}}
		if err := d.save(m.cert, m.key, m.roots); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("ca: %w", err)
	}
	c.store = d
	c.set(m)
	return c, nil
}

// dirStore keeps a CA's state as files in a directory.
type dirStore string

func (d dirStore) path(name string) string { return filepath.Join(string(d), name) }

// load reads the CA from d; errNoCA when neither cert nor key exists.
func (d dirStore) load(td spiffeid.TrustDomain, cfg config) (*material, error) {
	cert, errC := os.ReadFile(d.path(CertFile))
	key, errK := os.ReadFile(d.path(KeyFile))
	switch {
	case errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist):
		return nil, errNoCA
	case errors.Is(errC, fs.ErrNotExist):
		return nil, fmt.Errorf("%s exists but %s does not: restore it, or remove both to generate a new root (every SVID is then re-issued)", d.path(KeyFile), d.path(CertFile))
	case errors.Is(errK, fs.ErrNotExist):
		return nil, fmt.Errorf("%s exists but %s does not: restore it, or remove both to generate a new root (every SVID is then re-issued)", d.path(CertFile), d.path(KeyFile))
	case errC != nil:
		return nil, errC
	case errK != nil:
		return nil, errK
	}
	roots, err := os.ReadFile(d.path(RootsFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return parseMaterial(td, cfg.now(),
		pemInput{cert, d.path(CertFile)}, pemInput{key, d.path(KeyFile)}, pemInput{roots, d.path(RootsFile)}, true)
}

// save writes the bundle, then the key, then the certificate, each
// atomically: a crash in between leaves a state load recovers from.
func (d dirStore) save(signer *x509.Certificate, key crypto.Signer, roots []*x509.Certificate) error {
	k, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(d.path(RootsFile), EncodeCerts(roots), 0o644); err != nil {
		return err
	}
	if err := writeAtomic(d.path(KeyFile), k, 0o600); err != nil {
		return err
	}
	return writeAtomic(d.path(CertFile), EncodeCerts([]*x509.Certificate{signer}), 0o644)
}

// writeAtomic replaces path with data: a temporary file in the same
// directory, synced, then renamed over path.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename, a no-op
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
