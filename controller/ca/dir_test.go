package ca

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	c1, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	root := c1.Root()
	if got := root.Subject.Organization; !slices.Equal(got, []string{"fibmesh"}) {
		t.Errorf("root O=%q, want fibmesh", got)
	}
	if got := urls(root.URIs); !slices.Equal(got, []string{"spiffe://cluster.local"}) {
		t.Errorf("root URI SANs %q, want spiffe://cluster.local", got)
	}
	if !root.IsCA || root.NotAfter.Sub(root.NotBefore) < DefaultRootLifetime {
		t.Errorf("root CA=%v lifetime %s, want CA and %s", root.IsCA, root.NotAfter.Sub(root.NotBefore), DefaultRootLifetime)
	}
	for name, want := range map[string]os.FileMode{CertFile: 0o644, KeyFile: 0o600, RootsFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v %v, want 0700", fi.Mode().Perm(), err)
	}

	c2, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Root().Equal(root) {
		t.Fatal("second start loaded a different root")
	}
	// A key from the first start signs SVIDs the second verifies.
	iss, err := c2.Issue(plainCSR(t), "spiffe://cluster.local/ns/a/sa/b", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(iss.Chain, c1.Bundle(), time.Now()); err != nil {
		t.Errorf("SVID from the reloaded CA against the first: %v", err)
	}

	// Rotation state persists: new signing root, both in the bundle.
	newRoot, err := c2.RotateRoot()
	if err != nil {
		t.Fatal(err)
	}
	c3, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	eq := func(a, b []*x509.Certificate) bool { return slices.EqualFunc(a, b, (*x509.Certificate).Equal) }
	if !c3.Root().Equal(newRoot) || !eq(c3.Bundle(), []*x509.Certificate{newRoot, root}) {
		t.Fatal("reload after RotateRoot: want the new signing root and the bundle [new old]")
	}
	if err := c3.Retire(root); err != nil {
		t.Fatal(err)
	}
	c4, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if !eq(c4.Bundle(), []*x509.Certificate{newRoot}) {
		t.Error("reload after Retire: want the bundle [new]")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// An interrupted rotation (bundle and key written, cert not) recovers.
func TestLoadOrCreateInterruptedRotation(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	oldCert, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := c.RotateRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFile), oldCert, 0o644); err != nil {
		t.Fatal(err)
	}
	c2, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Root().Equal(newRoot) {
		t.Error("did not recover the new root from root-cert.pem")
	}
}

func TestLoadOrCreateErrors(t *testing.T) {
	good := t.TempDir()
	if _, err := LoadOrCreate(good, td); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(good, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other := t.TempDir()
	if _, err := LoadOrCreate(other, "example.org"); err != nil {
		t.Fatal(err)
	}
	otherKey, err := os.ReadFile(filepath.Join(other, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files map[string][]byte
		td    string
		want  []string // substrings of the error
	}{
		{"key missing", map[string][]byte{CertFile: read(CertFile)}, td, []string{KeyFile, "does not", "remove both"}},
		{"cert missing", map[string][]byte{KeyFile: read(KeyFile)}, td, []string{CertFile, "does not"}},
		{"cert not PEM", map[string][]byte{CertFile: []byte("hello"), KeyFile: read(KeyFile)}, td, []string{CertFile, "no PEM CERTIFICATE"}},
		{"key not PEM", map[string][]byte{CertFile: read(CertFile), KeyFile: []byte("hello")}, td, []string{KeyFile, "no PEM block"}},
		{"key of another CA", map[string][]byte{CertFile: read(CertFile), KeyFile: otherKey}, td, []string{KeyFile, "does not match", CertFile}},
		{"other trust domain", map[string][]byte{CertFile: read(CertFile), KeyFile: read(KeyFile)}, "example.org", []string{`trust domain "cluster.local", not "example.org"`}},
		{"bundle without the root", map[string][]byte{CertFile: read(CertFile), KeyFile: read(KeyFile), RootsFile: func() []byte { b, _ := os.ReadFile(filepath.Join(other, CertFile)); return b }()}, td, []string{RootsFile, "does not hold the root"}},
		{"bad trust domain", nil, "Not A Domain!", []string{"trust domain"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadOrCreate(dir, tt.td)
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
