package analyze

import (
	"fmt"
	"io"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/internal/output"
)

// Formats Write accepts.
var Formats = []string{string(output.Table), string(output.JSON), string(output.YAML)}

// Write writes findings to w as "table" (columns LEVEL CODE KIND
// NAMESPACE NAME MESSAGE, "-" for an empty cell), "json" (an array of
// objects with keys code, level, kind, namespace, name, message and,
// when known, source) or "yaml" (the same objects as a YAML list). An
// unknown format is an error and nothing is written.
func Write(w io.Writer, format string, fs []Finding) error {
	if fs == nil {
		fs = []Finding{}
	}
	f := output.Format(format)
	if format == "" {
		f = output.Table
	}
	if err := output.Write(w, f, fs, func(tw io.Writer) {
		if len(fs) == 0 {
			fmt.Fprintln(tw, "No findings.")
			return
		}
		fmt.Fprintln(tw, "LEVEL\tCODE\tKIND\tNAMESPACE\tNAME\tMESSAGE")
		for _, f := range fs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
				f.Level, f.Code, dash(f.Kind), dash(f.Namespace), dash(f.Name), f.Message)
		}
	}); err != nil {
		return fmt.Errorf("findings: %w", err)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// FromDecodeErrors turns every *config.DecodeError in err (a single one,
// or several joined with errors.Join, at any depth) into a
// SchemaValidationError (IST0106) finding that names the file, the
// document and the field. Errors of other types are not findings and are
// left out; a nil err has none.
func FromDecodeErrors(err error) []Finding {
	var fs []Finding
	var walk func(error)
	walk = func(err error) {
		var de *config.DecodeError
		switch e := err.(type) {
		case nil:
		case *config.DecodeError:
			de = e
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
		if de == nil {
			return
		}
		msg := "Schema validation error: " + de.Source.String()
		if de.Field != "" {
			msg += ": field " + de.Field
		}
		if de.Err != nil {
			msg += ": " + de.Err.Error()
		}
		fs = append(fs, Finding{
			Code:      SchemaValidationError.ID,
			Level:     SchemaValidationError.Level,
			Kind:      de.Kind,
			Namespace: de.Namespace,
			Name:      de.Name,
			Message:   msg,
			Source:    de.Source,
		})
	}
	walk(err)
	return sortFindings(fs)
}
