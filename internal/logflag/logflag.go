// Package logflag is the --log-format and --log-level flags that every
// fibmesh binary takes, and the log/slog logger they select: "text"
// (slog's key=value TextHandler, the default) or "json" (one JSON object
// a line, for log collectors), at level debug, info (the default), warn
// or error. Tools must not parse either format: readiness is an HTTP
// /readyz.
package logflag

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Name is the format flag's name, LevelName the level's.
const (
	Name      = "log-format"
	LevelName = "log-level"
)

// The formats.
const (
	Text = "text"
	JSON = "json"
)

// Flag is a registered --log-format flag.
type Flag struct {
	format string
	level  string
}

// Register adds --log-format (default text) and --log-level (default
// info) to fs. Read them with Logger after fs.Parse.
func Register(fs *flag.FlagSet) *Flag {
	f := &Flag{}
	fs.StringVar(&f.format, Name, Text, "log format: text or json")
	fs.StringVar(&f.level, LevelName, "info", "log level: debug (the agent logs every HTTP request), info, warn or error")
	return f
}

// Logger returns a logger writing to w in the format and at the level the
// flags were given. A format other than text or json is an error to
// report as a usage error (`--log-format "xml": want text or json`), and
// so is an unknown level.
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
	if f.level != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(f.level)); err != nil {
			return nil, fmt.Errorf("--%s %q: want debug, info, warn or error", LevelName, f.level)
		}
		if opts == nil {
			opts = &slog.HandlerOptions{}
		} else if opts.Level == nil {
			o := *opts
			opts = &o
		}
		if opts.Level == nil {
			opts.Level = l
		}
	}
	switch f.format {
	case Text:
		return slog.NewTextHandler(w, opts), nil
	case JSON:
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("--%s %q: want %s or %s", Name, f.format, Text, JSON)
}
