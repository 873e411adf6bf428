package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// Annotation keys written on the Node and Pod objects of cluster.yaml.
const (
	AnnotationNetns       = "fibmesh.io/netns"           // Node, Pod: network namespace
	AnnotationNIC         = "fibmesh.io/nic"             // Node: fabric-facing interface
	AnnotationNICMAC      = "fibmesh.io/nic-mac"         // Node: MAC of that interface
	AnnotationLabPrefix   = "fibmesh.io/lab-prefix"      // Node: Config.Prefix of the lab
	AnnotationLabFabric   = "fibmesh.io/lab-fabric"      // Node: the fabric namespace
	AnnotationManifests   = "fibmesh.io/lab-manifests"   // Node: the directory a manifest lab runs
	AnnotationHostVeth    = "fibmesh.io/host-veth"       // Pod: host side of the veth, in the node
	AnnotationHostVethMAC = "fibmesh.io/host-veth-mac"   // Pod: MAC of the host side
	AnnotationMAC         = "fibmesh.io/mac"             // Pod: MAC of the pod's interface
	AnnotationIfName      = "fibmesh.io/ifname"          // Pod: interface inside the pod
	LabelHostname         = "kubernetes.io/hostname"     // Node label
	placeholderImage      = "registry.k8s.io/pause:3.10" // the pods' only container
)

// ErrNoLab is wrapped by the error Load returns when no state file exists.
var ErrNoLab = errors.New("no lab is up")

// The types below are the subset of Kubernetes' core/v1 Node and Pod that
// the lab writes, with the same field names, so the file feeds the
// controller's file config store and kubectl-style tools unchanged.

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

type objectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type k8sNode struct {
	typeMeta
	Metadata objectMeta `json:"metadata"`
	Spec     nodeSpec   `json:"spec"`
	Status   nodeStatus `json:"status"`
}

type nodeSpec struct {
	PodCIDR  string   `json:"podCIDR"`
	PodCIDRs []string `json:"podCIDRs"`
}

type nodeStatus struct {
	Addresses []nodeAddress `json:"addresses"`
}

type nodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

type k8sPod struct {
	typeMeta
	Metadata objectMeta `json:"metadata"`
	Spec     podSpec    `json:"spec"`
	Status   podStatus  `json:"status"`
}

type podSpec struct {
	NodeName   string      `json:"nodeName"`
	Containers []container `json:"containers"`
}

type container struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

type podStatus struct {
	Phase  string  `json:"phase"`
	PodIP  string  `json:"podIP"`
	PodIPs []podIP `json:"podIPs"`
}

type podIP struct {
	IP string `json:"ip"`
}

// StatePath returns the path of the lab's state file.
func (l *Lab) StatePath() string { return filepath.Join(l.Config.StateDir, StateFile) }

// WriteState writes l as cluster.yaml in its state directory, atomically:
// Up does, and the lab's kubelet does whenever the pods of a manifest lab
// change, so that Load (exec, status) sees them.
func WriteState(l *Lab) error { return writeState(l) }

// writeState writes l as cluster.yaml in its state directory, atomically.
func writeState(l *Lab) error {
	data, err := marshalState(l)
	if err != nil {
		return err
	}
	dir := l.Config.StateDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".cluster-*.yaml")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), l.StatePath()); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// NodeAnnotations returns the fibmesh.io annotations that describe n in
// the lab l: its network namespace, NIC and MAC, the lab's prefix and
// fabric namespace, and (manifest labs) the directory it runs.
func NodeAnnotations(l *Lab, n *Node) map[string]string {
	a := map[string]string{
		AnnotationNetns:     n.Netns,
		AnnotationNIC:       n.NIC,
		AnnotationNICMAC:    n.MAC.String(),
		AnnotationLabPrefix: l.Config.Prefix,
		AnnotationLabFabric: l.FabricNetns,
	}
	if l.Manifests != "" {
		a[AnnotationManifests] = l.Manifests
	}
	return a
}

// PodAnnotations returns the fibmesh.io annotations that describe p: its
// network namespace, interface and MAC, and the host side of its veth.
func PodAnnotations(p *Pod) map[string]string {
	return map[string]string{
		AnnotationNetns:       p.Netns,
		AnnotationHostVeth:    p.HostVeth,
		AnnotationHostVethMAC: p.HostMAC.String(),
		AnnotationMAC:         p.MAC.String(),
		AnnotationIfName:      p.IfName,
	}
}

