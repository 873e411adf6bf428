package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// auto is the value of --nic and --dns-upstream that asks the agent to
// find them on the node.
const auto = "auto"

// autoNIC finds the node's fabric interface: the one holding nodeIP when
// it is valid (in a DaemonSet, the pod's status.hostIP, which is the
// node's InternalIP), else the one of the IPv4 default route.
func autoNIC(nodeIP netip.Addr) (string, error) {
	if nodeIP.IsValid() {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return "", fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == nodeIP.Unmap() {
				l, err := netlink.LinkByIndex(a.LinkIndex)
				if err != nil {
					return "", fmt.Errorf("the interface holding %s (index %d): %w", nodeIP, a.LinkIndex, err)
				}
				return l.Attrs().Name, nil
			}
		}
		return "", fmt.Errorf("no interface on this host holds --node-ip %s: is the agent in the host's network namespace (hostNetwork: true)? Or name the interface with --nic", nodeIP)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.LinkIndex > 0 {
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("the default route's interface (index %d): %w", r.LinkIndex, err)
			}
			return l.Attrs().Name, nil
		}
	}
	return "", errors.New("no IPv4 default route on this host to find the fabric interface by: pass --node-ip (the node's InternalIP) or name the interface with --nic")
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// autoDNS returns the first nameserver of the resolv.conf at path, port
// 53. In a hostNetwork pod with dnsPolicy ClusterFirstWithHostNet, the
// kubelet writes the cluster DNS Service's address there.
func autoDNS(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--dns-upstream=auto reads the first nameserver of %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(fields[1])
		if err != nil {
			return "", fmt.Errorf("%s: nameserver %q is not an IP address", path, fields[1])
		}
		return netip.AddrPortFrom(ip.WithZone(""), 53).String(), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return "", fmt.Errorf("--dns-upstream=auto: %s lists no nameserver; name the cluster DNS with --dns-upstream HOST:PORT", path)
}

// removeProbes deletes the kubelet probe table from the node's network
// namespace (--cleanup).
func removeProbes() error {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer f.Close()
	return capture.SetProbePods(int(f.Fd()), nil)
}
