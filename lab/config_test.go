package lab

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConfigWithDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	want := Config{Nodes: 2, PodsPerNode: 2, Prefix: "fm-", StateDir: "/run/fibmesh/lab"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Config{}.WithDefaults() mismatch (-want +got):\n%s", diff)
	}
	keep := Config{Nodes: 3, PodsPerNode: 1, Prefix: "fm-x-", StateDir: "/tmp/s"}
	if diff := cmp.Diff(keep, keep.WithDefaults()); diff != "" {
		t.Errorf("WithDefaults changed set fields (-want +got):\n%s", diff)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{}.WithDefaults()
	with := func(f func(*Config)) Config { c := ok; f(&c); return c }
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"defaults", ok, ""},
		{"max", with(func(c *Config) { c.Nodes, c.PodsPerNode = 9, 9 }), ""},
		{"min", with(func(c *Config) { c.Nodes, c.PodsPerNode = 1, 1 }), ""},
		{"longest prefix", with(func(c *Config) { c.Prefix = "fm-" + strings.Repeat("a", 17) }), ""},
		{"zero nodes", with(func(c *Config) { c.Nodes = 0 }), "Nodes is 0, want 1..9"},
		{"ten nodes", with(func(c *Config) { c.Nodes = 10 }), "Nodes is 10, want 1..9"},
		{"negative pods", with(func(c *Config) { c.PodsPerNode = -1 }), "PodsPerNode is -1, want 1..9"},
		{"ten pods", with(func(c *Config) { c.PodsPerNode = 10 }), "PodsPerNode is 10, want 1..9"},
		{"empty prefix", with(func(c *Config) { c.Prefix = "" }), `must start with "fm-"`},
		{"foreign prefix", with(func(c *Config) { c.Prefix = "lab-" }), `must start with "fm-"`},
		{"prefix too long", with(func(c *Config) { c.Prefix = "fm-" + strings.Repeat("a", 18) }), "want at most 20"},
		{"prefix upper case", with(func(c *Config) { c.Prefix = "fm-A" }), "want only a-z, 0-9 and '-'"},
		{"prefix slash", with(func(c *Config) { c.Prefix = "fm-/x" }), "want only a-z, 0-9 and '-'"},
		{"empty state dir", with(func(c *Config) { c.StateDir = "" }), "StateDir is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Validate() = %v, does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestNetnsNamesWithinLimit(t *testing.T) {
	cfg := Config{Nodes: 9, PodsPerNode: 9, Prefix: "fm-" + strings.Repeat("z", 17)}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range plan(cfg).Namespaces() {
		if len(ns) > MaxNetnsName {
			t.Errorf("netns %q is %d characters, want at most %d", ns, len(ns), MaxNetnsName)
		}
	}
}
