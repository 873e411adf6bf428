package analyze

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"istio.io/api/networking/v1alpha3"

	"github.com/fibmesh/fibmesh/controller/config"
)

// TestLoaded: decode errors become findings beside the analyzers' own;
// input that cannot be analyzed is an error, with no findings.
func TestLoaded(t *testing.T) {
	badWeights := vs("default", "r", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{{
		Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "", 60), dest("reviews", "", 60)},
	}}})
	decodeErr := &config.DecodeError{Source: config.Source{File: "x.yaml", Doc: 1}, Err: errors.New("broken")}
	unusable := errors.Join(&config.DecodeError{Source: config.Source{File: "/nope"}, Err: fmt.Errorf("open /nope: %w", config.ErrUnusable)})
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		snap      *config.Snapshot
		err       error
		wantCodes []string
		wantErr   error
	}{
		{name: "clean", snap: snap(reviews)},
		{name: "a finding", snap: snap(reviews, badWeights), wantCodes: []string{"FM0001"}},
		{name: "decode error and a finding", snap: snap(reviews, badWeights), err: errors.Join(decodeErr), wantCodes: []string{"IST0106", "FM0001"}},
		{name: "unusable", err: unusable, wantErr: config.ErrUnusable},
		{name: "not a decode error", err: boom, wantErr: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := Loaded(tc.snap, tc.err)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Loaded error = %v, want %v", err, tc.wantErr)
			}
			var codes []string
			for _, f := range fs {
				codes = append(codes, f.Code)
			}
			if d := cmp.Diff(tc.wantCodes, codes); d != "" {
				t.Errorf("Loaded finding codes (-want +got):\n%s\n%v", d, fs)
			}
		})
	}
}

// TestDirOnlyFileBroken: a directory whose only manifest is broken gets
// that file's error as an IST0106 finding, not "no file holds YAML";
// a directory with nothing that is YAML, or a missing one, stays
// unusable.
func TestDirOnlyFileBroken(t *testing.T) {
	bomb := "a: &a [x,x,x,x,x,x,x,x,x]\n"
	prev := "a"
	for i := range 9 {
		n := fmt.Sprintf("l%d", i)
		bomb += fmt.Sprintf("%s: &%s [%s]\n", n, n, strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ","))
		prev = n
	}
	for _, tc := range []struct {
		name, file, body string
		wantMsg          string // substring of the one finding's message
	}{
		{"alias bomb", "bomb.yaml", bomb, "excessive aliasing"},
		{"deep nesting", "deep.yaml", strings.Repeat("[", 20000), "max depth"},
		{"garbage", "g.yaml", "\x00\x01\x02", "control characters"},
		{"broken json", "b.json", `{"a": `, "b.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			fs, err := Dir(dir)
			if err != nil {
				t.Fatalf("Dir = %v, want the file's error as a finding", err)
			}
			if len(fs) != 1 || fs[0].Code != SchemaValidationError.ID || fs[0].Level != Error ||
				fs[0].Source.File != filepath.Join(dir, tc.file) || !strings.Contains(fs[0].Message, tc.wantMsg) {
				t.Errorf("Dir = %v, want one IST0106 Error on %s containing %q", fs, tc.file, tc.wantMsg)
			}
			if strings.Contains(fmt.Sprint(fs), "holds YAML") {
				t.Errorf("Dir = %v: says no file holds YAML", fs)
			}
		})
	}
	notYAML := t.TempDir()
	if err := os.WriteFile(filepath.Join(notYAML, "notes.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]string{"nothing is YAML": notYAML, "missing": filepath.Join(t.TempDir(), "missing")} {
		if fs, err := Dir(dir); !errors.Is(err, config.ErrUnusable) || fs != nil {
			t.Errorf("%s: Dir = %v, %v; want no findings and an ErrUnusable error", name, fs, err)
		}
	}
}

// TestLoadPaths: files and directories are analyzed together, as
// `istioctl analyze -f a.yaml -f dir/` does; a file fibctl cannot parse
// is an IST0106 finding naming it; a kind fibmesh does not read is
// listed (FM0005), never dropped; an object in two paths is reported.
func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const orders = "apiVersion: v1\nkind: Service\nmetadata: {name: orders, namespace: shop}\nspec:\n  ports: [{name: http, port: 8080}]\n"
	const route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: orders, namespace: shop}\n" +
		"spec:\n  hosts: [orders]\n  http:\n  - route: [{destination: {host: orders}}]\n"
	const job = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly, namespace: shop}\nspec: {schedule: '@daily'}\n"
	svcFile := write("svc.manifest", orders) // any name, when given explicitly
	routeDir := filepath.Dir(write("routes/vs.yaml", route))
	jobFile := write("job.yaml", job)
	broken := write("broken.yaml", "kind: Service\nmetadata: {name: [\n")
	again := write("again.yml", orders)
	for _, tc := range []struct {
		name      string
		paths     []string
		wantCodes []string
		wantIn    string // substring of the first finding's message
	}{
		{name: "file and directory together", paths: []string{svcFile, routeDir}},
		{name: "file alone: the route's host is missing", paths: []string{routeDir}, wantCodes: []string{"IST0101"}, wantIn: `"orders"`},
		{name: "unknown kind is listed", paths: []string{jobFile}, wantCodes: []string{"FM0005"}, wantIn: "batch/v1 CronJob shop/nightly"},
		{name: "broken file", paths: []string{broken}, wantCodes: []string{"IST0106"}, wantIn: broken},
		{name: "object in two paths", paths: []string{svcFile, again, routeDir}, wantCodes: []string{"IST0106"}, wantIn: "already defined in " + svcFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := Loaded(LoadPaths(tc.paths, LoadPath))
			if err != nil {
				t.Fatalf("LoadPaths(%q) = %v", tc.paths, err)
			}
			var codes []string
			for _, f := range fs {
				codes = append(codes, f.Code)
			}
			if d := cmp.Diff(tc.wantCodes, codes); d != "" {
				t.Fatalf("finding codes (-want +got):\n%s\n%v", d, fs)
			}
			if len(fs) > 0 && !strings.Contains(fs[0].Message, tc.wantIn) {
				t.Errorf("finding %v, want its message to contain %q", fs[0], tc.wantIn)
			}
		})
	}
	if _, err := Loaded(LoadPaths([]string{svcFile, filepath.Join(dir, "missing.yaml")}, LoadPath)); !errors.Is(err, config.ErrUnusable) {
		t.Errorf("a missing path: error %v, want ErrUnusable", err)
	}
}
