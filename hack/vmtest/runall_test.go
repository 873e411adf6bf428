package main

import (
	"fmt"
	"strings"
	"testing"
)

// fakeVM is one boot of a fake VM: the console lines it prints, and how
// it ends (a result, or no result with or without a kernel panic).
type fakeVM struct {
	lines    []string
	rc       int
	noResult bool
	panicked bool
}

// vmLines prints what /init prints for test binaries: each name's
// start, a test in it, and its verdict ("ok" or "FAIL"); "panic" stops
// inside the binary.
func vmLines(steps ...string) []string {
	var out []string
	for _, s := range steps {
		pkg, verdict, _ := strings.Cut(s, "=")
		out = append(out, "=== vmtest: "+pkg, "=== RUN   Test"+strings.ToUpper(pkg))
		if verdict == "panic" {
			out = append(out, "[  302.2] BUG: kernel NULL pointer dereference, address: 0000000000000000",
				"[  302.2] RIP: 0010:__wake_up_common+0x4c/0x180", "[  302.2] Kernel panic - not syncing: Fatal exception in interrupt")
			break
		}
		out = append(out, fmt.Sprintf("--- vmtest: %s %s (exit 0, 1s)", verdict, pkg))
	}
	return out
}

func TestRunAll(t *testing.T) {
	for _, tt := range []struct {
		name      string
		retries   int
		vms       []fakeVM
		wantRC    int
		wantSkips []int
		wantLog   []string // in the log, in order
		wantErr   string
	}{
		{
			name:      "all pass",
			retries:   1,
			vms:       []fakeVM{{lines: vmLines("a=ok", "b=ok", "c=ok")}},
			wantSkips: []int{0},
			wantLog:   []string{"PASS"},
		},
		{
			name:    "a panic, the rerun passes",
			retries: 1,
			vms: []fakeVM{
				{lines: vmLines("a=ok", "b=panic"), noResult: true, panicked: true},
				{lines: vmLines("b=ok", "c=ok")},
			},
			wantSkips: []int{0, 1},
			wantLog: []string{
				"panicked while running b (TestB)", "__wake_up_common",
				"fresh VM for the 2 test binaries not finished (kernel panic rerun 1 of 1)",
				"PASS after 1 kernel panic(s), each rerun in a fresh VM: in b (TestB)",
			},
		},
		{
			name:    "a failure before the panic is kept",
			retries: 1,
			vms: []fakeVM{
				{lines: vmLines("a=FAIL", "b=panic"), noResult: true, panicked: true},
				{lines: vmLines("b=ok", "c=ok")},
			},
			wantRC:    1,
			wantSkips: []int{0, 1},
			wantLog:   []string{"FAIL (tests status 0, 1 test binaries failed) after 1 kernel panic(s)"},
		},
		{
			name:    "two panics, one rerun",
			retries: 1,
			vms: []fakeVM{
				{lines: vmLines("a=panic"), noResult: true, panicked: true},
				{lines: vmLines("a=ok", "b=panic"), noResult: true, panicked: true},
			},
			wantRC:    3,
			wantSkips: []int{0, 0},
			wantErr:   "kernel panic in a (TestA), then in b (TestB) (no reruns left: -panic-retries 1)",
		},
		{
			name:      "no reruns",
			retries:   0,
			vms:       []fakeVM{{lines: vmLines("a=panic"), noResult: true, panicked: true}},
			wantRC:    3,
			wantSkips: []int{0},
			wantErr:   "kernel panic in a (TestA)",
		},
		{
			name:      "a timeout is not rerun",
			retries:   1,
			vms:       []fakeVM{{lines: vmLines("a=ok", "b=ok")[:3], noResult: true}},
			wantRC:    3,
			wantSkips: []int{0},
			wantErr:   "while running no test binary, after a finished",
		},
		{
			name:      "a hang inside a test binary",
			retries:   1,
			vms:       []fakeVM{{lines: vmLines("a=ok", "b=ok")[:5], noResult: true}},
			wantRC:    3,
			wantSkips: []int{0},
			wantErr:   "while running b (TestB)",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var skips []int
			boot := func(skip int, onLine func(string)) (*vmResult, error) {
				if len(skips) == len(tt.vms) {
					t.Fatalf("boot %d: only %d fake VMs", len(skips)+1, len(tt.vms))
				}
				vm := tt.vms[len(skips)]
				skips = append(skips, skip)
				res := &vmResult{RC: vm.rc, Panicked: vm.panicked}
				for _, l := range vm.lines {
					onLine(l)
					res.LastSeen = append(res.LastSeen, l)
					if len(res.Oops) > 0 || oopsStart.MatchString(l) {
						res.Oops = append(res.Oops, l)
					}
				}
				if vm.noResult {
					return res, fmt.Errorf("%w: qemu exited", errNoResult)
				}
				return res, nil
			}
			var log strings.Builder
			logf := func(format string, a ...any) { fmt.Fprintf(&log, format+"\n", a...) }
			rc, err := runAll(3, tt.retries, boot, logf)
			if rc != tt.wantRC {
				t.Errorf("rc = %d, want %d (err %v)\n%s", rc, tt.wantRC, err, log.String())
			}
			if fmt.Sprint(skips) != fmt.Sprint(tt.wantSkips) {
				t.Errorf("boots with skip %v, want %v", skips, tt.wantSkips)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			rest := log.String()
			for _, w := range tt.wantLog {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("log lacks %q (in order):\n%s", w, log.String())
				}
				rest = rest[i+len(w):]
			}
		})
	}
}
