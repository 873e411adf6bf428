package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// Manifests is what a directory of manifests says, after decoding and
// workload expansion, before scheduling.
type Manifests struct {
	// Dir is the directory the manifests were read from.
	Dir string
	// Nodes are the kind: Node objects, in name order.
	Nodes []*corev1.Node
	// Pods are the kind: Pod objects and the pods of every Deployment and
	// ReplicaSet, in namespace/name order. Their spec is as written
	// (spec.nodeName may be empty) and their status is what the manifest
	// says (usually nothing).
	Pods []*corev1.Pod
	// Services are the kind: Service objects, in namespace/name order.
	Services []*corev1.Service
	// Others are every other object, kept as the user wrote it
	// (Namespaces, ServiceAccounts, the Istio kinds, user-written
	// EndpointSlices, Deployments, kinds fibmesh does not consume): the
	// apiserver reports them unchanged.
	Others []Doc
	// Sources names where each pod came from (by Key): its file and
	// document, and the workload for expanded pods.
	Sources map[string]string
	// Errors are the objects left out, one error each (a
	// *config.DecodeError or an *ObjectError): the rest of the directory
	// still counts.
	Errors []error
}

// Doc is one object as the user wrote it.
type Doc struct {
	Group, Kind     string
	Namespace, Name string
	Source          string
	// YAML is the document: the user's bytes when the object was a
	// document of its own, else (an item of a kind: List) the decoded
	// object marshalled again.
	YAML []byte
}

