package logflag

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestLogger(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		check   func(t *testing.T, line string)
		wantErr string
	}{
		{name: "default is text", check: func(t *testing.T, line string) {
			if !strings.Contains(line, "level=INFO") || !strings.Contains(line, `msg=ready node=n1`) {
				t.Errorf("text line %q", line)
			}
		}},
		{name: "text", args: []string{"--log-format", "text"}, check: func(t *testing.T, line string) {
			if !strings.Contains(line, `msg=ready node=n1`) {
				t.Errorf("text line %q", line)
			}
		}},
		{name: "json", args: []string{"--log-format=json"}, check: func(t *testing.T, line string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] != "ready" || m["node"] != "n1" || m["level"] != "INFO" {
				t.Errorf("json line %q: %v, %v", line, m, err)
			}
		}},
		{name: "unknown", args: []string{"--log-format", "xml"}, wantErr: `--log-format "xml": want text or json`},
		{name: "level warn hides info", args: []string{"--log-level", "warn"}, check: func(t *testing.T, line string) {
			if line != "" {
				t.Errorf("an info line at level warn: %q", line)
			}
		}},
		{name: "unknown level", args: []string{"--log-level", "loud"}, wantErr: `--log-level "loud": want debug, info, warn or error`},
		{name: "case matters", args: []string{"--log-format", "JSON"}, wantErr: `--log-format "JSON": want text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f := Register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			log, err := f.Logger(&b)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("Logger = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Info("ready", "node", "n1")
			tc.check(t, strings.TrimSpace(b.String()))
		})
	}
}

func TestUsage(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	Register(fs)
	fl := fs.Lookup("log-format")
	if fl == nil || fl.DefValue != "text" || !strings.Contains(fl.Usage, "text or json") {
		t.Errorf("flag %+v, want --log-format, default text, usage naming text and json", fl)
	}
}

func TestLevelDebug(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--log-level=debug"}, true}, {[]string{"--log-level", "DEBUG", "--log-format", "json"}, true}} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		f := Register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		log, err := f.Logger(&b)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug("request", "code", 200)
		if got := strings.Contains(b.String(), "request"); got != tc.want {
			t.Errorf("%v: debug line logged %v, want %v (%q)", tc.args, got, tc.want, b.String())
		}
	}
}
