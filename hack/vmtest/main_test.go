package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("VMTEST_PKGS", "./a ./b/...")
	t.Setenv("VMTEST_RUN", "TestKTLS")
	t.Setenv("VMTEST_ARGS", "-test.short -test.failfast")
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]pkgSpec{{Pattern: "./a"}, {Pattern: "./b/..."}}, o.pkgs); diff != "" {
		t.Errorf("pkgs (-want +got):\n%s", diff)
	}
	if o.run != "TestKTLS" || strings.Join(o.args, " ") != "-test.short -test.failfast" || o.smp != 2 || o.timeout != 20*time.Minute {
		t.Errorf("options %+v", o)
	}
	// Flags win over the environment.
	o, err = parseFlags([]string{"-pkgs", "./c", "-run", "X", "-modules", "sch_netem"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.pkgs) != 1 || o.pkgs[0].Pattern != "./c" || o.run != "X" || o.modules[len(o.modules)-1] != "sch_netem" {
		t.Errorf("options %+v", o)
	}
	t.Setenv("VMTEST_PKGS", "")
	if o, err := parseFlags(nil, io.Discard); err != nil || len(o.pkgs) != len(strings.Fields(defaultPkgs)) {
		t.Errorf("empty VMTEST_PKGS: pkgs %v, %v; want the defaults", o.pkgs, err)
	}
	for _, bad := range [][]string{{"-smp", "0"}, {"-timeout", "1m", "-test-timeout", "2m"}, {"./pkg"}, {"-pkgs", " "}, {"-pkgs", ":^TestX"}, {"-commands", "maybe"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}

func TestParsePkgSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want pkgSpec
	}{
		{"./e2e", pkgSpec{Pattern: "./e2e"}},
		{"./e2e:^TestOffload", pkgSpec{Pattern: "./e2e", Run: "^TestOffload"}},
		{"./fastpath/...:TestA|TestB:x", pkgSpec{Pattern: "./fastpath/...", Run: "TestA|TestB:x"}},
	} {
		got, err := parsePkgSpec(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parsePkgSpec(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if _, err := parsePkgSpec(":TestX"); err == nil {
		t.Error("parsePkgSpec(\":TestX\"): no error")
	}
}

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd)
	libmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f80)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f80)
	/lib64/ld-linux-x86-64.so.2 (0x00007f80)
`
	got, err := parseLdd(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libmnl.so.0", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseLdd (-want +got):\n%s", diff)
	}
	if _, err := parseLdd("\tlibfoo.so.1 => not found\n"); err == nil || !strings.Contains(err.Error(), "libfoo") {
		t.Errorf("a missing library: %v, want an error naming it", err)
	}
}

func TestUsesCommands(t *testing.T) {
	dir := t.TempDir()
	if usesCommands(dir) {
		t.Error("an empty directory uses the commands")
	}
	os.WriteFile(filepath.Join(dir, "a_test.go"), []byte("package a\nfunc TestMain(m *testing.M) { os.Exit(testenv.MainWithCommands(m, &d, \"cmd/fibctl\")) }\n"), 0o644)
	if !usesCommands(dir) {
		t.Error("a package calling testenv.MainWithCommands does not use the commands")
	}
}

func TestParseList(t *testing.T) {
	out := `github.com/fibmesh/fibmesh/internal/netnstest|/w/internal/netnstest|github.com/fibmesh/fibmesh|4|0|
./fastpath/splice|||0|0|stat /w/fastpath/splice: directory not found
github.com/fibmesh/fibmesh/fastpath/ktls|/w/fastpath/ktls|github.com/fibmesh/fibmesh|0|0|no Go files in /w/fastpath/ktls
github.com/fibmesh/fibmesh/broken|/w/broken|github.com/fibmesh/fibmesh|1|0|/w/broken/x.go:1:1: expected 'package', found 'EOF'
`
	got := parseList(out)
	if len(got) != 4 {
		t.Fatalf("%d packages, want 4", len(got))
	}
	if got[0].TestFiles != 4 || got[0].Module != "github.com/fibmesh/fibmesh" || got[0].Err != "" {
		t.Errorf("first: %+v", got[0])
	}
	for i, want := range []bool{false, true, true, false} {
		if missing(got[i]) != want {
			t.Errorf("missing(%s) = %v, want %v", got[i].ImportPath, !want, want)
		}
	}
}

func TestHostTools(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("no ip on this host: %v", err)
	}
	files, err := hostTools(context.Background(), []string{"ip"})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range files {
		if _, err := os.Stat(f.Host); err != nil {
			t.Errorf("%s: host file %s: %v", f.Guest, f.Host, err)
		}
		have[filepath.Base(f.Guest)] = true
	}
	if !have["ip"] {
		t.Errorf("no ip among %+v", files)
	}
	if dyn, _ := isDynamic(files[0].Host); dyn && (!have["libc.so.6"] || !have["ld-linux-x86-64.so.2"]) {
		t.Errorf("a dynamic ip without libc or the loader: %+v", files)
	}
	if _, err := hostTools(context.Background(), []string{"no-such-tool-fibmesh"}); err == nil || !strings.Contains(err.Error(), "no-such-tool-fibmesh") {
		t.Errorf("a missing tool: %v, want an error naming it", err)
	}
}