// marshalState renders l as multi-document YAML: every Node, then every Pod.
func marshalState(l *Lab) ([]byte, error) {
	var docs []any
	for _, n := range l.Nodes {
		docs = append(docs, k8sNode{
			typeMeta: typeMeta{APIVersion: "v1", Kind: "Node"},
			Metadata: objectMeta{
				Name:        n.Name,
				Labels:      map[string]string{LabelHostname: n.Name},
				Annotations: NodeAnnotations(l, n),
			},
			Spec:   nodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
			Status: nodeStatus{Addresses: []nodeAddress{{Type: "InternalIP", Address: n.IP.String()}}},
		})
	}
	for _, p := range l.Pods() {
		docs = append(docs, k8sPod{
			typeMeta: typeMeta{APIVersion: "v1", Kind: "Pod"},
			Metadata: objectMeta{
				Name:        p.Name,
				Namespace:   p.Namespace,
				Labels:      p.Labels,
				Annotations: PodAnnotations(p),
			},
			Spec: podSpec{NodeName: p.Node, Containers: []container{{Name: "app", Image: placeholderImage}}},
			Status: podStatus{
				Phase:  "Running",
				PodIP:  p.IP.String(),
				PodIPs: []podIP{{IP: p.IP.String()}},
			},
		})
	}
	var buf bytes.Buffer
	buf.WriteString("# Written by fibmesh lab.Up; read back by lab.Load. Do not edit.\n")
	for _, d := range docs {
		b, err := yaml.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("marshal state: %w", err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// Load reads the state that Up wrote to <stateDir>/cluster.yaml. The
// returned Lab equals the one Up returned. If no lab is up the error wraps
// ErrNoLab. Load does not check that the namespaces still exist (see
// NetnsExists).
func Load(stateDir string) (*Lab, error) {
	path := filepath.Join(stateDir, StateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (bring one up with fibmesh-lab up)", ErrNoLab, path)
	}
	if err != nil {
		return nil, fmt.Errorf("load lab: %w", err)
	}
	l, err := parseState(data, stateDir)
	if err != nil {
		return nil, fmt.Errorf("load lab from %s: %w", path, err)
	}
	return l, nil
}

// parseState turns cluster.yaml back into a Lab. Unknown fields are
// rejected.
func parseState(data []byte, stateDir string) (*Lab, error) {
	l := &Lab{Config: Config{StateDir: stateDir}}
	docs, err := yamldoc.Split(data)
	if err != nil {
		return nil, err
	}
	for _, d := range docs {
		i, doc := d.N-1, d.Raw
		var tm typeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		switch {
		case tm.APIVersion == "v1" && tm.Kind == "Node":
			var kn k8sNode
			if err := yamldoc.UnmarshalStrict(doc, &kn); err != nil {
				return nil, fmt.Errorf("document %d (Node): %w", i+1, err)
			}
			if err := l.addNode(&kn); err != nil {
				return nil, fmt.Errorf("document %d (Node %q): %w", i+1, kn.Metadata.Name, err)
			}
		case tm.APIVersion == "v1" && tm.Kind == "Pod":
			var kp k8sPod
			if err := yamldoc.UnmarshalStrict(doc, &kp); err != nil {
				return nil, fmt.Errorf("document %d (Pod): %w", i+1, err)
			}
			if err := l.addPod(&kp); err != nil {
				return nil, fmt.Errorf("document %d (Pod %q): %w", i+1, kp.Metadata.Name, err)
			}
		default:
			return nil, fmt.Errorf("document %d: apiVersion %q kind %q, want v1 Node or v1 Pod", i+1, tm.APIVersion, tm.Kind)
		}
	}
	if len(l.Nodes) == 0 {
		return nil, errors.New("no Node objects")
	}
	l.Config.Nodes = len(l.Nodes)
	if l.Manifests != "" {
		// A manifest lab runs whatever pods its manifests say.
		return l, nil
	}
	l.Config.PodsPerNode = len(l.Nodes[0].Pods)
	for _, n := range l.Nodes {
		if len(n.Pods) != l.Config.PodsPerNode {
			return nil, fmt.Errorf("node %q has %d pods and node %q has %d, want the same count on every node",
				n.Name, len(n.Pods), l.Nodes[0].Name, l.Config.PodsPerNode)
		}
	}
	return l, nil
}

func (l *Lab) addNode(kn *k8sNode) error {
	a := kn.Metadata.Annotations
	n := &Node{Name: kn.Metadata.Name, Netns: a[AnnotationNetns], NIC: a[AnnotationNIC]}
	if n.Name == "" || n.Netns == "" || n.NIC == "" {
		return fmt.Errorf("metadata.name, annotations %s and %s must be set", AnnotationNetns, AnnotationNIC)
	}
	if _, err := l.Node(n.Name); err == nil {
		return errors.New("duplicate node name")
	}
	prefix, fabric := a[AnnotationLabPrefix], a[AnnotationLabFabric]
	if err := validatePrefix(prefix); err != nil {
		return fmt.Errorf("annotation %s: %w", AnnotationLabPrefix, err)
	}
	if fabric == "" {
		return fmt.Errorf("annotation %s must be set", AnnotationLabFabric)
	}
	if len(l.Nodes) == 0 {
		l.Config.Prefix, l.FabricNetns, l.Manifests = prefix, fabric, a[AnnotationManifests]
	} else if prefix != l.Config.Prefix || fabric != l.FabricNetns {
		return fmt.Errorf("annotations %s=%q %s=%q differ from the first node's %q %q",
			AnnotationLabPrefix, prefix, AnnotationLabFabric, fabric, l.Config.Prefix, l.FabricNetns)
	}
	var err error
	if n.MAC, err = net.ParseMAC(a[AnnotationNICMAC]); err != nil || len(n.MAC) != 6 {
		return fmt.Errorf("annotation %s: %q is not a MAC address", AnnotationNICMAC, a[AnnotationNICMAC])
	}
	n.Index = int(n.MAC[4]) // 02:66:6d:00:<i>:00
	if n.PodCIDR, err = netip.ParsePrefix(kn.Spec.PodCIDR); err != nil {
		return fmt.Errorf("spec.podCIDR: %w", err)
	}
	for _, addr := range kn.Status.Addresses {
		if addr.Type == "InternalIP" {
			if n.IP, err = netip.ParseAddr(addr.Address); err != nil {
				return fmt.Errorf("status.addresses InternalIP: %w", err)
			}
		}
	}
	if !n.IP.IsValid() {
		return errors.New("status.addresses has no InternalIP")
	}
	l.Nodes = append(l.Nodes, n)
	return nil
}

func (l *Lab) addPod(kp *k8sPod) error {
	a := kp.Metadata.Annotations
	p := &Pod{
		Name:      kp.Metadata.Name,
		Namespace: kp.Metadata.Namespace,
		Labels:    kp.Metadata.Labels,
		Node:      kp.Spec.NodeName,
		Netns:     a[AnnotationNetns],
		HostVeth:  a[AnnotationHostVeth],
		IfName:    a[AnnotationIfName],
	}
	if p.Name == "" || p.Namespace == "" || p.Netns == "" || p.HostVeth == "" || p.IfName == "" {
		return fmt.Errorf("metadata.name, metadata.namespace, annotations %s, %s and %s must be set",
			AnnotationNetns, AnnotationHostVeth, AnnotationIfName)
	}
	if _, err := l.Pod(p.Namespace + "/" + p.Name); err == nil {
		return errors.New("duplicate pod name")
	}
	n, err := l.Node(p.Node)
	if err != nil {
		return fmt.Errorf("spec.nodeName: %w (Nodes must come before Pods)", err)
	}
	if p.IP, err = netip.ParseAddr(kp.Status.PodIP); err != nil {
		return fmt.Errorf("status.podIP: %w", err)
	}
	if p.MAC, err = net.ParseMAC(a[AnnotationMAC]); err != nil {
		return fmt.Errorf("annotation %s: %w", AnnotationMAC, err)
	}
	if p.HostMAC, err = net.ParseMAC(a[AnnotationHostVethMAC]); err != nil {
		return fmt.Errorf("annotation %s: %w", AnnotationHostVethMAC, err)
	}
	n.Pods = append(n.Pods, p)
	return nil
}
