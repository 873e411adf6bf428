package file

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "f.yaml")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "locked")
	if err := os.Mkdir(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, wantErr string
	}{
		{"directory", dir, ""},
		{"missing", filepath.Join(dir, "missing"), filepath.Join(dir, "missing") + ": not a readable directory: stat "},
		{"a file", regular, regular + ": not a readable directory: it is a file"},
	}
	if os.Geteuid() != 0 { // root reads a 0000 directory
		tests = append(tests, struct{ name, dir, wantErr string }{"unreadable", unreadable, unreadable + ": not a readable directory: open "})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.dir, Options{})
			if tc.wantErr == "" {
				if err != nil || s == nil {
					t.Fatalf("Open(%s) = %v, %v", tc.dir, s, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("Open(%s) = %v, want an error starting %q", tc.dir, err, tc.wantErr)
			}
		})
	}
}
