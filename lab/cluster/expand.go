package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/rand"
)

// fieldError is an error about one field of a workload.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

func fieldOf(err error) string {
	var fe *fieldError
	if errors.As(err, &fe) {
		return fe.field
	}
	return ""
}

// PodTemplateHash returns the pod-template-hash of a Deployment's
// template: a hash of the template, written in Kubernetes' safe alphabet
// (no vowels, no 0/1/3), so that a changed template makes a ReplicaSet,
// and pods, of new names, and an unchanged one keeps them. Kubernetes
// hashes its own printing of the object; this hashes its JSON: same
// properties, other values.
func PodTemplateHash(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t) // a typed struct: cannot fail
	h := fnv.New32a()
	h.Write(b)
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// podSuffix returns the five-character suffix of a workload's pod i:
// random in Kubernetes (generateName), derived from the owner and index
// here so that the pods keep their names when the lab restarts.
func podSuffix(owner string, i int) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s#%d", owner, i)
	s := rand.SafeEncodeString(fmt.Sprintf("%010d", h.Sum32()))
	return s[len(s)-5:]
}

// DeploymentPods returns the pods a Deployment runs once rolled out: those
// of its ReplicaSet "<deployment>-<pod-template-hash>", named
// "<replicaset>-<suffix>", labelled with the template's labels and
// pod-template-hash. The error names the field when the Deployment is
// one the apiserver would refuse.
func DeploymentPods(d *appsv1.Deployment) ([]*corev1.Pod, error) {
	if err := checkSelector(d.Spec.Selector, d.Spec.Template.Labels); err != nil {
		return nil, err
	}
	hash := PodTemplateHash(&d.Spec.Template)
	rs := &appsv1.ReplicaSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      d.Name + "-" + hash,
			Namespace: d.Namespace,
			Labels:    withLabel(d.Spec.Template.Labels, LabelPodTemplateHash, hash),
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: d.Spec.Replicas,
			Selector: d.Spec.Selector,
			Template: *d.Spec.Template.DeepCopy(),
		},
	}
	rs.Spec.Template.Labels = withLabel(d.Spec.Template.Labels, LabelPodTemplateHash, hash)
	return ReplicaSetPods(rs)
}

// ReplicaSetPods returns the spec.replicas (default 1) pods of a
// ReplicaSet, named "<replicaset>-<suffix>" with a suffix stable for each
// replica index.
func ReplicaSetPods(rs *appsv1.ReplicaSet) ([]*corev1.Pod, error) {
	if err := checkSelector(rs.Spec.Selector, rs.Spec.Template.Labels); err != nil {
		return nil, err
	}
	n := int32(1)
	if rs.Spec.Replicas != nil {
		n = *rs.Spec.Replicas
	}
	if n < 0 {
		return nil, &fieldError{"spec.replicas", fmt.Errorf("is %d: want 0 or more", n)}
	}
	if len(rs.Spec.Template.Spec.Containers) == 0 {
		return nil, &fieldError{"spec.template.spec.containers", errors.New("is empty: want at least one container")}
	}
	owner := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name,
		Controller: ptr(true), BlockOwnerDeletion: ptr(true)}}
	pods := make([]*corev1.Pod, 0, n)
	for i := range int(n) {
		t := rs.Spec.Template.DeepCopy()
		pods = append(pods, &corev1.Pod{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{
				Name:            rs.Name + "-" + podSuffix(Key(rs.Namespace, rs.Name), i),
				Namespace:       rs.Namespace,
				Labels:          t.Labels,
				Annotations:     t.Annotations,
				OwnerReferences: owner,
			},
			Spec: t.Spec,
		})
	}
	return pods, nil
}

// checkSelector refuses what the apiserver refuses: no selector, or one
// that does not select the template's labels.
func checkSelector(sel *metav1.LabelSelector, tmpl map[string]string) error {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return &fieldError{"spec.selector", errors.New("is required: write matchLabels that match spec.template.metadata.labels")}
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return &fieldError{"spec.selector", err}
	}
	if !s.Matches(labels.Set(tmpl)) {
		return &fieldError{"spec.template.metadata.labels", fmt.Errorf("%v do not match spec.selector %s: make them agree", tmpl, s)}
	}
	return nil
}

func withLabel(m map[string]string, k, v string) map[string]string {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	out[k] = v
	return out
}

func ptr[T any](v T) *T { return &v }
