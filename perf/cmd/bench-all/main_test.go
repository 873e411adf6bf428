package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fibmesh/fibmesh/perf/report"
)

// fakeMake is a make that runs no bench: bench-fds prints its output and
// summary line, bench-l4 fails, bench-xds prints no summary line.
const fakeMake = `#!/bin/sh
case "$2" in
bench-fds) echo "lab: 2 nodes"; echo "fds-propagation-remove: p50_ms=42.2 p99_ms=54.8 rounds=50"; echo "fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50";;
bench-l4) echo "bench-l4: iperf3 not found" >&2; exit 2;;
bench-xds) echo "bench-xds: 1000 agents (delta)";;
*) echo "unexpected $*" >&2; exit 3;;
esac
`

func TestRun(t *testing.T) {
	dir := t.TempDir()
	mk := filepath.Join(dir, "make")
	if err := os.WriteFile(mk, []byte(fakeMake), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	defer func(f func() bool) { isRoot = f }(isRoot)
	tests := []struct {
		name     string
		root     bool
		args     []string
		code     int
		want     []string // stdout lines, in order (substrings)
		statuses map[string]string
	}{
		{"as root", true, []string{"--only", "fds,l4,xds,fib", "--make", mk, "--out", out}, 1, []string{
			"[1/4] fds      make bench-fds ... ok in 0s: fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50",
			"[2/4] l4       make bench-l4 ... failed in 0s: make bench-l4: exit status 2: bench-l4: iperf3 not found",
			"[3/4] xds      make bench-xds ... failed in 0s: no summary line (NAME: key=value ...) in",
			"[4/4] fib      make bench-fib ... failed in 0s: make bench-fib: exit status 3: unexpected --no-print-directory bench-fib",
			"report: " + filepath.Join(out, "report.html"),
			"not run: l4 (failed)",
			"fds-propagation-remove: p50_ms=42.2 p99_ms=54.8 rounds=50",
			"fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50",
		}, map[string]string{"fds": "ok", "l4": "failed", "xds": "failed", "fib": "failed"}},
		{"not root: the root benches are skipped", false, []string{"--only", "fds,xds", "--make", mk, "--out", out}, 1, []string{
			"[1/2] fds      make bench-fds ... skipped: needs root",
			"[2/2] xds      make bench-xds ... failed in 0s: no summary line",
		}, map[string]string{"fds": "skipped", "xds": "failed"}},
		{"from the logs", false, []string{"--only", "fds", "--from-logs", "--out", out}, 0, []string{
			"[1/1] fds      make bench-fds ... ok: fds-propagation: p50_ms=43.1",
		}, map[string]string{"fds": "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isRoot = func() bool { return tt.root }
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.code, stderr.String())
			}
			rest := stdout.String()
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("no %q (in order) in:\n%s", w, stdout.String())
					break
				}
				rest = rest[i+len(w):]
			}
			b, err := os.ReadFile(filepath.Join(out, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			var r report.Report
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, s := range r.Steps {
				got[s.Name] = s.Status
			}
			if len(got) != len(tt.statuses) {
				t.Errorf("steps %v, want %v", got, tt.statuses)
			}
			for k, v := range tt.statuses {
				if got[k] != v {
					t.Errorf("step %s: %s, want %s", k, got[k], v)
				}
			}
			if html, err := os.ReadFile(filepath.Join(out, "report.html")); err != nil || !bytes.Contains(html, []byte("<h1>fibmesh perf report</h1>")) {
				t.Errorf("report.html: %v", err)
			}
		})
	}
}

func TestRunFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--only", "fib,nope"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown bench "nope"`) {
		t.Errorf("--only fib,nope: exit %d, stderr %q", code, stderr.String())
	}
}
