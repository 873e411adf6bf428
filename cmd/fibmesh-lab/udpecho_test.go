package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestParseUDPEcho(t *testing.T) {
	t.Setenv("SERVICE_NAME", "dns")
	t.Setenv("POD_NAME", "dns-1")
	t.Setenv("POD_NAMESPACE", "kube-system")
	t.Setenv("NODE_NAME", "node2")
	for _, tt := range []struct {
		name    string
		args    []string
		listen  string
		errPart string
	}{
		{"defaults", nil, ":5353", ""},
		{"every flag", []string{"--port", "53", "--addr", "10.200.1.11", "--name", "dns", "--version", "v2"}, "10.200.1.11:53", ""},
		{"bad port", []string{"--port", "70000"}, "", "--port 70000: want 1..65535"},
		{"bad addr", []string{"--addr", "node1"}, "", `--addr "node1": want an IP address`},
		{"extra argument", []string{"x"}, "", "unexpected arguments"},
		{"unknown flag", []string{"--status", "200"}, "", "flag provided but not defined"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			listen, info, err := parseUDPEcho(tt.args, io.Discard)
			if tt.errPart != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("error %v, want a usage error containing %q", err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if listen != tt.listen || info.Service != "dns" || info.Pod != "dns-1" || info.Namespace != "kube-system" || info.Node != "node2" {
				t.Errorf("listen %q info %+v", listen, info)
			}
		})
	}
}

func TestAppUDPEchoHelp(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"app", "udp-echo", "--help"}, &out, io.Discard, slog.New(slog.DiscardHandler))
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run: %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"answers every UDP datagram", "peer", "-port PORT", "/dev/udp"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run([]string{"app", "--help"}, &out, io.Discard, slog.New(slog.DiscardHandler)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("app --help: %v", err)
	}
	if !strings.Contains(out.String(), "fibmesh-lab app udp-echo") {
		t.Errorf("app --help does not mention udp-echo:\n%s", out.String())
	}
}
