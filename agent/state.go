package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Cluster is the part of the cluster the agent needs to compute its
// node's routes: Nodes and Pods. Until the controller serves FDS (the flow
// table over xDS), the agent reads it from Kubernetes-shaped YAML, the
// format `fibmesh-lab up` writes.
type Cluster struct {
	Nodes []corev1.Node
	Pods  []corev1.Pod
}

// LoadCluster reads a multi-document YAML file of v1 Node and Pod objects.
// Other kinds are reported, not ignored: the file is for routes only.
func LoadCluster(path string) (*Cluster, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", err)
	}
	return ParseCluster(path, b)
}

// ParseCluster parses what LoadCluster reads; name is used in errors.
func ParseCluster(name string, b []byte) (*Cluster, error) {
	c := &Cluster{}
	r := utilyaml.NewYAMLReader(bufioReader(b))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || isComment(raw) {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
		if meta.APIVersion != "v1" {
			return nil, fmt.Errorf("%s: document %d (%s): apiVersion %q: want v1", name, doc, meta.Kind, meta.APIVersion)
		}
		switch meta.Kind {
		case "Node":
			var n corev1.Node
			if err := yaml.UnmarshalStrict(raw, &n); err != nil {
				return nil, fmt.Errorf("%s: document %d (Node): %w", name, doc, err)
			}
			c.Nodes = append(c.Nodes, n)
		case "Pod":
			var p corev1.Pod
			if err := yaml.UnmarshalStrict(raw, &p); err != nil {
				return nil, fmt.Errorf("%s: document %d (Pod): %w", name, doc, err)
			}
			c.Pods = append(c.Pods, p)
		default:
			return nil, fmt.Errorf("%s: document %d: kind %q: the cluster state holds only Node and Pod", name, doc, meta.Kind)
		}
	}
	return c, nil
}

func isComment(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// RouteIntent is a route before the agent resolves it against the local
// kernel: packets to Prefix leave through Dev towards the neighbour Via.
type RouteIntent struct {
	Prefix netip.Prefix
	Dev    string
	Via    netip.Addr
	// Pod is the local pod this route delivers to ("" for remote routes).
	Pod string
}

// Annotations the agent reads.
const (
	AnnotationHostVeth = "fibmesh.io/host-veth" // Pod: host side of its veth
	AnnotationNIC      = "fibmesh.io/nic"       // Node: its fabric interface
)

// Routes computes node's routes: each local pod's IP via its host veth,
// and each other node's pod CIDRs via that node's InternalIP out of nic.
// It is the RIB -> FIB step the controller takes over with FDS.
func (c *Cluster) Routes(node, nic string) ([]RouteIntent, error) {
	var self *corev1.Node
	for i := range c.Nodes {
		if c.Nodes[i].Name == node {
			self = &c.Nodes[i]
		}
	}
	if self == nil {
		return nil, fmt.Errorf("node %q is not in the cluster state (have %s)", node, nodeNames(c.Nodes))
	}
	var out []RouteIntent
	for _, p := range c.Pods {
		if p.Spec.NodeName != node || p.Status.PodIP == "" {
			continue
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: status.podIP %q: %w", p.Namespace, p.Name, p.Status.PodIP, err)
		}
		dev := p.Annotations[AnnotationHostVeth]
		if dev == "" {
			return nil, fmt.Errorf("pod %s/%s: annotation %s is missing: the agent cannot tell which veth reaches the pod", p.Namespace, p.Name, AnnotationHostVeth)
		}
		out = append(out, RouteIntent{Prefix: netip.PrefixFrom(ip, 32), Dev: dev, Via: ip, Pod: p.Namespace + "/" + p.Name})
	}
	for _, n := range c.Nodes {
		if n.Name == node {
			continue
		}
		via, err := internalIP(n)
		if err != nil {
			return nil, err
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, s := range cidrs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("node %s: spec.podCIDRs %q: %w", n.Name, s, err)
			}
			if !p.Addr().Is4() {
				continue // the FIB routes IPv4; IPv6 stays with the kernel
			}
			out = append(out, RouteIntent{Prefix: p.Masked(), Dev: nic, Via: via})
		}
	}
	return out, nil
}

func internalIP(n corev1.Node) (netip.Addr, error) {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip, err := netip.ParseAddr(a.Address)
			if err != nil {
				return netip.Addr{}, fmt.Errorf("node %s: status.addresses InternalIP %q: %w", n.Name, a.Address, err)
			}
			if ip.Is4() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("node %s: no IPv4 InternalIP in status.addresses", n.Name)
}

func nodeNames(ns []corev1.Node) string {
	var names []string
	for _, n := range ns {
		names = append(names, n.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
