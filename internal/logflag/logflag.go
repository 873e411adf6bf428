// Package logflag is the --log-format flag that every fibmesh binary
// takes, and the log/slog logger it selects: "text" (slog's key=value
// TextHandler, the default) or "json" (one JSON object a line, for log
// collectors). Tools must not parse either: readiness is an HTTP /readyz.
package logflag

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Name is the flag's name.
const Name = "log-format"

// The formats.
const (
	Text = "text"
	JSON = "json"
)

// Flag is a registered --log-format flag.
type Flag struct {
	format string
}

// Register adds --log-format (default text) to fs. Read it with Logger
// after fs.Parse.
func Register(fs *flag.FlagSet) *Flag {
	f := &Flag{}
	fs.StringVar(&f.format, Name, Text, "log format: text or json")
	return f
}

// Logger returns a logger writing to w in the format the flag was given,
// at level Info. A format other than text or json is an error to report
// as a usage error: `--log-format "xml": want text or json`.
func (f *Flag) Logger(w io.Writer) (*slog.Logger, error) {
	h, err := f.Handler(w, nil)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// Handler is Logger's handler, with opts (nil for slog's defaults), for
// a binary that wraps or tees it.
func (f *Flag) Handler(w io.Writer, opts *slog.HandlerOptions) (slog.Handler, error) {
	switch f.format {
	case Text:
		return slog.NewTextHandler(w, opts), nil
	case JSON:
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("--%s %q: want %s or %s", Name, f.format, Text, JSON)
}
