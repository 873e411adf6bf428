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

// buildTests builds a static test binary for every package the patterns
// name, into dir. Packages that do not exist or have no tests are skipped
// with a note; a package that fails to build is reported (its compiler
// output logged) and counted in failed, and the others still run.
func buildTests(ctx context.Context, patterns []string, dir string, logf func(string, ...any)) (tests []testBinary, failed int, err error) {
	gobin := envOr("GO", "go")
	cmd := exec.CommandContext(ctx, gobin, append([]string{"list", "-e", "-f", listFormat}, patterns...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("go list %s: %w: %s", strings.Join(patterns, " "), err, strings.TrimSpace(stderr.String()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		logf("go list: %s", s)
	}
	seen := map[string]bool{}
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
		t := testBinary{Pkg: p.ImportPath, Name: name, Binary: bin}
		if st, err := os.Stat(filepath.Join(p.Dir, "testdata")); err == nil && st.IsDir() {
			t.TestData = filepath.Join(p.Dir, "testdata")
		}
		tests = append(tests, t)
		logf("built %s", p.ImportPath)
	}
	return tests, failed, nil
}
