// Package yamldoc reads multi-document YAML the way kubectl and the
// Kubernetes API server do: documents split on "---" lines, duplicate
// keys refused, and fields decoded strictly and case-sensitively (an
// unknown, misspelt or wrongly capitalised field is an error naming it).
//
// It is the one reader of multi-document YAML for controller/config (the
// manifests), the lab (its state file) and tools. Note that
// sigs.k8s.io/yaml's UnmarshalStrict is not a substitute: it decodes with
// encoding/json, which matches field names case-insensitively, so
// "NodeName:" would silently fill nodeName where the API server refuses it.
package yamldoc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Doc is one document of a multi-document stream.
type Doc struct {
	// N is the document's position in the stream, counting from 1, blank
	// documents included, so that it matches what an editor shows.
	N   int
	Raw []byte
}

// ReadError is Split's error: document N of the stream cannot be framed
// (for example an unterminated block), so neither it nor the documents
// after it were read.
type ReadError struct {
	N   int
	Err error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("document %d: not valid YAML: %v", e.N, e.Err)
}

func (e *ReadError) Unwrap() error { return e.Err }

// Split returns the documents of data (YAML or JSON) that hold something
// other than comments, document markers and white space. If a document
// cannot be read, Split returns the documents before it and a *ReadError.
func Split(data []byte) ([]Doc, error) {
	var docs []Doc
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, &ReadError{N: n, Err: err}
		}
		if !Blank(raw) {
			docs = append(docs, Doc{N: n, Raw: raw})
		}
	}
}

// Blank reports whether a document holds nothing but comments, document
// markers ("---", "...") and white space.
func Blank(doc []byte) bool {
	for l := range strings.SplitSeq(string(doc), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") && l != "---" && l != "..." {
			return false
		}
	}
	return true
}

var dupKey = regexp.MustCompile(`(?m)^\s*line (\d+): key ("[^"]*") already set in map$`)

// ToJSON converts one YAML document to JSON, refusing duplicate keys. Its
// error is one line per problem, such as `yaml: line 5: duplicate key
// "name"` (sigs.k8s.io/yaml's own text spans several lines).
func ToJSON(doc []byte) ([]byte, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err == nil {
		return js, nil
	}
	s := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	if m := dupKey.FindAllStringSubmatch(s, -1); m != nil {
		lines := make([]string, len(m))
		for i, x := range m {
			lines[i] = fmt.Sprintf("yaml: line %s: duplicate key %s", x[1], x[2])
		}
		return nil, errors.New(strings.Join(lines, "; "))
	}
	return nil, errors.New(s)
}

// FieldError is a strict decoding error at one field.
type FieldError struct {
	// Field is the path of the offending field ("spec.ports.port"), or ""
	// when the error is not about one field (malformed JSON).
	Field string
	// Err says what is wrong: "unknown field", "duplicate field", "wrong
	// type: got string, want int32", ...
	Err error
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Err.Error()
	}
	return "field " + e.Field + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// UnmarshalJSONStrict decodes JSON into obj as the Kubernetes API server
// does: field names match case-sensitively, and unknown or duplicate
// fields and wrong types are errors. The error is a *FieldError; on error
// obj may be partly filled.
func UnmarshalJSONStrict(js []byte, obj any) error {
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &FieldError{Field: te.Field, Err: fmt.Errorf("wrong type: got %s, want %s", te.Value, te.Type)}
		}
		return &FieldError{Err: errors.New(strings.TrimPrefix(err.Error(), "json: "))}
	}
	if len(strict) > 0 {
		field, msg := splitStrict(strict[0])
		return &FieldError{Field: field, Err: errors.New(msg)}
	}
	return nil
}

// splitStrict turns sigs.k8s.io/json's `unknown field "spec.foo"` into
// the field path and "unknown field" (or "duplicate field").
func splitStrict(err error) (field, msg string) {
	s := err.Error()
	i := strings.Index(s, ` "`)
	if i < 0 {
		return "", s
	}
	field, _, _ = strings.Cut(s[i+2:], `"`)
	return field, s[:i]
}

// UnmarshalStrict decodes one YAML (or JSON) document into obj: ToJSON,
// then UnmarshalJSONStrict. Use it for typed documents; Split first for a
// stream of several.
func UnmarshalStrict(doc []byte, obj any) error {
	js, err := ToJSON(doc)
	if err != nil {
		return err
	}
	return UnmarshalJSONStrict(js, obj)
}
