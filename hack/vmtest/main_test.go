package main

import (
	"io"
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
	if diff := cmp.Diff([]string{"./a", "./b/..."}, o.pkgs); diff != "" {
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
	if strings.Join(o.pkgs, " ") != "./c" || o.run != "X" || o.modules[len(o.modules)-1] != "sch_netem" {
		t.Errorf("options %+v", o)
	}
	t.Setenv("VMTEST_PKGS", "")
	if o, err := parseFlags(nil, io.Discard); err != nil || strings.Join(o.pkgs, " ") != defaultPkgs {
		t.Errorf("empty VMTEST_PKGS: pkgs %v, %v; want the defaults", o.pkgs, err)
	}
	for _, bad := range [][]string{{"-smp", "0"}, {"-timeout", "1m", "-test-timeout", "2m"}, {"./pkg"}, {"-pkgs", " "}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
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
