package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// offloads are the ethtool features set on both ends of every veth. XDP
// will redirect into these veths: XDP_REDIRECT into a veth delivers only
// if the peer has GRO enabled (or an XDP program of its own), and packets
// with a partial checksum or GSO layout would be corrupted by XDP
// forwarding, so checksum offload and segmentation stay off.
var offloads = []string{"tx", "off", "tso", "off", "gso", "off", "gro", "on"}

// nodeSysctls are set in every node namespace, before its interfaces are
// created so that they inherit the "default" values.
var nodeSysctls = []string{
	"net.ipv4.ip_forward=1",
	"net.ipv4.conf.all.rp_filter=0",
	"net.ipv4.conf.default.rp_filter=0",
}

// Up builds the lab that cfg describes (zero fields take their defaults)
// and writes its state to <StateDir>/cluster.yaml. It first removes the
// leftovers of an earlier lab with the same prefix (see Cleanup), so a
// crashed run never blocks the next one. On failure it tears down what it
// built and returns an error naming the failed command and its standard
// error (a *CommandError in the chain). When Up returns, pods on different
// nodes reach each other through the nodes' kernel forwarding.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	if err := cleanup(cfg.Prefix, cfg.StateDir); err != nil {
		return nil, fmt.Errorf("lab up: remove leftovers of prefix %q: %w", cfg.Prefix, err)
	}
	l := plan(cfg)
	if err := l.build(ctx); err != nil {
		if cerr := cleanup(cfg.Prefix, cfg.StateDir); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tear down after failure: %w", cerr))
		}
		return nil, fmt.Errorf("lab up: %w", err)
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	if err := addNetns(ctx, l.FabricNetns); err != nil {
		return err
	}
	if err := ipn(ctx, l.FabricNetns, "link", "add", Bridge, "type", "bridge"); err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	if err := ipn(ctx, l.FabricNetns, "link", "set", Bridge, "up"); err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	if l.Manifests != "" {
		// The controller of a manifest lab (fibmesh-lab up --mesh) runs
		// in the fabric namespace, on the bridge's own address.
		if err := ipn(ctx, l.FabricNetns, "addr", "add", FabricControllerIP+"/24", "dev", Bridge); err != nil {
			return fmt.Errorf("fabric: %w", err)
		}
	}
	for _, n := range l.Nodes {
		if err := l.buildNode(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		for _, p := range n.Pods {
			if err := BuildPod(ctx, n, p); err != nil {
				return fmt.Errorf("%s: %w", p.Name, err)
			}
		}
	}
	for _, n := range l.Nodes {
		if err := l.routeNode(ctx, n); err != nil {
			return fmt.Errorf("%s: routes to other nodes: %w", n.Name, err)
		}
	}
	return writeState(l)
}

// addNetns creates a named namespace with lo up.
func addNetns(ctx context.Context, netns string) error {
	if err := ip(ctx, "netns", "add", netns); err != nil {
		return err
	}
	return ipn(ctx, netns, "link", "set", "lo", "up")
}

// setOffloads applies offloads to dev in netns.
func setOffloads(ctx context.Context, netns, dev string) error {
	return inNS(ctx, netns, "ethtool", append([]string{"-K", dev}, offloads...)...)
}

