package agent

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// probes keeps the node's probe table (capture.SetProbePods): TCP that
// the node itself opens to a captured pod, the kubelet's probes, reaches
// the pod's app in plaintext, even on a STRICT port, as with Istio.
type probes struct {
	node *os.File              // the node's network namespace (the agent's own)
	pods map[string]netip.Addr // captured pods' IPs, by namespace/name
}

// newProbes opens the calling thread's network namespace, which must be
// the node's (the agent's, before any setns).
func newProbes() (*probes, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open the node's network namespace: %w", err)
	}
	return &probes{node: f, pods: map[string]netip.Addr{}}, nil
}

// set records pod key's IP (or, invalid, its removal) and rewrites the
// table when that changes what it holds. Callers serialize (pathMu).
func (p *probes) set(key string, ip netip.Addr) error {
	if old, ok := p.pods[key]; ok == ip.IsValid() && old == ip {
		return nil
	}
	if ip.IsValid() {
		p.pods[key] = ip
	} else {
		delete(p.pods, key)
	}
	ips := slices.Collect(maps.Values(p.pods))
	if err := capture.SetProbePods(int(p.node.Fd()), ips); err != nil {
		return fmt.Errorf("kubelet probe table (%d pods): %w", len(ips), err)
	}
	return nil
}

func (p *probes) close() error { return p.node.Close() }

// podAddr is the first global unicast IPv4 address in the network
// namespace ns refers to: the one the primary CNI plugin gave the pod.
func podAddr(ns *os.File) (netip.Addr, error) {
	var ip netip.Addr
	err := netns.Do(int(ns.Fd()), "pod netns", func() error {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			if v, ok := netip.AddrFromSlice(a.IP); ok && v.Unmap().IsGlobalUnicast() {
				ip = v.Unmap()
				return nil
			}
		}
		return errors.New("no IPv4 address but loopback")
	})
	return ip, err
}
