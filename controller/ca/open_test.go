package ca

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

// TestOpen: each source gives the CA it names; a source that cannot be
// used is an error naming it.
func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root, cert, key := rootPEM(t)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile, keyFile := write("cert.pem", cert), write("key.pem", key)
	rootsFile := write("roots.pem", cert)
	client := fake.NewClientset(cacertsSecret(t, map[string][]byte{CertFile: cert, KeyFile: key}))
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name     string
		src      Source
		client   *fake.Clientset
		wantRoot bool   // the CA signs with root
		wantDesc string // Source.String
		wantErr  string // substring
	}{
		{name: "files", src: Source{CertFile: certFile, KeyFile: keyFile}, wantRoot: true, wantDesc: "files " + certFile + ", " + keyFile},
		{name: "files with roots", src: Source{CertFile: certFile, KeyFile: keyFile, RootsFile: rootsFile}, wantRoot: true},
		{name: "Secret", src: Source{Secret: "fibmesh-system/cacerts"}, client: client, wantRoot: true, wantDesc: "secret fibmesh-system/cacerts"},
		{name: "directory", src: Source{Dir: filepath.Join(dir, "generated")}, wantDesc: "directory " + filepath.Join(dir, "generated")},
		{name: "files win over the directory", src: Source{Dir: filepath.Join(dir, "unused"), CertFile: certFile, KeyFile: keyFile}, wantRoot: true},
		{name: "cert without key", src: Source{CertFile: certFile}, wantErr: "a certificate and a key go together"},
		{name: "key without cert", src: Source{KeyFile: keyFile}, wantErr: "a certificate and a key go together"},
		{name: "roots alone", src: Source{Dir: dir, RootsFile: rootsFile}, wantErr: "CA trust bundle " + rootsFile + ": it goes with a certificate and key file"},
		{name: "files and Secret", src: Source{CertFile: certFile, KeyFile: keyFile, Secret: "a/b"}, wantErr: "pick one source"},
		{name: "missing cert", src: Source{CertFile: missing, KeyFile: keyFile}, wantErr: "CA certificate: open " + missing},
		{name: "key is not a key", src: Source{CertFile: certFile, KeyFile: certFile}, wantErr: "CA from " + certFile + " and " + certFile},
		{name: "Secret name", src: Source{Secret: "cacerts"}, client: client, wantErr: `CA Secret "cacerts": want NAMESPACE/NAME`},
		{name: "Secret without a cluster", src: Source{Secret: "fibmesh-system/cacerts"}, wantErr: "needs a Kubernetes cluster"},
		{name: "no source", src: Source{}, wantErr: "no source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *CA
			var err error
			if tc.client != nil {
				c, err = Open(ctx, tc.src, td, tc.client)
			} else {
				c, err = Open(ctx, tc.src, td, nil)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Open(%+v) = %v, want an error containing %q", tc.src, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%+v): %v", tc.src, err)
			}
			if tc.wantRoot && !c.Root().Equal(root) {
				t.Errorf("Open(%+v) signs with %s, want the given root", tc.src, c.Root().Subject)
			}
			if tc.wantDesc != "" && tc.src.String() != tc.wantDesc {
				t.Errorf("Source.String() = %q, want %q", tc.src.String(), tc.wantDesc)
			}
		})
	}

	// A directory keeps its root: the second Open loads the first's.
	gen := Source{Dir: filepath.Join(dir, "kept")}
	a, err := Open(ctx, gen, td, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, gen, td, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Root().Equal(b.Root()) {
		t.Error("a second Open of the same directory made a new root")
	}
}

func TestNewAuthenticator(t *testing.T) {
	ctx := context.Background()
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("node1 tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("just-one-field\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	a, how, err := NewAuthenticator(tokens, fake.NewClientset(), []string{"fibmesh-ca"})
	if err != nil || how != "bootstrap tokens "+tokens {
		t.Fatalf("with a token file: %q, %v", how, err)
	}
	if node, err := a.Authenticate(ctx, "tok-1"); err != nil || node != "node1" {
		t.Errorf("token file authenticator: %q, %v; want node1 (the file wins over TokenReview)", node, err)
	}

	a, how, err = NewAuthenticator("", fake.NewClientset(), []string{"fibmesh-ca"})
	if _, ok := a.(*TokenReviewAuthenticator); !ok || err != nil || how != "TokenReview (audience fibmesh-ca)" {
		t.Errorf("in a cluster: %T, %q, %v; want TokenReview", a, how, err)
	}

	a, how, err = NewAuthenticator("", nil, nil)
	if err != nil || !strings.Contains(how, "every CSR is refused") {
		t.Fatalf("with nothing: %q, %v", how, err)
	}
	if _, err := a.Authenticate(ctx, "tok-1"); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "--bootstrap-tokens") {
		t.Errorf("with nothing, Authenticate = %v, want ErrInvalidToken saying how to give tokens", err)
	}

	if _, _, err := NewAuthenticator(bad, nil, nil); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("a malformed token file = %v, want an error naming it", err)
	}
}
