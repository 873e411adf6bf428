package yamldoc

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestSplit(t *testing.T) {
	type doc struct {
		N   int
		Raw string
	}
	for _, tc := range []struct {
		name string
		in   string
		want []doc
	}{
		{name: "empty", in: ""},
		{name: "comments only", in: "# nothing\n---\n# still nothing\n...\n"},
		{name: "one", in: "a: 1\n", want: []doc{{1, "a: 1\n"}}},
		{name: "leading marker", in: "---\na: 1\n", want: []doc{{1, "---\na: 1\n"}}},
		{name: "blank documents keep their numbers", in: "a: 1\n---\n# gone\n---\nb: 2\n",
			want: []doc{{1, "a: 1\n"}, {3, "b: 2\n"}}},
		{name: "JSON", in: `{"a": 1}`, want: []doc{{1, "{\"a\": 1}\n"}}},
		{name: "marker with trailing space", in: "a: 1\n--- \nb: 2\n", want: []doc{{1, "a: 1\n"}, {2, "b: 2\n"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := Split([]byte(tc.in))
			if err != nil {
				t.Fatalf("Split(%q): %v", tc.in, err)
			}
			var got []doc
			for _, d := range docs {
				got = append(got, doc{d.N, string(d.Raw)})
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Split(%q) (-want +got):\n%s", tc.in, d)
			}
		})
	}
}

func TestToJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, wantErr string
	}{
		{name: "mapping", in: "a: 1\nb: [x]\n", want: `{"a":1,"b":["x"]}`},
		{name: "duplicate key", in: "metadata:\n  name: a\n  name: b\n", wantErr: `yaml: line 3: duplicate key "name"`},
		{name: "bad YAML", in: "kind: [\n", wantErr: "yaml: line 1: did not find expected node content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ToJSON([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("ToJSON(%q) error = %v, want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Errorf("ToJSON(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestUnmarshalStrict(t *testing.T) {
	const pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
	for _, tc := range []struct {
		name      string
		in        string
		wantField string
		wantErr   string // the FieldError's Err; "" for success
		wantNode  string
	}{
		{name: "good", in: pod + "spec: {nodeName: node1}\n", wantNode: "node1"},
		{name: "case-sensitive", in: pod + "spec: {NodeName: node1}\n", wantField: "spec.NodeName", wantErr: "unknown field"},
		{name: "unknown field", in: pod + "spec: {nodeNmae: node1}\n", wantField: "spec.nodeNmae", wantErr: "unknown field"},
		{name: "wrong type", in: pod + "spec: {nodeName: [a]}\n", wantField: "spec.nodeName", wantErr: "wrong type: got array, want string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p corev1.Pod
			err := UnmarshalStrict([]byte(tc.in), &p)
			if tc.wantErr == "" {
				if err != nil || p.Spec.NodeName != tc.wantNode {
					t.Errorf("UnmarshalStrict = %v, nodeName %q; want nil, %q", err, p.Spec.NodeName, tc.wantNode)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.wantField || fe.Err.Error() != tc.wantErr {
				t.Errorf("UnmarshalStrict = %#v, want a FieldError{%q, %q}", err, tc.wantField, tc.wantErr)
			}
		})
	}
	// Why this package exists, as its doc comment says: sigs.k8s.io/yaml
	// accepts the wrong case. If this fails after an upgrade, update the
	// doc comment.
	var p corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(pod+"spec: {NodeName: node1}\n"), &p); err != nil || p.Spec.NodeName != "node1" {
		t.Errorf("sigs.k8s.io/yaml.UnmarshalStrict with NodeName = %v, nodeName %q: it no longer matches case-insensitively; the package comment is stale", err, p.Spec.NodeName)
	}
}

func TestUnmarshalStrictDuplicateKey(t *testing.T) {
	var m map[string]any
	err := UnmarshalStrict([]byte("a: 1\na: 2\n"), &m)
	if err == nil || err.Error() != `yaml: line 2: duplicate key "a"` {
		t.Errorf("UnmarshalStrict with a duplicate key = %v", err)
	}
}

func FuzzUnmarshalStrict(f *testing.F) {
	for _, s := range []string{"a: 1\n---\nb: [x]\n", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {nodeName: n}\n", "{", "---\n...\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, _ := Split(data)
		for _, d := range docs {
			var p corev1.Pod
			_ = UnmarshalStrict(d.Raw, &p)
		}
	})
}
