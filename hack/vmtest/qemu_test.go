package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeQemu writes a shell script standing in for qemu: it ignores its
// arguments and prints body's output as the VM's console.
func fakeQemu(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunVM(t *testing.T) {
	const nonce = "feedc0de"
	tests := []struct {
		name     string
		script   string
		timeout  time.Duration
		wantRC   int
		wantErr  string // "" for a result
		wantOut  string
		wantBoot bool
		wantOops []string // vmResult.Oops, from the oops's first line
	}{
		{
			name:     "pass",
			script:   `printf 'SeaBIOS\r\nVMTEST-BOOT feedc0de uptime=1.50\r\n--- PASS: TestX\r\nVMTEST-RESULT feedc0de rc=0\r\n'`,
			wantOut:  "SeaBIOS\nVMTEST-BOOT feedc0de uptime=1.50\n--- PASS: TestX\nVMTEST-RESULT feedc0de rc=0\n",
			wantBoot: true,
		},
		{
			name:     "tests failed",
			script:   `echo "VMTEST-BOOT feedc0de uptime=1"; echo "--- FAIL: TestX"; echo "VMTEST-RESULT feedc0de rc=1"`,
			wantRC:   1,
			wantBoot: true,
		},
		{
			name:     "a test prints a marker without the nonce",
			script:   `echo "VMTEST-BOOT feedc0de uptime=1"; echo "VMTEST-RESULT 00000000 rc=0"; exit 0`,
			wantErr:  "the VM printed no result marker: qemu exited",
			wantBoot: true,
		},
		{
			name:    "kernel panic",
			script:  `echo "[    1.0] Kernel panic - not syncing: Attempted to kill init!"; exit 0`,
			wantErr: "the kernel panicked; /init never started",
		},
		{
			// The report's start survives a dump longer than LastSeen.
			name: "an oops in a test, then a long dump",
			script: `echo "VMTEST-BOOT feedc0de uptime=1"; echo "=== RUN   TestX"
echo "[  302.2] BUG: kernel NULL pointer dereference, address: 0000000000000000"
echo "[  302.2] RIP: 0010:__wake_up_common+0x4c/0x180"
i=0; while [ $i -lt 100 ]; do echo "[  302.2]  frame$i"; i=$((i+1)); done
echo "[  302.3] Kernel panic - not syncing: Fatal exception in interrupt"; exit 0`,
			wantErr:  "the kernel panicked",
			wantBoot: true,
			wantOops: []string{"[  302.2] BUG: kernel NULL pointer dereference, address: 0000000000000000", "[  302.2] RIP: 0010:__wake_up_common+0x4c/0x180", "[  302.2]  frame0"},
		},
		{
			name:    "qemu fails",
			script:  `echo "qemu-system-x86_64: -m 2G: bad" >&2; exit 1`,
			wantErr: "qemu: exit status 1; qemu stderr: qemu-system-x86_64: -m 2G: bad",
		},
		{
			name:     "hang",
			script:   `echo "VMTEST-BOOT feedc0de uptime=1"; exec sleep 60`,
			timeout:  time.Second,
			wantErr:  "timed out after 1s",
			wantBoot: true,
		},
		{
			name:    "no newline at the end",
			script:  `printf 'VMTEST-RESULT feedc0de rc=0'`,
			wantOut: "VMTEST-RESULT feedc0de rc=0\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.timeout == 0 {
				tt.timeout = time.Minute
			}
			var out bytes.Buffer
			res, err := runVM(context.Background(), vmConfig{
				Qemu: fakeQemu(t, tt.script), SMP: 2, Memory: "2G", Nonce: nonce, Timeout: tt.timeout, Console: &out,
			})
			if tt.wantErr != "" {
				if !errors.Is(err, errNoResult) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("runVM error %v, want errNoResult with %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("runVM: %v", err)
			} else if res.RC != tt.wantRC {
				t.Errorf("RC = %d, want %d", res.RC, tt.wantRC)
			}
			if tt.wantOut != "" && out.String() != tt.wantOut {
				t.Errorf("console %q, want %q", out.String(), tt.wantOut)
			}
			if res.Panicked != strings.Contains(tt.wantErr, "panicked") {
				t.Errorf("Panicked = %v, want %v", res.Panicked, !res.Panicked)
			}
			if len(tt.wantOops) > 0 && (len(res.Oops) != oopsLines || fmt.Sprint(res.Oops[:len(tt.wantOops)]) != fmt.Sprint(tt.wantOops)) {
				t.Errorf("Oops (%d lines) starts %q, want %d lines from %q", len(res.Oops), res.Oops[:min(3, len(res.Oops))], oopsLines, tt.wantOops)
			}
			if (res.Boot > 0) != tt.wantBoot {
				t.Errorf("Boot = %v, want a boot time: %v", res.Boot, tt.wantBoot)
			}
			if res.Total <= 0 || len(res.LastSeen) == 0 && tt.name != "qemu fails" {
				t.Errorf("Total %v, LastSeen %q", res.Total, res.LastSeen)
			}
		})
	}
}

func TestQemuArgs(t *testing.T) {
	args := qemuArgs(vmConfig{Kernel: "vmlinuz", Initrd: "initrd", SMP: 2, Memory: "2G", Append: "vmtest.nopreload"})
	s := strings.Join(args, " ")
	for _, want := range []string{"-accel tcg,thread=multi", "-cpu max", "-smp 2", "-m 2G", "-no-reboot", "-kernel vmlinuz", "-initrd initrd", "-serial stdio"} {
		if !strings.Contains(s, want) {
			t.Errorf("qemu args %q lack %q", s, want)
		}
	}
	cmdline := args[slices.Index(args, "-append")+1]
	for _, want := range []string{"console=ttyS0", "panic=-1", "rdinit=/init", " vmtest.nopreload"} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("kernel command line %q lacks %q", cmdline, want)
		}
	}
	if one := strings.Join(qemuArgs(vmConfig{SMP: 1}), " "); !strings.Contains(one, "-accel tcg ") {
		t.Errorf("-smp 1: %q, want plain tcg", one)
	}
}
