package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/lab/echo"
)

func TestParseAppEcho(t *testing.T) {
	t.Setenv("SERVICE_NAME", "reviews")
	t.Setenv("SERVICE_VERSION", "v1")
	t.Setenv("POD_NAME", "reviews-v1-abc")
	tests := []struct {
		name    string
		args    []string
		listen  string
		opts    echo.Options
		errPart string // "" no error; else a usage error containing it
	}{
		{"defaults", []string{"echo"}, ":8080", echo.Options{Status: 200, GRPCHealth: "SERVING"}, ""},
		{"every flag", []string{"echo", "--addr", "127.0.0.1", "--port", "9080", "--status", "500", "--delay", "100ms", "--fail-rate", "0.1", "--grpc-health", "NOT_SERVING"},
			"127.0.0.1:9080", echo.Options{Status: 500, Delay: 100 * time.Millisecond, FailRate: 0.1, GRPCHealth: "NOT_SERVING"}, ""},
		{"not echo", []string{"httpbin"}, "", echo.Options{}, "want echo"},
		{"bad port", []string{"echo", "--port", "0"}, "", echo.Options{}, "--port 0"},
		{"bad status", []string{"echo", "--status", "99"}, "", echo.Options{}, "--status 99: want an HTTP status 200..599"},
		{"delay too long", []string{"echo", "--delay", "1m"}, "", echo.Options{}, "--delay 1m0s: want a duration 0..30s"},
		{"fail rate over 1", []string{"echo", "--fail-rate", "1.5"}, "", echo.Options{}, "--fail-rate 1.5: want a probability"},
		{"fail rate NaN", []string{"echo", "--fail-rate", "NaN"}, "", echo.Options{}, "--fail-rate NaN"},
		{"bad grpc health", []string{"echo", "--grpc-health", "OK"}, "", echo.Options{}, `--grpc-health "OK"`},
		{"unparsable delay", []string{"echo", "--delay", "soon"}, "", echo.Options{}, "-delay"},
		{"extra argument", []string{"echo", "x"}, "", echo.Options{}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := parseAppEcho(tt.args, io.Discard)
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
			if a.listen != tt.listen || a.opts != tt.opts {
				t.Errorf("listen %q opts %+v, want %q %+v", a.listen, a.opts, tt.listen, tt.opts)
			}
			if a.info.Service != "reviews" || a.info.Version != "v1" || a.info.Pod != "reviews-v1-abc" {
				t.Errorf("info %+v, want reviews v1 from the environment", a.info)
			}
			if err := a.opts.Validate(); err != nil {
				t.Errorf("parsed options do not validate: %v", err)
			}
		})
	}
}

func TestAppEchoHelp(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"app", "echo", "--help"}, &out, io.Discard, slog.New(slog.DiscardHandler))
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run: %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"x-echo-status", "x-echo-delay", "x-echo-fail-first", "x-echo-attempt-key", "grpc.health.v1",
		"-fail-rate P", "-grpc-health STATUS", "-delay DURATION", "-status STATUS", "-port PORT"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}
