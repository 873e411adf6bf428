package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// metaPackage is Debian's "current stock kernel" package; it depends on
// the versioned image package (linux-image-6.1.0-NN-amd64 on bookworm).
const metaPackage = "linux-image-amd64"

// stampFile marks a cache directory whose extraction finished.
const stampFile = ".vmtest-complete"

// kernel is an extracted Debian kernel image package.
type kernel struct {
	Root    string // the package's extracted tree
	Release string // uname -r, the directory under lib/modules
	Vmlinuz string
	ModDir  string // Root/lib/modules/Release
}

// imagePackageRE matches a versioned kernel image package name.
var imagePackageRE = regexp.MustCompile(`^linux-image-[0-9][0-9A-Za-z.+-]*$`)

// imagePackage returns the versioned image package the meta package
// depends on, from `apt-cache depends` output.
func imagePackage(dependsOutput string) (string, error) {
	for _, line := range strings.Split(dependsOutput, "\n") {
		f := strings.Fields(strings.TrimSpace(line))
		if len(f) == 2 && (f[0] == "Depends:" || f[0] == "|Depends:") && imagePackageRE.MatchString(f[1]) {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("no linux-image-<version> dependency in `apt-cache depends %s` output:\n%s", metaPackage, dependsOutput)
}

// packageVersion returns the Version field of `apt-cache show` output.
func packageVersion(showOutput string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(showOutput))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Version: "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("no Version field in `apt-cache show` output")
}

// fetchKernel returns Debian's stock kernel, extracted under cacheDir. It
// resolves the package with apt-cache, reuses a finished extraction of
// that exact package version, and otherwise downloads the .deb with
// `apt-get download` (nothing is installed on the host) and unpacks it
// with `dpkg-deb -x`. Without apt (or with stale package lists and no
// root to update them) it falls back to the newest cached kernel.
func fetchKernel(ctx context.Context, cacheDir string, logf func(string, ...any)) (*kernel, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	pkg, version, err := resolveKernelPackage(ctx, logf)
	if err != nil {
		if k, cerr := newestCached(cacheDir); cerr == nil {
			logf("cannot resolve %s (%v); using the cached %s", metaPackage, err, filepath.Base(k.Root))
			return k, nil
		}
		return nil, err
	}
	dir := filepath.Join(cacheDir, pkg+"_"+strings.ReplaceAll(version, ":", "%3a"))
	if _, err := os.Stat(filepath.Join(dir, stampFile)); err == nil {
		logf("kernel: %s %s (cached in %s)", pkg, version, dir)
		return openKernel(dir)
	}
	logf("kernel: downloading %s %s (apt-get download; not installed on this host)", pkg, version)
	err = downloadKernel(ctx, pkg, version, cacheDir, dir)
	if err != nil && os.Geteuid() == 0 && ctx.Err() == nil {
		// Stale package lists name a version the mirror no longer has.
		logf("%v; running apt-get update and retrying", err)
		if _, uerr := command(ctx, "", "apt-get", "update", "-qq"); uerr == nil {
			if pkg, version, err = resolveKernelPackage(ctx, logf); err == nil {
				dir = filepath.Join(cacheDir, pkg+"_"+strings.ReplaceAll(version, ":", "%3a"))
				if _, serr := os.Stat(filepath.Join(dir, stampFile)); serr == nil {
					return openKernel(dir)
				}
				err = downloadKernel(ctx, pkg, version, cacheDir, dir)
			}
		}
	}
	if err != nil {
		if k, cerr := newestCached(cacheDir); cerr == nil && ctx.Err() == nil {
			logf("%v; using the cached %s", err, filepath.Base(k.Root))
			return k, nil
		}
		return nil, err
	}
	return openKernel(dir)
}

func resolveKernelPackage(ctx context.Context, logf func(string, ...any)) (pkg, version string, err error) {
	out, err := command(ctx, "", "apt-cache", "depends", metaPackage)
	if err != nil && os.Geteuid() == 0 {
		// A fresh machine may never have run apt-get update.
		logf("apt-cache knows no %s; running apt-get update", metaPackage)
		if _, uerr := command(ctx, "", "apt-get", "update", "-qq"); uerr != nil {
			return "", "", fmt.Errorf("apt-get update: %w", uerr)
		}
		out, err = command(ctx, "", "apt-cache", "depends", metaPackage)
	}
	if err != nil {
		return "", "", fmt.Errorf("resolve %s (this needs Debian's package lists: apt-get update): %w", metaPackage, err)
	}
	if pkg, err = imagePackage(out); err != nil {
		return "", "", err
	}
	show, err := command(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return "", "", fmt.Errorf("apt-cache show %s: %w", pkg, err)
	}
	if version, err = packageVersion(show); err != nil {
		return "", "", fmt.Errorf("%s: %w", pkg, err)
	}
	return pkg, version, nil
}

// downloadKernel fetches and unpacks pkg=version into dir, through a
// temporary directory beside it so that an interrupted run leaves no
// half-extracted cache entry.
func downloadKernel(ctx context.Context, pkg, version, cacheDir, dir string) error {
	tmp, err := os.MkdirTemp(cacheDir, ".download-")
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	args := []string{"download", pkg + "=" + version}
	if os.Geteuid() == 0 {
		// apt drops to the _apt user for downloads, which cannot write
		// into root's cache directory; it falls back with a warning.
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	if _, err := command(ctx, tmp, "apt-get", args...); err != nil {
		return fmt.Errorf("apt-get download %s=%s: %w", pkg, version, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s=%s: want one .deb in %s, found %d", pkg, version, tmp, len(debs))
	}
	tree := filepath.Join(tmp, "tree")
	if _, err := command(ctx, "", "dpkg-deb", "-x", debs[0], tree); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w", filepath.Base(debs[0]), err)
	}
	if _, err := openKernel(tree); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(debs[0]), err)
	}
	if err := os.WriteFile(filepath.Join(tree, stampFile), []byte(pkg+" "+version+"\n"), 0o644); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	if err := os.Rename(tree, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, stampFile)); serr == nil {
			return nil // a concurrent run finished first
		}
		return fmt.Errorf("kernel cache: %w", err)
	}
	return nil
}

// openKernel finds the kernel image and module directory in an extracted
// image package.
func openKernel(root string) (*kernel, error) {
	mods, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil {
		return nil, fmt.Errorf("no lib/modules in the kernel package: %w", err)
	}
	for _, m := range mods {
		vmlinuz := filepath.Join(root, "boot", "vmlinuz-"+m.Name())
		if _, err := os.Stat(vmlinuz); err == nil && m.IsDir() {
			return &kernel{Root: root, Release: m.Name(), Vmlinuz: vmlinuz, ModDir: filepath.Join(root, "lib", "modules", m.Name())}, nil
		}
	}
	return nil, fmt.Errorf("no boot/vmlinuz-<release> matching lib/modules/<release> under %s", root)
}

// newestCached returns the most recently extracted kernel in cacheDir.
func newestCached(cacheDir string) (*kernel, error) {
	entries, err := os.ReadDir(cacheDir)
	if err != nil {
		return nil, err
	}
	type cand struct {
		dir string
		mod int64
	}
	var cands []cand
	for _, e := range entries {
		if st, err := os.Stat(filepath.Join(cacheDir, e.Name(), stampFile)); err == nil {
			cands = append(cands, cand{filepath.Join(cacheDir, e.Name()), st.ModTime().UnixNano()})
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("no cached kernel in %s", cacheDir)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].mod > cands[j].mod })
	return openKernel(cands[0].dir)
}

// command runs name with args (in dir, if set) and returns its stdout;
// the error carries stderr.
func command(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
