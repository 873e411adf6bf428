// Package lab builds a network-namespace test bed shaped like a small
// Kubernetes cluster: nodes joined by a bridged fabric, pods wired to their
// node with veth pairs, and routes so that pods reach each other across
// nodes through the kernel's own forwarding. fibmesh's integration tests,
// the demo and perf run on it.
//
// Everything lives in network namespaces named with a prefix (default
// "fm-"); nothing is created in the root namespace. The topology, for node
// i and pod j (both from 1) and prefix P:
//
//	P+"fabric"         bridge br0, one port n<i> per node
//	P+"node<i>"        eth0 10.100.0.<i>/24, MAC 02:66:6d:00:<i>:00,
//	                   p<j> (host side of pod j, MAC 02:66:6d:<i>:<j>:01, no IP),
//	                   routes 10.200.<k>.0/24 via 10.100.0.<k> for every other node k
//	P+"node<i>-pod<j>" eth0 10.200.<i>.<10+j>/32, MAC 02:66:6d:<i>:<j>:02,
//	                   default via 169.254.1.1 (the host veth, static neighbour)
//
// Up writes the cluster as Kubernetes-shaped YAML (kind Node and kind Pod)
// to <StateDir>/cluster.yaml; Load reads it back. The package shells out to
// iproute2 (ip), ethtool and nsenter, and needs root.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
)

// Fixed names and addresses of the topology.
const (
	// Bridge is the bridge in the fabric namespace that joins the nodes.
	Bridge = "br0"
	// NodeNIC is the name of every node's fabric-facing interface.
	NodeNIC = "eth0"
	// PodIfName is the name of the interface inside every pod.
	PodIfName = "eth0"
	// PodNamespace is the Kubernetes namespace of every pod.
	PodNamespace = "default"
	// PodGateway is the link-local next hop of every pod's default route;
	// it resolves (statically) to the MAC of the pod's host-side veth.
	PodGateway = "169.254.1.1"
	// NodeMTU is the MTU of every interface the lab creates.
	NodeMTU = 1500
	// StateFile is the name of the state file inside Config.StateDir.
	StateFile = "cluster.yaml"
)

// ErrNotFound is wrapped by the errors of the Lab lookup methods.
var ErrNotFound = errors.New("not found in lab")

// Lab is a cluster built by Up or UpNodes, or read back by Load.
type Lab struct {
	// Config is the configuration the lab was built with, defaults applied.
	Config Config
	// Manifests is the directory of manifests the lab runs (fibmesh-lab up
	// -f DIR), empty for the numbered layout.
	Manifests string
	// FabricNetns is the namespace holding the bridge that joins the nodes.
	FabricNetns string
	// Nodes are the nodes in index order (node1 first).
	Nodes []*Node
}

// Node is one node of the lab: a network namespace with a NIC on the fabric
// and one veth per pod.
type Node struct {
	Name    string           // "node<i>", or the name of a kind: Node
	Index   int              // i: names the fabric port n<i> and the MAC
	Netns   string           // Prefix + "node<i>"
	NIC     string           // fabric-facing interface in Netns, "eth0"
	IP      netip.Addr       // 10.100.0.<i> (or the Node's InternalIP), on NIC with a /24
	MAC     net.HardwareAddr // MAC of NIC, 02:66:6d:00:<i>:00
	PodCIDR netip.Prefix     // 10.200.<i>.0/24
	Pods    []*Pod           // the node's pods in index order
}

// Pod is one pod of the lab: a network namespace with one interface whose
// veth peer sits in the node's namespace.
type Pod struct {
	Name      string            // "node<i>-pod<j>", or the manifest's pod name
	Namespace string            // Kubernetes namespace, "default" in the numbered layout
	Labels    map[string]string // app=<Name> in the numbered layout
	Node      string            // name of the node the pod runs on
	Netns     string            // Prefix + Name
	HostVeth  string            // host side of the pod's veth, in the node's Netns: "p<j>"
	IfName    string            // interface inside the pod, "eth0"
	IP        netip.Addr        // 10.200.<i>.<10+j>, on IfName with a /32
	MAC       net.HardwareAddr  // MAC of IfName, 02:66:6d:<i>:<j>:02
	HostMAC   net.HardwareAddr  // MAC of HostVeth, 02:66:6d:<i>:<j>:01
}

