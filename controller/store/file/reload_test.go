package file

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"
)

// TestReloadNoNews: a reload that finds what the store reports unchanged
// (an editor's swap file came and went, a file was rewritten as it was)
// publishes nothing; a real change does. reload is called directly so
// that the test knows when each reload happened.
func TestReloadNoNews(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write := func(path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	svc := "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: shop\nspec:\n  ports:\n    - port: %s\n"
	write(a, fmt.Sprintf(svc, "80"))

	s := New(dir, Options{})
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	s.reload(w)
	first := <-s.Updates()
	if first.Err != nil || first.Snapshot == nil {
		t.Fatalf("first reload: %+v", first)
	}

	write(filepath.Join(dir, ".a.yaml.swp"), "swap")
	s.reload(w)
	write(a, fmt.Sprintf(svc, "80"))
	s.reload(w)
	select {
	case u := <-s.Updates():
		t.Fatalf("reload of unchanged content published %+v", u)
	default:
	}

	write(a, fmt.Sprintf(svc, "81"))
	s.reload(w)
	select {
	case u := <-s.Updates():
		if u.Err != nil || u.Snapshot == first.Snapshot {
			t.Errorf("after a change: %+v, want a new snapshot", u)
		}
	default:
		t.Fatal("reload of changed content published nothing")
	}
}
