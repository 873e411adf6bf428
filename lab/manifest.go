package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/fibmesh/fibmesh/lab/cluster"
)

// maxPodNetnsName bounds the part of a pod's network namespace name that
// comes from its Kubernetes name, so names stay short enough to type.
const maxPodNetnsName = 16

// UpNodes builds a lab for a directory of manifests (fibmesh-lab up -f
// DIR): the fabric, with FabricControllerIP on its bridge, and the given
// nodes, each with its NIC, IP and routes to the others' pod CIDRs, but
// no pods: the lab's kubelet (package kubelet) adds them with BuildPod as
// it runs the manifests. Only cfg.Prefix and cfg.StateDir count. Like Up
// it first removes the leftovers of a lab with the same prefix, tears
// down what it built on failure, and writes <StateDir>/cluster.yaml.
func UpNodes(ctx context.Context, cfg Config, dir string, nodes []cluster.NodePlan) (*Lab, error) {
	cfg = cfg.WithDefaults()
	if err := validatePrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%w: no nodes", ErrInvalidConfig)
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: no manifest directory", ErrInvalidConfig)
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	if err := cleanup(cfg.Prefix, cfg.StateDir); err != nil {
		return nil, fmt.Errorf("lab up: remove leftovers of prefix %q: %w", cfg.Prefix, err)
	}
	cfg.Nodes, cfg.PodsPerNode = len(nodes), 0
	l := &Lab{Config: cfg, Manifests: dir, FabricNetns: cfg.Prefix + "fabric"}
	for _, np := range nodes {
		if np.Index < 1 || np.Index > 253 {
			return nil, fmt.Errorf("%w: node %s has index %d, want 1..253", ErrInvalidConfig, np.Name, np.Index)
		}
		l.Nodes = append(l.Nodes, &Node{
			Name:    np.Name,
			Index:   np.Index,
			Netns:   cfg.Prefix + np.Name,
			NIC:     NodeNIC,
			IP:      np.InternalIP,
			MAC:     net.HardwareAddr{0x02, 0x66, 0x6d, 0x00, byte(np.Index), 0x00},
			PodCIDR: np.PodCIDR,
		})
	}
	if err := l.build(ctx); err != nil {
		if cerr := cleanup(cfg.Prefix, cfg.StateDir); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tear down after failure: %w", cerr))
		}
		return nil, fmt.Errorf("lab up: %w", err)
	}
	return l, nil
}

// NewPod describes (without building it) the pod namespace/name with IP
// ip on node n of the lab whose namespace prefix is prefix: network
// namespace PodNetns, host veth HostVethName, MACs made from the IP
// (02:66:<ip> in the pod, 02:68:<ip> on the host side).
func NewPod(prefix string, n *Node, namespace, name string, ip netip.Addr, labels map[string]string) *Pod {
	b := ip.As4()
	return &Pod{
		Name:      name,
		Namespace: namespace,
		Labels:    labels,
		Node:      n.Name,
		Netns:     PodNetns(prefix, namespace, name),
		HostVeth:  HostVethName(namespace, name),
		IfName:    PodIfName,
		IP:        ip,
		MAC:       net.HardwareAddr{0x02, 0x66, b[0], b[1], b[2], b[3]},
		HostMAC:   net.HardwareAddr{0x02, 0x68, b[0], b[1], b[2], b[3]},
	}
}

// PodNetns returns the network namespace of pod namespace/name in a lab
// with the given prefix: the prefix, the pod's name cut to 16
// characters, and 6 hex digits of a hash of namespace/name, so names are
// short, valid and distinct across namespaces
// ("fm-reviews-v1-7c9d-3fa2b1").
func PodNetns(prefix, namespace, name string) string {
	short := strings.Trim(name[:min(len(name), maxPodNetnsName)], "-.")
	return prefix + short + "-" + podHash(namespace, name)[:6]
}

// HostVethName returns the host side of the pod's veth: "fmv" and 12 hex
// digits of a hash of namespace/name, 15 characters (IFNAMSIZ-1).
func HostVethName(namespace, name string) string {
	return "fmv" + podHash(namespace, name)[:12]
}

func podHash(namespace, name string) string {
	h := sha256.Sum256([]byte(namespace + "/" + name))
	return hex.EncodeToString(h[:])
}
