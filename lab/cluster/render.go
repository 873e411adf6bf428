package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// View is the cluster as a kube-apiserver reports it.
type View struct {
	Nodes          []*corev1.Node
	Pods           []*corev1.Pod // scheduled and pending
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice // derived ones
	Others         []Doc                        // as the user wrote them
}

// NodeObject returns the Node a kubelet would register for n: labels
// kubernetes.io/hostname and kubernetes.io/os plus those of its
// manifest, spec.podCIDR(s), the InternalIP and Hostname addresses, the
// Ready condition, and the given annotations.
func NodeObject(n NodePlan, annotations map[string]string) *corev1.Node {
	return &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: maps.Clone(n.Labels), Annotations: maps.Clone(annotations)},
		Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.InternalIP.String()},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}},
		},
	}
}

// Render returns the files of v: one YAML document per object, named
// "<kind>_<namespace>_<name>.yaml" (kinds outside the core group as
// "<kind>.<group>"; cluster-scoped objects with an empty namespace).
func Render(v *View) (map[string][]byte, error) {
	files := map[string][]byte{}
	add := func(group, kind, ns, name string, data []byte) {
		k := strings.ToLower(kind)
		if group != "" {
			k += "." + group
		}
		files[k+"_"+ns+"_"+name+".yaml"] = data
	}
	enc := func(group, kind, ns, name string, obj any) error {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return fmt.Errorf("render %s %s: %w", kind, Key(ns, name), err)
		}
		add(group, kind, ns, name, b)
		return nil
	}
	for _, n := range v.Nodes {
		if err := enc("", "Node", "", n.Name, n); err != nil {
			return nil, err
		}
	}
	for _, p := range v.Pods {
		q := p.DeepCopy()
		q.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		if err := enc("", "Pod", p.Namespace, p.Name, q); err != nil {
			return nil, err
		}
	}
	for _, s := range v.Services {
		q := s.DeepCopy()
		q.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
		if err := enc("", "Service", s.Namespace, s.Name, q); err != nil {
			return nil, err
		}
	}
	for _, s := range v.EndpointSlices {
		if err := enc("discovery.k8s.io", "EndpointSlice", s.Namespace, s.Name, s); err != nil {
			return nil, err
		}
	}
	for _, d := range v.Others {
		if d.YAML != nil {
			add(d.Group, d.Kind, d.Namespace, d.Name, d.YAML)
		}
	}
	return files, nil
}

// WriteDir makes dir hold exactly files (by name, *.yaml): files whose
// content changed are written to a temporary dotfile and renamed over
// the old one (a reader never sees half a file, and controller/config
// skips dotfiles), unchanged ones are not touched, and *.yaml files not
// in files are removed. It returns how many files it wrote or removed.
func WriteDir(dir string, files map[string][]byte) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("cluster view: %w", err)
	}
	old, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return 0, fmt.Errorf("cluster view: %w", err)
	}
	changed := 0
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(files)) {
		path := filepath.Join(dir, name)
		if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, files[name]) {
			continue
		}
		if err := writeAtomic(path, files[name]); err != nil {
			errs = append(errs, err)
			continue
		}
		changed++
	}
	for _, path := range old {
		if _, keep := files[filepath.Base(path)]; keep {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cluster view: %w", err))
			continue
		}
		changed++
	}
	return changed, errors.Join(errs...)
}

// writeAtomic writes data to path through a temporary dotfile and a
// rename.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteFile writes data to path atomically (temporary dotfile, rename).
func WriteFile(path string, data []byte) error { return writeAtomic(path, data) }