// buildNode creates the node namespace and its fabric veth: eth0 inside
// the node, n<i> on the fabric bridge.
func (l *Lab) buildNode(ctx context.Context, n *Node) error {
	if err := addNetns(ctx, n.Netns); err != nil {
		return err
	}
	if err := inNS(ctx, n.Netns, "sysctl", append([]string{"-q", "-w"}, nodeSysctls...)...); err != nil {
		return err
	}
	port := "n" + strconv.Itoa(n.Index)
	mtu := strconv.Itoa(NodeMTU)
	steps := [][]string{
		{"-n", l.FabricNetns, "link", "add", port, "mtu", mtu, "type", "veth", "peer", "name", n.NIC, "netns", n.Netns},
		{"-n", l.FabricNetns, "link", "set", port, "master", Bridge, "up"},
		{"-n", n.Netns, "link", "set", n.NIC, "address", n.MAC.String(), "mtu", mtu, "up"},
		{"-n", n.Netns, "addr", "add", fmt.Sprintf("%s/%d", n.IP, 24), "dev", n.NIC},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	if !fabricNet.Contains(n.IP) {
		// A Node whose InternalIP is off the fabric's subnet still
		// reaches the controller on the bridge, and it reaches the node.
		if err := ipn(ctx, n.Netns, "route", "add", FabricControllerIP, "dev", n.NIC); err != nil {
			return err
		}
		if err := ipn(ctx, l.FabricNetns, "route", "add", n.IP.String(), "dev", Bridge); err != nil {
			return err
		}
	}
	if err := setOffloads(ctx, l.FabricNetns, port); err != nil {
		return err
	}
	return setOffloads(ctx, n.Netns, n.NIC)
}

// BuildPod creates the pod namespace, its veth pair to the node n, and
// the routes and static neighbours on both sides: in the pod, a default
// route via 169.254.1.1 that resolves statically to the host veth's MAC;
// in the node, a /32 route to the pod's IP on the host veth with a static
// neighbour. On failure it leaves what it built; RemovePod takes it away.
func BuildPod(ctx context.Context, n *Node, p *Pod) error {
	if err := addNetns(ctx, p.Netns); err != nil {
		return err
	}
	mtu := strconv.Itoa(NodeMTU)
	podIP := p.IP.String() + "/32"
	steps := [][]string{
		{"-n", n.Netns, "link", "add", p.HostVeth, "mtu", mtu, "type", "veth", "peer", "name", p.IfName, "netns", p.Netns},
		{"-n", n.Netns, "link", "set", p.HostVeth, "address", p.HostMAC.String(), "up"},
		{"-n", p.Netns, "link", "set", p.IfName, "address", p.MAC.String(), "up"},
		{"-n", p.Netns, "addr", "add", podIP, "dev", p.IfName},
		{"-n", p.Netns, "route", "add", PodGateway, "dev", p.IfName, "scope", "link"},
		{"-n", p.Netns, "route", "add", "default", "via", PodGateway, "dev", p.IfName},
		{"-n", p.Netns, "neigh", "replace", PodGateway, "lladdr", p.HostMAC.String(), "dev", p.IfName, "nud", "permanent"},
		{"-n", n.Netns, "route", "add", podIP, "dev", p.HostVeth},
		{"-n", n.Netns, "neigh", "replace", p.IP.String(), "lladdr", p.MAC.String(), "dev", p.HostVeth, "nud", "permanent"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	if err := setOffloads(ctx, n.Netns, p.HostVeth); err != nil {
		return err
	}
	return setOffloads(ctx, p.Netns, p.IfName)
}

// routeNode adds, in n, a route and a static neighbour for every other
// node's pod CIDR.
func (l *Lab) routeNode(ctx context.Context, n *Node) error {
	for _, k := range l.Nodes {
		if k == n {
			continue
		}
		route := []string{"route", "add", k.PodCIDR.String(), "via", k.IP.String(), "dev", n.NIC}
		if !sameSubnet(n.IP, k.IP) {
			route = append(route, "onlink")
		}
		if err := ipn(ctx, n.Netns, route...); err != nil {
			return err
		}
		if err := ipn(ctx, n.Netns, "neigh", "replace", k.IP.String(), "lladdr", k.MAC.String(), "dev", n.NIC, "nud", "permanent"); err != nil {
			return err
		}
	}
	return nil
}

// FabricControllerIP is the fabric bridge's own address in a manifest
// lab, where fibmesh-lab up --mesh runs the controller.
const FabricControllerIP = "10.100.0.254"

// fabricNet is the subnet of the fabric: node i is 10.100.0.i.
var fabricNet = netip.MustParsePrefix("10.100.0.0/24")

func sameSubnet(a, b netip.Addr) bool {
	p, _ := a.Prefix(24)
	return p.Contains(b)
}

// RemovePod kills what still runs in the pod's network namespace and
// deletes it, and with it the veth pair and the node's route to the pod. It is idempotent: a pod that is
// already gone is not an error.
func RemovePod(ctx context.Context, p *Pod) error {
	if !NetnsExists(p.Netns) {
		return nil
	}
	// A process left in the namespace (one that daemonized out of its
	// container's group) would keep it, its veth and the node's route to
	// the pod alive after the name is gone.
	if err := killNetnsProcs(ctx, []string{p.Netns}); err != nil {
		return fmt.Errorf("remove pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	if err := ip(ctx, "netns", "del", p.Netns); err != nil && NetnsExists(p.Netns) {
		return fmt.Errorf("remove pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}
