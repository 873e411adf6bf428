package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// listedPackage is one line of buildTests' `go list` output.
type listedPackage struct {
	ImportPath, Dir, Module, Err string
	TestFiles                    int
}

// listFormat separates fields with '|', which appears in neither import
// paths nor directories we build.
const listFormat = `{{.ImportPath}}|{{.Dir}}|{{with .Module}}{{.Path}}{{end}}|{{len .TestGoFiles}}|{{len .XTestGoFiles}}|{{with .Error}}{{.Err}}{{end}}`

func parseList(out string) []listedPackage {
	var pkgs []listedPackage
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, "|", 6)
		if len(f) != 6 {
			continue
		}
		t, _ := strconv.Atoi(f[3])
		x, _ := strconv.Atoi(f[4])
		pkgs = append(pkgs, listedPackage{ImportPath: f[0], Dir: f[1], Module: f[2], TestFiles: t + x, Err: f[5]})
	}
	return pkgs
}

// missing reports whether a go list error means the package does not
// exist (yet), as opposed to a broken one.
func missing(p listedPackage) bool {
	for _, s := range []string{"directory not found", "no such file or directory", "no Go files", "matched no packages", "cannot find package"} {
		if strings.Contains(p.Err, s) {
			return true
		}
	}
	return false
}

// pkgSpec is one entry of -pkgs: a package pattern, optionally with its
// own -test.run filter after a colon ("./e2e:^TestOffload").
type pkgSpec struct {
	Pattern string
	Run     string // "" means the run's -run filter
}

// parsePkgSpec splits "PATTERN[:REGEXP]". Go package patterns never
// contain a colon.
func parsePkgSpec(s string) (pkgSpec, error) {
	pat, run, _ := strings.Cut(s, ":")
	if pat == "" {
		return pkgSpec{}, fmt.Errorf("package %q: empty pattern before the colon (want PATTERN or PATTERN:REGEXP)", s)
	}
	return pkgSpec{Pattern: pat, Run: run}, nil
}

// buildTests builds a static test binary for every package the specs
// name, into dir. Packages that do not exist or have no tests are skipped
// with a note; a package that fails to build is reported (its compiler
// output logged) and counted in failed, and the others still run. A
// package named twice keeps the first spec's filter.
func buildTests(ctx context.Context, specs []pkgSpec, dir string, logf func(string, ...any)) (tests []testBinary, failed int, err error) {
	gobin := envOr("GO", "go")
	seen := map[string]bool{}
	for _, spec := range specs {
		ts, f, err := buildSpec(ctx, gobin, spec, dir, seen, logf)
		if err != nil {
			return nil, 0, err
		}
		tests = append(tests, ts...)
		failed += f
	}
	return tests, failed, nil
}

// buildSpec is buildTests for one spec.
func buildSpec(ctx context.Context, gobin string, spec pkgSpec, dir string, seen map[string]bool, logf func(string, ...any)) (tests []testBinary, failed int, err error) {
	cmd := exec.CommandContext(ctx, gobin, "list", "-e", "-f", listFormat, spec.Pattern)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("go list %s: %w: %s", spec.Pattern, err, strings.TrimSpace(stderr.String()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		logf("go list: %s", s)
	}
	for _, p := range parseList(string(out)) {
		switch {
		case p.Err != "" && missing(p):
			logf("skip %s: does not exist (yet): %s", p.ImportPath, p.Err)
			continue
		case p.Err != "":
			logf("FAIL %s: %s", p.ImportPath, p.Err)
			failed++
			continue
		case p.TestFiles == 0:
			logf("skip %s: no test files", p.ImportPath)
			continue
		case seen[p.ImportPath]:
			continue
		}
		seen[p.ImportPath] = true
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, p.Module), "/")
		if name == "" {
			name = filepath.Base(p.ImportPath)
		}
		name = strings.NewReplacer("/", "_", ".", "_").Replace(name)
		bin := filepath.Join(dir, name+".test")
		build := exec.CommandContext(ctx, gobin, "test", "-c", "-o", bin, p.ImportPath)
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if msg, err := build.CombinedOutput(); err != nil {
			logf("FAIL %s: go test -c: %v\n%s", p.ImportPath, err, msg)
			failed++
			continue
		}
		t := testBinary{Pkg: p.ImportPath, Name: name, Binary: bin, Commands: usesCommands(p.Dir)}
		if spec.Run != "" {
			t.Run = " " + shellQuote("-test.run="+spec.Run)
		}
		if st, err := os.Stat(filepath.Join(p.Dir, "testdata")); err == nil && st.IsDir() {
			t.TestData = filepath.Join(p.Dir, "testdata")
		}
		tests = append(tests, t)
		logf("built %s", p.ImportPath)
	}
	return tests, failed, nil
}

// usesCommands reports whether a package's tests run the module's
// commands (internal/testenv's MainWithCommands or BuildCommands, which
// take prebuilt ones from $FIBMESH_TEST_BIN in the VM).
func usesCommands(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && (bytes.Contains(b, []byte("testenv.MainWithCommands(")) || bytes.Contains(b, []byte("testenv.BuildCommands("))) {
			return true
		}
	}
	return false
}

// commands are the module's commands the tests that run real processes
// use (the lab, its controller and agents, fibctl).
var commands = []string{"./cmd/fibmesh-lab", "./cmd/fibmesh-controller", "./cmd/fibmesh-agent", "./cmd/fibctl"}

// buildCommands builds cmds statically (CGO_ENABLED=0: busybox has no
// libc) into dir, for the VM, which has no Go toolchain.
func buildCommands(ctx context.Context, cmds []string, dir string) error {
	gobin := envOr("GO", "go")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("commands: %w", err)
	}
	// -s -w: no symbol table or DWARF (stack traces keep their names);
	// the initramfs is unpacked into the guest's memory under emulation.
	args := append([]string{"build", "-ldflags=-s -w", "-o", dir + string(filepath.Separator)}, cmds...)
	build := exec.CommandContext(ctx, gobin, args...)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, msg)
	}
	return nil
}
