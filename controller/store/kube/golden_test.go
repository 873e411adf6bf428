package kube_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/store"
	"github.com/fibmesh/fibmesh/controller/store/kube"
)

// TestExamplesModelMatchesGolden: the examples/ mesh served by a cluster
// (fake clientsets) builds exactly the model the file store's golden
// file holds (controller/model/testdata/examples.golden.json).
func TestExamplesModelMatchesGolden(t *testing.T) {
	setup(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "cluster", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v (%d files)", err, len(files))
	}
	var kubeObjs, istioObjs []runtime.Object
	for _, f := range files {
		k, i := decodeFixture(t, f)
		kubeObjs, istioObjs = append(kubeObjs, k...), append(istioObjs, i...)
	}
	f := newFakes(t, kubeObjs, istioObjs)
	s := kube.New(f.kube, f.istio, kube.Options{Debounce: 10 * time.Millisecond})
	run(t, s)
	u := next(t, s, "the first snapshot", func(store.Update) bool { return true })
	matchGolden(t, u.Snapshot, "cluster")
}

// matchGolden builds the model of snap and compares it with the file
// store's golden model of examples/; from names the snapshot's source in
// the diff's header.
func matchGolden(t *testing.T, snap *config.Snapshot, from string) {
	t.Helper()
	m, err := model.Build(snap, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Dump()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("..", "..", "model", "testdata", "examples.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("model from the %s differs from the golden model of examples/ (-golden +%s):\n%s", from, from, d)
	}
}
