package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"-test.run=TestA|TestB", "it's", `$HOME "x" \n`, ""} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh printf %s = %q, %v; want %q", shellQuote(s), out, err, s)
		}
	}
}

func TestRenderInit(t *testing.T) {
	script, err := renderInit(initConfig{
		Release:     "6.1.0-57-amd64",
		Nonce:       "0123abcd",
		Modules:     "veth tls gcm",
		TestTimeout: "10m0s",
		Run:         " " + shellQuote("-test.run=TestA|Test'B"),
		TestArgs:    " " + shellQuote("-test.short"),
		Commands:    true,
		Tests: []testBinary{
			{Pkg: "github.com/fibmesh/fibmesh/e2e", Name: "e2e", Run: " " + shellQuote("-test.run=^TestOffload")},
			{Pkg: "github.com/fibmesh/fibmesh/internal/netnstest", Name: "internal_netnstest"},
			{Pkg: "github.com/fibmesh/fibmesh/fastpath/ktls", Name: "fastpath_ktls"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := string(script)
	for _, want := range []string{
		"#!/bin/sh\n",
		`echo "VMTEST-BOOT 0123abcd uptime=`,
		`echo "VMTEST-RESULT 0123abcd rc=$rc"`,
		"mount -t bpf bpf /sys/fs/bpf",
		`preload="veth tls gcm"`,
		"cd /tests/internal_netnstest\n",
		`./fastpath_ktls.test -test.v -test.count=1 -test.timeout=10m0s '-test.run=TestA|Test'\''B' '-test.short'` + "\n",
		`./e2e.test -test.v -test.count=1 -test.timeout=10m0s '-test.run=^TestOffload' '-test.short'` + "\n",
		"export FIBMESH_TEST_BIN=/opt/fibmesh/bin\n",
		"export PATH=/usr/local/bin:",
		"poweroff -f",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("init lacks %q:\n%s", want, s)
		}
	}
	// The script must parse.
	cmd := exec.Command("sh", "-n")
	cmd.Stdin = strings.NewReader(s)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v: %s", err, out)
	}
}