// Load reads every manifest under dir as controller/config's LoadDir
// does (the same files, the same strict decoding), expands Deployments
// and ReplicaSets into Pods and sorts the result. Objects that cannot be
// decoded or make no sense are in Manifests.Errors and left out. The
// error is for a directory that cannot be used at all (missing, not a
// directory, no YAML in it).
func Load(dir string) (*Manifests, error) {
	snap, err := config.LoadDir(dir)
	if snap == nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	m := &Manifests{Dir: dir, Sources: map[string]string{}}
	if err != nil {
		leaves := flatten(err)
		for _, e := range leaves {
			if errors.Is(e, config.ErrUnusable) && len(snap.Resources) == 0 && len(snap.Skipped) == 0 {
				return nil, fmt.Errorf("read manifests: %w", err)
			}
		}
		m.Errors = append(m.Errors, leaves...)
	}
	docs := docCache{}
	for _, r := range snap.Resources {
		switch o := r.Object.(type) {
		case *corev1.Node:
			m.Nodes = append(m.Nodes, o)
		case *corev1.Pod:
			m.Pods = append(m.Pods, o)
			m.Sources[PodKey(o)] = r.Source.String()
		case *corev1.Service:
			m.Services = append(m.Services, o)
		default:
			m.Others = append(m.Others, docs.doc(r))
		}
	}
	for _, r := range snap.Skipped {
		if r.GVK.Group == "apps" && (r.GVK.Kind == "Deployment" || r.GVK.Kind == "ReplicaSet") {
			pods, err := m.expand(r, docs)
			if err != nil {
				m.Errors = append(m.Errors, err)
				continue
			}
			m.Pods = append(m.Pods, pods...)
		}
		m.Others = append(m.Others, docs.doc(r))
	}
	// Two workloads may make pods of the same name (a Pod and a
	// ReplicaSet's pod): the first in order stays, as the apiserver
	// would refuse the second.
	slices.SortStableFunc(m.Pods, func(a, b *corev1.Pod) int { return strings.Compare(PodKey(a), PodKey(b)) })
	m.Pods = slices.CompactFunc(m.Pods, func(a, b *corev1.Pod) bool {
		if PodKey(a) != PodKey(b) {
			return false
		}
		m.Errors = append(m.Errors, &ObjectError{Source: m.Sources[PodKey(b)], Kind: "Pod", Key: PodKey(b),
			Field: "metadata.name", Err: errors.New("a pod of this name already exists: rename one")})
		return true
	})
	slices.SortFunc(m.Nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(m.Services, func(a, b *corev1.Service) int {
		return strings.Compare(Key(a.Namespace, a.Name), Key(b.Namespace, b.Name))
	})
	return m, nil
}

// flatten splits an errors.Join tree into its leaves.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// docCache holds the documents of the files read so far, by number, split
// as config.DecodeFile splits them (yamldoc.Split), so that document n of
// a Source is the document config numbered n.
type docCache map[string]map[int][]byte

func (c docCache) raw(src config.Source) []byte {
	docs, ok := c[src.File]
	if !ok {
		if data, err := os.ReadFile(src.File); err == nil {
			// A tail that cannot be read was reported by config.
			split, _ := yamldoc.Split(data)
			docs = map[int][]byte{}
			for _, d := range split {
				docs[d.N] = d.Raw
			}
		}
		c[src.File] = docs
	}
	return docs[src.Doc]
}

// doc returns r as the user wrote it.
func (c docCache) doc(r config.Resource) Doc {
	d := Doc{Group: r.GVK.Group, Kind: r.GVK.Kind, Namespace: r.Namespace, Name: r.Name, Source: r.Source.String()}
	raw := c.raw(r.Source)
	var h struct {
		Kind string `json:"kind"`
	}
	if raw != nil && yaml.Unmarshal(raw, &h) == nil && h.Kind == r.GVK.Kind {
		d.YAML = bytes.TrimLeft(raw, "\n")
		return d
	}
	if r.Object != nil { // an item of a List
		if b, err := yaml.Marshal(r.Object); err == nil {
			d.YAML = b
		}
	}
	return d
}

// decodeStrict decodes one document into obj as the apiserver would
// (yamldoc.UnmarshalStrict: case-sensitive, unknown and duplicate fields
// rejected). The error is a
// *config.DecodeError naming the field.
func decodeStrict(r config.Resource, raw []byte, obj any) error {
	de := func(field string, err error) error {
		return &config.DecodeError{Source: r.Source, Kind: r.GVK.Kind, Namespace: r.Namespace, Name: r.Name, Field: field, Err: err}
	}
	if raw == nil {
		return de("", errors.New("document not found (the file changed while it was read; it is read again on the next change)"))
	}
	if err := yamldoc.UnmarshalStrict(raw, obj); err != nil {
		if fe, ok := errors.AsType[*yamldoc.FieldError](err); ok {
			return de(fe.Field, fe.Err)
		}
		return de("", err)
	}
	return nil
}

// expand decodes a Deployment or ReplicaSet and returns its pods.
func (m *Manifests) expand(r config.Resource, docs docCache) ([]*corev1.Pod, error) {
	raw := docs.raw(r.Source)
	oe := func(field string, err error) error {
		return &ObjectError{Source: r.Source.String(), Kind: r.GVK.Kind, Key: Key(r.Namespace, r.Name), Field: field, Err: err}
	}
	switch r.GVK.Kind {
	case "Deployment":
		if r.GVK.Version != "v1" {
			return nil, oe("apiVersion", fmt.Errorf("apps/%s is not served: use apps/v1", r.GVK.Version))
		}
		var d appsv1.Deployment
		if err := decodeStrict(r, raw, &d); err != nil {
			return nil, err
		}
		if d.Namespace == "" {
			d.Namespace = "default"
		}
		pods, err := DeploymentPods(&d)
		if err != nil {
			return nil, oe(fieldOf(err), err)
		}
		for _, p := range pods {
			m.Sources[PodKey(p)] = fmt.Sprintf("%s (Deployment %s)", r.Source, Key(d.Namespace, d.Name))
		}
		return pods, nil
	default:
		if r.GVK.Version != "v1" {
			return nil, oe("apiVersion", fmt.Errorf("apps/%s is not served: use apps/v1", r.GVK.Version))
		}
		var rs appsv1.ReplicaSet
		if err := decodeStrict(r, raw, &rs); err != nil {
			return nil, err
		}
		if rs.Namespace == "" {
			rs.Namespace = "default"
		}
		pods, err := ReplicaSetPods(&rs)
		if err != nil {
			return nil, oe(fieldOf(err), err)
		}
		for _, p := range pods {
			m.Sources[PodKey(p)] = fmt.Sprintf("%s (ReplicaSet %s)", r.Source, Key(rs.Namespace, rs.Name))
		}
		return pods, nil
	}
}
