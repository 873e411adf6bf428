package analyze

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fibmesh/fibmesh/controller/config"
)

// readDoc returns docs/analyze.md, which documents every code.
func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/analyze.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestExamplesHaveNoErrors checks that the demo mesh in examples/ is
// valid: no Error finding (Warnings for unsupported fields are allowed).
func TestExamplesHaveNoErrors(t *testing.T) {
	const dir = "../testdata/cluster"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	hasYAML := false
	for _, e := range ents {
		ext := filepath.Ext(e.Name())
		hasYAML = hasYAML || e.IsDir() || ext == ".yaml" || ext == ".yml"
	}
	if !hasYAML {
		t.Skipf("%s has no manifests yet (they arrive with issue 3's examples); nothing to check", dir)
	}
	s, err := config.LoadDir(dir)
	fs := append(FromDecodeErrors(err), Analyze(s)...)
	if err != nil && len(fs) == 0 {
		t.Fatalf("LoadDir(%s): %v", dir, err)
	}
	for _, f := range fs {
		if f.Level == Error {
			t.Errorf("%s", f)
		} else {
			t.Logf("%s", f)
		}
	}
}
