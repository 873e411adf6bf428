package benchlab

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/controller/model"
)

func TestPodYAML(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pod       Pod
		wantLabel map[string]string
		wantSA    string
		wantCmds  [][]string
	}{
		{"mesh pod, two containers", Pod{
			Namespace: "bench", Name: "server", ServiceAccount: "server", Node: "node2",
			IP: netip.MustParseAddr("10.200.2.11"),
			Containers: []Container{
				{Name: "app", Command: []string{"/bin/bench-l7", "serve", "--port", "8080"}},
				{Name: "idle", Command: []string{"sleep", "infinity"}},
			},
		}, map[string]string{"app": "server"}, "server", [][]string{{"/bin/bench-l7", "serve", "--port", "8080"}, {"sleep", "infinity"}}},
		{"outside the mesh, no service account, quoting", Pod{
			Namespace: "bench-plain", Name: "client-plain", Node: "node1",
			IP:          netip.MustParseAddr("10.200.1.12"),
			OutsideMesh: true,
			Containers:  []Container{{Name: "haproxy", Command: []string{"/opt/ha proxy", "-f", `/a "b".cfg`}}},
		}, map[string]string{"app": "client-plain", model.LabelCapture: model.CaptureDisabled}, "", [][]string{{"/opt/ha proxy", "-f", `/a "b".cfg`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.pod.YAML()
			rest, ok := strings.CutPrefix(doc, "---\n")
			if !ok {
				t.Fatalf("YAML() does not start with a document separator:\n%s", doc)
			}
			var got corev1.Pod
			if err := yaml.UnmarshalStrict([]byte(rest), &got); err != nil {
				t.Fatalf("YAML() is no Pod: %v\n%s", err, doc)
			}
			if got.Kind != "Pod" || got.Name != tc.pod.Name || got.Namespace != tc.pod.Namespace {
				t.Errorf("kind/name/namespace %s %s/%s, want Pod %s/%s", got.Kind, got.Namespace, got.Name, tc.pod.Namespace, tc.pod.Name)
			}
			if !reflect.DeepEqual(got.Labels, tc.wantLabel) {
				t.Errorf("labels %v, want %v", got.Labels, tc.wantLabel)
			}
			if got.Spec.NodeName != tc.pod.Node || got.Spec.ServiceAccountName != tc.wantSA || got.Status.PodIP != tc.pod.IP.String() {
				t.Errorf("node %q, service account %q, pod IP %q; want %q, %q, %q", got.Spec.NodeName, got.Spec.ServiceAccountName, got.Status.PodIP, tc.pod.Node, tc.wantSA, tc.pod.IP)
			}
			var cmds [][]string
			for i, c := range got.Spec.Containers {
				if c.Name != tc.pod.Containers[i].Name {
					t.Errorf("container %d is %q, want %q", i, c.Name, tc.pod.Containers[i].Name)
				}
				cmds = append(cmds, c.Command)
			}
			if !reflect.DeepEqual(cmds, tc.wantCmds) {
				t.Errorf("commands %q, want %q", cmds, tc.wantCmds)
			}
		})
	}
}

func TestNamespaces(t *testing.T) {
	docs := strings.Split(strings.TrimSuffix(Namespaces("bench", "bench-plain"), "---\n"), "---\n")
	want := []struct{ kind, name, ns, label string }{
		{"Namespace", "bench", "", ""},
		{"Namespace", "bench-plain", "", model.CaptureDisabled},
		{"ServiceAccount", "client", "bench", ""},
		{"ServiceAccount", "server", "bench", ""},
	}
	if len(docs) != len(want) {
		t.Fatalf("%d documents, want %d", len(docs), len(want))
	}
	for i, w := range want {
		var got struct {
			Kind     string
			Metadata struct {
				Name, Namespace string
				Labels          map[string]string
			}
		}
		if err := yaml.Unmarshal([]byte(docs[i]), &got); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, docs[i])
		}
		if got.Kind != w.kind || got.Metadata.Name != w.name || got.Metadata.Namespace != w.ns || got.Metadata.Labels[model.LabelCapture] != w.label {
			t.Errorf("document %d: %s %s/%s capture label %q, want %s %s/%s %q", i, got.Kind, got.Metadata.Namespace, got.Metadata.Name, got.Metadata.Labels[model.LabelCapture], w.kind, w.ns, w.name, w.label)
		}
	}
}
