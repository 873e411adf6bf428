// Package output writes a command's result the three ways fibctl's -o
// flag offers: a table for people, JSON or YAML for programs. It is the
// one copy of that writer for every command and debug endpoint.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Format is an output format.
type Format string

// The formats. Table is the default.
const (
	Table Format = "table"
	JSON  Format = "json"
	YAML  Format = "yaml"
)

// Formats lists every format, the default first.
var Formats = []Format{Table, JSON, YAML}

// FlagUsage is the usage text of an -o flag.
const FlagUsage = "output format: table, json or yaml"

// Parse returns the format named s, or an error naming s and the formats
// there are: `-o "xml": want table, json or yaml`.
func Parse(s string) (Format, error) {
	switch f := Format(s); f {
	case Table, JSON, YAML:
		return f, nil
	}
	return "", fmt.Errorf("-o %q: want table, json or yaml", s)
}

// Write writes v to w in format f:
//
//   - JSON: v indented by two spaces, with a final newline;
//   - YAML: v as sigs.k8s.io/yaml marshals it (the JSON field names);
//   - Table: what table writes to a tabwriter that aligns tab-separated
//     cells into columns two spaces apart, flushed once table returns.
//     A line without tabs ends the columns above it and is written as
//     it is (a footnote below a table).
//
// A nil slice in v is written as null: give an empty one for []. An
// unknown format is an error and nothing is written.
func Write(w io.Writer, f Format, v any, table func(w io.Writer)) error {
	switch f {
	case JSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode as JSON: %w", err)
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case YAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode as YAML: %w", err)
		}
		_, err = w.Write(b)
		return err
	case Table:
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	return fmt.Errorf("unknown output format %q: want table, json or yaml", string(f))
}
