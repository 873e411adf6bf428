package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommittedCRDs: deploy/crds/istio-crds.yaml is exactly what `make
// manifests` writes from the istio.io/api module go.mod pins: the CRDs
// installed are the types the controller decodes.
func TestCommittedCRDs(t *testing.T) {
	dir, version, err := moduleDir(".")
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(dir, version)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("..", "..", DefaultOut)
	have, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v: run make manifests", err)
	}
	if !bytes.Equal(have, want) {
		t.Errorf("%s differs from the CRDs of %s %s: run make manifests and commit it", file, Module, version)
	}
	docs, err := byName(have)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != len(CRDs) {
		t.Errorf("%s holds %d CRDs, want %d", file, len(docs), len(CRDs))
	}
	for _, n := range CRDs {
		if _, ok := docs[n]; !ok {
			t.Errorf("%s has no CRD %s", file, n)
		}
	}
}

// TestGenerateErrors: a module file without one of the CRDs, or with a
// CRD twice, is an error naming it, not a short output.
func TestGenerateErrors(t *testing.T) {
	crd := func(name string) string {
		return "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: " + name + "\n"
	}
	var all []string
	for _, n := range CRDs {
		all = append(all, crd(n))
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"complete", "# comment\n---\n" + strings.Join(all, "---\n") + "---\n" + crd("gateways.networking.istio.io"), ""},
		{"one missing", strings.Join(all[1:], "---\n"), "no CustomResourceDefinition " + CRDs[0]},
		{"twice", strings.Join(append(all, all[2]), "---\n"), CRDs[2] + " twice"},
		{"garbage", "kind: [", "yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, ModuleFile)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := Generate(dir, "v0")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Count(string(out), "\nkind: CustomResourceDefinition\n"); got != len(CRDs) {
					t.Errorf("output holds %d CRDs, want %d:\n%s", got, len(CRDs), out)
				}
				if strings.Contains(string(out), "gateways") {
					t.Error("output holds a CRD fibmesh does not read")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Generate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
