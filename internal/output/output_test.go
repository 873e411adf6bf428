package output

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type row struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
	Note  string `json:"note,omitempty"`
}

var rows = []row{{Name: "a", Count: 1}, {Name: "longer-name", Count: 22, Note: "<x & y>"}}

func table(w io.Writer) {
	fmt.Fprintln(w, "NAME\tCOUNT\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%d\t%s\n", r.Name, r.Count, r.Note)
	}
	fmt.Fprintln(w, "a footnote, not aligned")
}

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		format Format
		v      any
		want   string
	}{
		{Table, rows, "NAME         COUNT  NOTE\na            1      \nlonger-name  22     <x & y>\na footnote, not aligned\n"},
		{JSON, rows, "[\n  {\n    \"name\": \"a\",\n    \"count\": 1\n  },\n  {\n    \"name\": \"longer-name\",\n    \"count\": 22,\n    \"note\": \"\\u003cx \\u0026 y\\u003e\"\n  }\n]\n"},
		{YAML, rows, "- count: 1\n  name: a\n- count: 22\n  name: longer-name\n  note: <x & y>\n"},
		{JSON, []row{}, "[]\n"},
		{YAML, []row{}, "[]\n"},
		{JSON, []row(nil), "null\n"},
	} {
		t.Run(fmt.Sprintf("%s %d", tc.format, len(tc.want)), func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, tc.format, tc.v, table); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, b.String()); d != "" {
				t.Errorf("Write -o %s (-want +got):\n%s", tc.format, d)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, "xml", rows, table); err == nil || !strings.Contains(err.Error(), `"xml"`) || b.Len() != 0 {
		t.Errorf("Write -o xml = %v, wrote %q; want an error naming xml and nothing written", err, b.String())
	}
	for _, f := range []Format{JSON, YAML} {
		b.Reset()
		err := Write(&b, f, map[string]any{"f": func() {}}, table)
		if err == nil || !strings.Contains(err.Error(), "encode as") || b.Len() != 0 {
			t.Errorf("Write -o %s of a func = %v, wrote %q; want an encoding error and nothing written", f, err, b.String())
		}
	}
	errW := errors.New("disk full")
	if err := Write(failWriter{errW}, Table, rows, table); !errors.Is(err, errW) {
		t.Errorf("Write to a failing writer = %v, want %v", err, errW)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestParse(t *testing.T) {
	for _, f := range Formats {
		if got, err := Parse(string(f)); got != f || err != nil {
			t.Errorf("Parse(%q) = %q, %v", f, got, err)
		}
	}
	for _, s := range []string{"", "xml", "JSON", "tabl"} {
		if _, err := Parse(s); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("-o %q: want table, json or yaml", s)) {
			t.Errorf("Parse(%q) = %v, want an error naming it and the formats", s, err)
		}
	}
}
