package envoy

import (
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
)

const examplesDir = "../../testdata/cluster"

// loadModel builds the model of examples/ plus extra YAML documents
// (file name → content), as the file store would.
func loadModel(t testing.TB, extra map[string]string) *model.Model {
	t.Helper()
	dir := examplesDir
	if len(extra) > 0 {
		dir = t.TempDir()
		files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			extra[filepath.Base(f)] = string(b)
		}
		for name, content := range extra {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	s, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(s, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func buildMesh(t testing.TB, m *model.Model) *Mesh {
	t.Helper()
	mesh, err := BuildMesh(m)
	if err != nil {
		t.Fatalf("BuildMesh: %v", err)
	}
	validateMesh(t, mesh)
	return mesh
}

func nodeListeners(t testing.TB, m *model.Model, node string) []*listenerv3.Listener {
	t.Helper()
	ls, err := NodeListeners(m, node)
	if err != nil {
		t.Fatalf("NodeListeners(%s): %v", node, err)
	}
	for _, l := range ls {
		validate(t, l)
		uniqueChains(t, l)
	}
	return ls
}

func validateMesh(t testing.TB, mesh *Mesh) {
	t.Helper()
	for _, c := range mesh.Clusters {
		validate(t, c)
	}
	for _, e := range mesh.Endpoints {
		validate(t, e)
	}
	for _, r := range mesh.Routes {
		validate(t, r)
	}
	validate(t, mesh.Outbound)
	uniqueChains(t, mesh.Outbound)
}

// validate runs ValidateAll on m and, recursively, on every message
// packed in an Any inside it (ValidateAll does not look into Anys).
func validate(t testing.TB, m proto.Message) {
	t.Helper()
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Errorf("%T %s: %v", m, nameOf(m), err)
		}
	}
	walkAny(t, m.ProtoReflect())
}

func walkAny(t testing.TB, m protoreflect.Message) {
	t.Helper()
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("Any %s: %v", a.GetTypeUrl(), err)
			return
		}
		validate(t, inner)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				walkAny(t, v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAny(t, mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkAny(t, v.Message())
		}
		return true
	})
}

func nameOf(m proto.Message) string {
	switch r := m.(type) {
	case *clusterv3.Cluster:
		return r.Name
	case *endpointv3.ClusterLoadAssignment:
		return r.ClusterName
	case *routev3.RouteConfiguration:
		return r.Name
	case *listenerv3.Listener:
		return r.Name
	}
	return ""
}

// uniqueChains fails if two filter chains of a listener have equal
// matches, which Envoy rejects and ValidateAll does not catch.
func uniqueChains(t testing.TB, l *listenerv3.Listener) {
	t.Helper()
	for i, a := range l.FilterChains {
		for _, b := range l.FilterChains[i+1:] {
			if proto.Equal(a.FilterChainMatch, b.FilterChainMatch) {
				t.Errorf("listener %s: chains %s and %s have the same match %v", l.Name, a.Name, b.Name, a.FilterChainMatch)
			}
		}
		for _, b := range l.FilterChains[i+1:] {
			if a.Name == b.Name {
				t.Errorf("listener %s: two chains named %s", l.Name, a.Name)
			}
		}
	}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// unpack returns the message in a.
func unpack[T proto.Message](t testing.TB, a *anypb.Any) T {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.(T)
	if !ok {
		t.Fatalf("Any holds %T", m)
	}
	return v
}

func findCluster(t testing.TB, mesh *Mesh, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range mesh.Clusters {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cluster %s", name)
	return nil
}

func findCLA(t testing.TB, mesh *Mesh, name string) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	for _, c := range mesh.Endpoints {
		if c.ClusterName == name {
			return c
		}
	}
	t.Fatalf("no assignment %s", name)
	return nil
}

func findRoute(t testing.TB, mesh *Mesh, name string) *routev3.RouteConfiguration {
	t.Helper()
	for _, r := range mesh.Routes {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no route configuration %s", name)
	return nil
}

func findChain(t testing.TB, l *listenerv3.Listener, name string) *listenerv3.FilterChain {
	t.Helper()
	for _, fc := range l.FilterChains {
		if fc.Name == name {
			return fc
		}
	}
	t.Fatalf("listener %s: no chain %s", l.Name, name)
	return nil
}

func findListener(ls []*listenerv3.Listener, name string) *listenerv3.Listener {
	for _, l := range ls {
		if l.Name == name {
			return l
		}
	}
	return nil
}
