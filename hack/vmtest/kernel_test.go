package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestImagePackage(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n"
	if got, err := imagePackage(out); err != nil || got != "linux-image-6.1.0-57-amd64" {
		t.Errorf("imagePackage = %q, %v", got, err)
	}
	alt := "linux-image-amd64\n |Depends: linux-image-6.12.9-amd64\n  Depends: <linux-initramfs-tool>\n"
	if got, err := imagePackage(alt); err != nil || got != "linux-image-6.12.9-amd64" {
		t.Errorf("imagePackage = %q, %v", got, err)
	}
	if _, err := imagePackage("linux-image-amd64\n  Recommends: firmware\n"); err == nil {
		t.Error("no error without a Depends")
	}
	if v, err := packageVersion("Package: x\nVersion: 6.1.192-3\nDepends: kmod\n"); err != nil || v != "6.1.192-3" {
		t.Errorf("packageVersion = %q, %v", v, err)
	}
	if _, err := packageVersion("Package: x\n"); err == nil {
		t.Error("no error without a Version")
	}
}

// fakeKernel lays out the parts of an extracted image package that
// openKernel looks for.
func fakeKernel(t *testing.T, root, release string) {
	t.Helper()
	for _, p := range []string{"boot/vmlinuz-" + release, "lib/modules/" + release + "/kernel/net/tls/tls.ko", "lib/modules/" + release + "/modules.builtin"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenKernelAndCache(t *testing.T) {
	cache := t.TempDir()
	old, new := filepath.Join(cache, "linux-image-6.1.0-1-amd64_6.1.1-1"), filepath.Join(cache, "linux-image-6.1.0-2-amd64_6.1.2-1")
	fakeKernel(t, old, "6.1.0-1-amd64")
	fakeKernel(t, new, "6.1.0-2-amd64")
	fakeKernel(t, filepath.Join(cache, ".download-123", "tree"), "6.1.0-3-amd64") // unfinished
	k, err := openKernel(new)
	if err != nil {
		t.Fatal(err)
	}
	if k.Release != "6.1.0-2-amd64" || k.Vmlinuz != filepath.Join(new, "boot/vmlinuz-6.1.0-2-amd64") {
		t.Errorf("openKernel = %+v", k)
	}
	if _, err := newestCached(cache); err == nil {
		t.Error("newestCached found a kernel without a stamp")
	}
	for i, dir := range []string{old, new} {
		stamp := filepath.Join(dir, stampFile)
		os.WriteFile(stamp, nil, 0o644)
		when := time.Now().Add(time.Duration(i-2) * time.Hour)
		os.Chtimes(stamp, when, when)
	}
	if k, err := newestCached(cache); err != nil || k.Release != "6.1.0-2-amd64" {
		t.Errorf("newestCached = %+v, %v; want 6.1.0-2-amd64", k, err)
	}
	if _, err := openKernel(t.TempDir()); err == nil || !strings.Contains(err.Error(), "lib/modules") {
		t.Errorf("openKernel of an empty tree: %v", err)
	}
}