// plan computes the lab that cfg describes without touching the system.
// cfg must be valid and have its defaults applied.
func plan(cfg Config) *Lab {
	l := &Lab{Config: cfg, FabricNetns: cfg.Prefix + "fabric"}
	for i := 1; i <= cfg.Nodes; i++ {
		n := &Node{
			Index:   i,
			Name:    fmt.Sprintf("node%d", i),
			Netns:   fmt.Sprintf("%snode%d", cfg.Prefix, i),
			NIC:     NodeNIC,
			IP:      netip.AddrFrom4([4]byte{10, 100, 0, byte(i)}),
			MAC:     net.HardwareAddr{0x02, 0x66, 0x6d, 0x00, byte(i), 0x00},
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i), 0}), 24),
		}
		for j := 1; j <= cfg.PodsPerNode; j++ {
			name := fmt.Sprintf("node%d-pod%d", i, j)
			n.Pods = append(n.Pods, &Pod{
				Name:      name,
				Namespace: PodNamespace,
				Labels:    map[string]string{"app": name},
				Node:      n.Name,
				Netns:     cfg.Prefix + name,
				HostVeth:  fmt.Sprintf("p%d", j),
				IfName:    PodIfName,
				IP:        netip.AddrFrom4([4]byte{10, 200, byte(i), byte(10 + j)}),
				MAC:       net.HardwareAddr{0x02, 0x66, 0x6d, byte(i), byte(j), 0x02},
				HostMAC:   net.HardwareAddr{0x02, 0x66, 0x6d, byte(i), byte(j), 0x01},
			})
		}
		l.Nodes = append(l.Nodes, n)
	}
	return l
}

// Node returns the node with the given name ("node1"). The error wraps
// ErrNotFound if there is none.
func (l *Lab) Node(name string) (*Node, error) {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("node %q: %w", name, ErrNotFound)
}

// ErrAmbiguous is wrapped by the error of Pod when a bare name matches
// pods in several Kubernetes namespaces.
var ErrAmbiguous = errors.New("ambiguous")

// Pod returns the pod that ref names: "NAMESPACE/NAME", or "NAME" when
// exactly one pod has that name ("node1-pod2" in the numbered layout),
// or, as kubectl exec takes it, "[NAMESPACE/]deploy/NAME": the first pod
// of Deployment NAME (named NAME-<template hash>-<suffix>).
// The error wraps ErrNotFound if there is none and ErrAmbiguous if a bare
// name is in several namespaces (it lists them).
func (l *Lab) Pod(ref string) (*Pod, error) {
	if i := strings.Index(ref, "deploy/"); i == 0 || i > 0 && ref[i-1] == '/' {
		ns := strings.TrimSuffix(ref[:i], "/")
		d := ref[i+len("deploy/"):]
		for _, n := range l.Nodes {
			for _, p := range n.Pods {
				rest, ok := strings.CutPrefix(p.Name, d+"-")
				if ok && strings.Count(rest, "-") == 1 && (ns == "" || p.Namespace == ns) {
					return p, nil
				}
			}
		}
		return nil, fmt.Errorf("pod of deployment %q: %w", ref, ErrNotFound)
	}
	ns, name, qualified := strings.Cut(ref, "/")
	if !qualified {
		ns, name = "", ref
	}
	var found []*Pod
	for _, n := range l.Nodes {
		for _, p := range n.Pods {
			if p.Name == name && (!qualified || p.Namespace == ns) {
				found = append(found, p)
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("pod %q: %w", ref, ErrNotFound)
	}
	var refs []string
	for _, p := range found {
		refs = append(refs, p.Namespace+"/"+p.Name)
	}
	return nil, fmt.Errorf("pod %q: %w: it is %s; write NAMESPACE/NAME", ref, ErrAmbiguous, strings.Join(refs, " and "))
}

// Pods returns every pod of the lab, node by node, in index order.
func (l *Lab) Pods() []*Pod {
	var pods []*Pod
	for _, n := range l.Nodes {
		pods = append(pods, n.Pods...)
	}
	return pods
}

// Netns returns the network namespace of the node or pod with the given
// name (a pod as Pod takes it), or of the fabric for "fabric". The error wraps ErrNotFound if no
// such name exists.
func (l *Lab) Netns(name string) (string, error) {
	if name == "fabric" {
		return l.FabricNetns, nil
	}
	if n, err := l.Node(name); err == nil {
		return n.Netns, nil
	}
	p, err := l.Pod(name)
	if err == nil {
		return p.Netns, nil
	}
	if errors.Is(err, ErrAmbiguous) {
		return "", err
	}
	return "", fmt.Errorf("no node, pod or fabric named %q: %w", name, ErrNotFound)
}

// Namespaces returns the name of every network namespace of the lab:
// fabric, then each node followed by its pods.
func (l *Lab) Namespaces() []string {
	ns := []string{l.FabricNetns}
	for _, n := range l.Nodes {
		ns = append(ns, n.Netns)
		for _, p := range n.Pods {
			ns = append(ns, p.Netns)
		}
	}
	return ns
}

// Command returns a command that runs name with args inside the network
// namespace netns (any namespace, not only the lab's), through
// "nsenter --net=/run/netns/<netns> --". Only the network namespace
// changes: unlike "ip netns exec", nsenter does not remount /sys, so
// /sys/fs/bpf and its pinned maps stay visible to the program. ctx kills
// the command as in exec.CommandContext.
func (l *Lab) Command(ctx context.Context, netns string, name string, args ...string) *exec.Cmd {
	return nsCommand(ctx, netns, name, args...)
}

func nsCommand(ctx context.Context, netns string, name string, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + NetnsPath(netns), "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", argv...)
}
