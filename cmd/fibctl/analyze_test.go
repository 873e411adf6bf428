package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fibmesh/fibmesh/controller/config"
)

const (
	reviewsService = `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080, protocol: TCP}]
`
	reviewsRoute = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
`
	// reviewsBadWeights splits reviews' traffic 0/0: Istio's validation
	// rejects it (IST0106, an Error). 60/60 would be a Warning (FM0001):
	// Istio accepts any other total and splits in proportion.
	reviewsBadWeights = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: 0}
    - {destination: {host: reviews}, weight: 0}
`
)

// snapOf decodes YAML documents into a snapshot, as config.LoadDir would.
func snapOf(t *testing.T, docs ...string) *config.Snapshot {
	t.Helper()
	res, _, err := config.DecodeFile("test.yaml", []byte(strings.Join(docs, "---\n")))
	if err != nil {
		t.Fatal(err)
	}
	return &config.Snapshot{Resources: res}
}

// TestAnalyzeExitCodes covers flag handling and exit codes with a fake
// loader, independent of config.LoadDir.
func TestAnalyzeExitCodes(t *testing.T) {
	good := func(string) (*config.Snapshot, error) { return snapOf(t, reviewsService), nil }
	badWeights := func(string) (*config.Snapshot, error) { return snapOf(t, reviewsService, reviewsBadWeights), nil }
	decodeErr := func(string) (*config.Snapshot, error) {
		return snapOf(t, reviewsService), errors.Join(&config.DecodeError{Source: config.Source{File: "x.yaml", Doc: 1}, Err: errors.New("broken")})
	}
	unusable := func(string) (*config.Snapshot, error) {
		return nil, errors.Join(&config.DecodeError{Source: config.Source{File: "/nope"}, Err: fmt.Errorf("open /nope: %w", config.ErrUnusable)})
	}
	other := func(string) (*config.Snapshot, error) { return nil, errors.New("boom") }
	for _, tc := range []struct {
		name        string
		args        []string
		load        func(string) (*config.Snapshot, error)
		code        int
		out, errOut string // substrings
	}{
		{"help", []string{"--help"}, good, 0, "Usage: fibctl analyze -f PATH", ""},
		{"clean", []string{"-f", "d"}, good, 0, "No findings.", ""},
		{"clean long flags", []string{"--filename", "d", "--output", "json"}, good, 0, "[]", ""},
		{"error finding", []string{"-f", "d", "-o", "yaml"}, badWeights, 1, "code: IST0106", ""},
		{"decode error", []string{"-f", "d"}, decodeErr, 1, "IST0106", ""},
		{"unusable", []string{"-f", "/nope"}, unusable, 2, "", "open /nope"},
		{"unexpected error", []string{"-f", "d"}, other, 2, "", "boom"},
		{"missing -f", nil, good, 2, "", "-f PATH is required"},
		{"bad format", []string{"-f", "d", "-o", "xml"}, good, 2, "", `unknown output format "xml"`},
		{"bad flag", []string{"-x"}, good, 2, "", "flag provided but not defined: -x"},
		{"extra argument", []string{"-f", "d", "more"}, good, 2, "", `unexpected argument "more"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := runAnalyze(tc.args, &out, &errOut, tc.load)
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
				t.Errorf("runAnalyze(%q) = %d\nstdout: %s\nstderr: %s\nwant %d, stdout containing %q, stderr containing %q",
					tc.args, code, out.String(), errOut.String(), tc.code, tc.out, tc.errOut)
			}
		})
	}
}

// TestAnalyzeDirs runs fibctl analyze, through main's dispatch and with
// the real config.LoadDir, over temporary directories.
func TestAnalyzeDirs(t *testing.T) {
	write := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	const service = `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
`
	for _, tc := range []struct {
		name string
		dir  string
		code int
	}{
		{"clean", write(t, map[string]string{"mesh.yaml": service + "---\n" + reviewsRoute}), 0},
		{"unknown host", write(t, map[string]string{"mesh.yaml": reviewsRoute}), 1},
		{"broken document", write(t, map[string]string{"mesh.yaml": service, "bad.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {bogus: 1}\n"}), 1},
		{"missing path", filepath.Join(t.TempDir(), "missing"), 2},
		{"nothing is YAML", write(t, map[string]string{"notes.txt": "hello"}), 2},
		// A directory whose only manifest is broken reports that file's
		// error (IST0106), not "no file holds YAML".
		{"only file broken", write(t, map[string]string{"mesh.yaml": strings.Repeat("[", 20000)}), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, stdout, stderr := fibctlMain("analyze", "-f", tc.dir); code != tc.code {
				t.Errorf("fibctl analyze -f %s = %d, want %d\nstdout: %s\nstderr: %s", tc.dir, code, tc.code, stdout, stderr)
			}
		})
	}
}

// TestAnalyzeFiles: -f takes files as well as directories, and may be
// repeated; everything given is analyzed together.
func TestAnalyzeFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	svc, route := write("svc.yaml", reviewsService), write("route.yaml", reviewsRoute)
	garbage := write("garbage.yaml", "\x00\x01")
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"one file", []string{"-f", svc}, 0, "No findings."},
		{"route without its service", []string{"-f", route}, 1, "IST0101"},
		{"two files together", []string{"-f", svc, "--filename", route}, 0, "No findings."},
		{"unparsable file", []string{"-f", garbage}, 1, garbage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := fibctlMain(append([]string{"analyze"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stdout, tc.out) {
				t.Errorf("fibctl analyze %q = %d\nstdout: %s\nstderr: %s\nwant %d, stdout containing %q", tc.args, code, stdout, stderr, tc.code, tc.out)
			}
		})
	}
}
