package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

// FuzzDecodeFile: DecodeFile never panics, every error is a *DecodeError
// naming a document of the input, every resource has a name and an
// object, and decoding again gives the same result.
func FuzzDecodeFile(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Namespace, metadata: {name: a}}]\n"))
	f.Add([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\nnot: [yaml\n"))
	f.Add([]byte(`{"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "r"}, "spec": {"host": "r", "trafficPolicy": {"loadBalancer": {"simple": 5}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, skipped, err := DecodeFile("fuzz.yaml", b)
		des := decodeErrors(t, err) // fails on any other error
		for _, d := range des {
			if d.Source.File != "fuzz.yaml" || d.Source.Doc < 1 || d.Err == nil {
				t.Fatalf("DecodeError with a bad source or no cause: %#v", d)
			}
		}
		for _, r := range res {
			if r.Name == "" || r.Object == nil || r.GVK.Kind == "" {
				t.Fatalf("resource without name, object or kind: %+v", r)
			}
		}
		res2, skipped2, err2 := DecodeFile("fuzz.yaml", b)
		if diff := cmp.Diff(views(res), views(res2), protocmp.Transform()); diff != "" {
			t.Fatalf("second decode differs (-first +second):\n%s", diff)
		}
		if diff := cmp.Diff(views(skipped), views(skipped2)); diff != "" {
			t.Fatalf("second decode skips differently (-first +second):\n%s", diff)
		}
		if diff := cmp.Diff(errStrings(t, err), errStrings(t, err2)); diff != "" {
			t.Fatalf("second decode errs differently (-first +second):\n%s", diff)
		}
	})
}
