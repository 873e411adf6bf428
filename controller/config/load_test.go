package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, s := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func ns(name string) string {
	return "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + name + "}\n"
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"b.yaml": ns("b") + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: z, namespace: a}\n" +
			"---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: a}\n",
		"sub/a.yml":         ns("a") + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: w, namespace: b}\n",
		"sub/deeper/c.json": `{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x", "namespace": "b"}}`,
		// none of these is read: each would be an error
		".hidden.yaml":     "not: [yaml",
		".git/config.yaml": "not: [yaml",
		".#b.yaml":         "not: [yaml",
		"b.yaml~":          "not: [yaml",
		".b.yaml.swp":      "not: [yaml",
		"x.swp":            "not: [yaml",
		"README.md":        "# docs",
	})
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range s.Resources {
		got = append(got, r.Key()+" @ "+r.Source.String())
	}
	want := []string{ // by kind, namespace, name
		"Namespace a @ " + filepath.Join(dir, "sub/a.yml") + " (document 1)",
		"Namespace b @ " + filepath.Join(dir, "b.yaml") + " (document 1)",
		"ServiceAccount a/z @ " + filepath.Join(dir, "b.yaml") + " (document 2)",
		"ServiceAccount b/w @ " + filepath.Join(dir, "sub/a.yml") + " (document 2)",
		"ServiceAccount b/x @ " + filepath.Join(dir, "sub/deeper/c.json") + " (document 1)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	if len(s.Skipped) != 1 || s.Skipped[0].Key() != "Deployment a/d" {
		t.Errorf("skipped = %v, want Deployment a/d", s.Skipped)
	}
}

func TestLoadDirErrors(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "c", "c.yaml")
	writeFiles(t, dir, map[string]string{
		"a.yaml": ns("prod") +
			"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: prod}\nspec: {hosts: [r]}\n",
		// the same objects again: another version is the same object
		"b.yaml": "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: r, namespace: prod}\nspec: {hosts: [other]}\n" +
			"---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: prod}\nspec: {prots: []}\n",
		"c/c.yaml": ns("prod") + "---\n" + ns("other"),
	})
	s, err := LoadDir(dir)
	wantErrs := []string{
		b + " (document 2): Service prod/s: field spec.prots: unknown field",
		c + " (document 1): Namespace prod: duplicate Namespace prod: already defined in " + a + " (document 1)",
		b + " (document 1): VirtualService prod/r: duplicate VirtualService prod/r: already defined in " + a + " (document 2)",
	}
	if diff := cmp.Diff(wantErrs, errStrings(t, err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if errors.Is(err, ErrUnusable) {
		t.Errorf("error wraps ErrUnusable; bad documents are not unusable input")
	}
	var got []string
	for _, r := range s.Resources {
		got = append(got, r.Key()+" @ "+r.Source.String())
	}
	want := []string{ // the first of each duplicate is kept
		"Namespace other @ " + c + " (document 2)",
		"Namespace prod @ " + a + " (document 1)",
		"VirtualService prod/r @ " + a + " (document 2)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
}

func TestLoadDirUnusable(t *testing.T) {
	notYAML := t.TempDir()
	writeFiles(t, notYAML, map[string]string{"a.txt": "x", "b.md": "y"})
	garbage := t.TempDir()
	writeFiles(t, garbage, map[string]string{"a.yaml": "\x00\x01\x02", "b.json": "{\"a\": "})
	file := filepath.Join(t.TempDir(), "f.yaml")
	writeFiles(t, filepath.Dir(file), map[string]string{"f.yaml": ns("a")})
	for _, tt := range []struct {
		name, dir string
		unusable  bool
	}{
		{"missing", filepath.Join(t.TempDir(), "missing"), true},
		{"a file, not a directory", file, true},
		{"no YAML file", notYAML, true},
		{"no file holds YAML", garbage, true},
		{"empty directory is an empty mesh", t.TempDir(), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadDir(tt.dir)
			if got := errors.Is(err, ErrUnusable); got != tt.unusable {
				t.Errorf("LoadDir(%s) = %v; wraps ErrUnusable: %v, want %v", tt.dir, err, got, tt.unusable)
			}
			if !tt.unusable && (err != nil || len(s.Resources) != 0) {
				t.Errorf("LoadDir(%s) = %v, %v; want an empty snapshot", tt.dir, s, err)
			}
		})
	}
	// The os error stays reachable.
	if _, err := LoadDir(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadDir(missing) = %v, want it to wrap os.ErrNotExist", err)
	}
}

func TestLoadDirUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode")
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": ns("a"), "b.yaml": ns("b")})
	if err := os.Chmod(filepath.Join(dir, "b.yaml"), 0); err != nil {
		t.Fatal(err)
	}
	s, err := LoadDir(dir)
	if !errors.Is(err, ErrUnusable) || !errors.Is(err, os.ErrPermission) || len(s.Resources) != 1 {
		t.Errorf("LoadDir = %v, %v; want Namespace a and an ErrUnusable permission error", s.Resources, err)
	}
}
