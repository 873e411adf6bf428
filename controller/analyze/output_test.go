package analyze

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

var sample = []Finding{
	{Code: "IST0101", Level: Error, Kind: "VirtualService", Namespace: "default", Name: "reviews", Message: `Referenced host not found: "ratings"`, Source: config.Source{File: "vs.yaml", Doc: 2}},
	{Code: "FM0005", Level: Info, Kind: "Deployment", Namespace: "default", Name: "x", Message: "apps/v1 Deployment default/x is not consumed by fibmesh"},
	{Code: "IST0106", Level: Error, Message: "Schema validation error: broken.yaml (document 1): yaml: did not find expected key", Source: config.Source{File: "broken.yaml", Doc: 1}},
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, "table", sample); err != nil {
		t.Fatal(err)
	}
	want := `LEVEL  CODE     KIND            NAMESPACE  NAME     MESSAGE
Error  IST0101  VirtualService  default    reviews  Referenced host not found: "ratings"
Info   FM0005   Deployment      default    x        apps/v1 Deployment default/x is not consumed by fibmesh
Error  IST0106  -               -          -        Schema validation error: broken.yaml (document 1): yaml: did not find expected key
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	b.Reset()
	if err := Write(&b, "table", nil); err != nil || b.String() != "No findings.\n" {
		t.Errorf("empty table = %q, %v", b.String(), err)
	}
}

func TestWriteJSONYAMLRoundTrip(t *testing.T) {
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, format, sample); err != nil {
				t.Fatal(err)
			}
			var got []Finding
			var err error
			if format == "json" {
				err = json.Unmarshal(b.Bytes(), &got)
			} else {
				err = yamldoc.UnmarshalStrict(b.Bytes(), &got)
			}
			if err != nil {
				t.Fatalf("decode %s: %v\n%s", format, err, b.String())
			}
			if diff := cmp.Diff(sample, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			// The keys are the contract.
			var raw []map[string]any
			if err := yaml.Unmarshal(b.Bytes(), &raw); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"code", "level", "kind", "namespace", "name", "message", "source"} {
				if _, ok := raw[0][k]; !ok {
					t.Errorf("key %q missing from %v", k, raw[0])
				}
			}
			if _, ok := raw[1]["source"]; ok {
				t.Errorf("source present though unknown: %v", raw[1])
			}
			if raw[0]["level"] != "Error" {
				t.Errorf("level = %v, want \"Error\"", raw[0]["level"])
			}
		})
	}
	var b bytes.Buffer
	if err := Write(&b, "json", nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("empty json = %q, %v", b.String(), err)
	}
}

func TestWriteUnknownFormat(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, "xml", sample); err == nil || b.Len() != 0 {
		t.Errorf("Write(xml) = %v, wrote %q; want error and nothing written", err, b.String())
	}
}

func TestLevelText(t *testing.T) {
	for _, l := range []Level{Error, Warning, Info} {
		b, err := l.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Level
		if err := back.UnmarshalText(b); err != nil || back != l || string(b) != l.String() {
			t.Errorf("%v: round trip gave %v, %v", l, back, err)
		}
	}
	if _, err := Level(7).MarshalText(); err == nil {
		t.Error("Level(7).MarshalText: no error")
	}
	var l Level
	if err := l.UnmarshalText([]byte("error")); err == nil {
		t.Error(`UnmarshalText("error"): no error`)
	}
}

func TestFromDecodeErrors(t *testing.T) {
	e1 := &config.DecodeError{Source: config.Source{File: "a.yaml", Doc: 2}, Kind: "VirtualService", Namespace: "default", Name: "r", Field: "spec.http[0].rout", Err: errors.New(`unknown field "rout"`)}
	e2 := &config.DecodeError{Source: config.Source{File: "b.yaml", Doc: 1}, Err: errors.New("yaml: line 3: did not find expected key")}
	err := errors.Join(e1, fmt.Errorf("wrapped: %w", e2), errors.New("not a decode error"))
	want := []Finding{
		{Code: "IST0106", Level: Error, Message: "Schema validation error: b.yaml (document 1): yaml: line 3: did not find expected key", Source: e2.Source},
		{Code: "IST0106", Level: Error, Kind: "VirtualService", Namespace: "default", Name: "r", Message: `Schema validation error: a.yaml (document 2): field spec.http[0].rout: unknown field "rout"`, Source: e1.Source},
	}
	if diff := cmp.Diff(want, FromDecodeErrors(err)); diff != "" {
		t.Errorf("FromDecodeErrors (-want +got):\n%s", diff)
	}
	if fs := FromDecodeErrors(nil); fs != nil {
		t.Errorf("FromDecodeErrors(nil) = %v", fs)
	}
}

func TestCodesDocumented(t *testing.T) {
	doc := readDoc(t)
	seen := map[string]bool{}
	for _, c := range Codes {
		if seen[c.ID] {
			t.Errorf("code %s listed twice", c.ID)
		}
		seen[c.ID] = true
		if !strings.Contains(doc, "## "+c.ID+" "+c.Name) {
			t.Errorf("docs/analyze.md has no section %q", "## "+c.ID+" "+c.Name)
		}
		if got, ok := CodeByID(c.ID); !ok || got != c {
			t.Errorf("CodeByID(%s) = %v, %v", c.ID, got, ok)
		}
	}
}

func TestPodDependent(t *testing.T) {
	var got []string
	for _, c := range Codes {
		if c.PodDependent() {
			got = append(got, c.ID)
		}
	}
	if want := []string{"IST0127", "IST0173", "FM0003", "FM0007"}; !slices.Equal(got, want) {
		t.Errorf("pod-dependent codes = %v, want %v", got, want)
	}
}
