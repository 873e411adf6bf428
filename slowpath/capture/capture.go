// Package capture writes the nftables rules that capture a pod's traffic
// into the agent, inside the pod's network namespace: one inet table
// (TableName, IPv4 and IPv6) with two NAT chains.
//
// The output chain sees what the pod's apps send. Packets carrying the
// agent's socket mark (slowpath.Mark) are left alone, so the agent's own
// connections (the tunnel, the connection to the app, DNS upstream) are
// not captured again. DNS (UDP and TCP to port 53, when Config.DNS is set)
// is redirected to slowpath.DNSPort, to loopback servers too. Then
// loopback traffic (out through lo, or to 127.0.0.0/8 or ::1) is left
// alone, and every other TCP connection is redirected to
// slowpath.OutboundPort. Other UDP and ICMP are not touched.
//
// The prerouting chain sees what arrives from outside the pod: TCP to
// slowpath.TunnelPort is accepted as it is (the agent listens there), and
// every other TCP connection is redirected to slowpath.InboundPlaintextPort,
// but for TCP from the probe sources (slowpath.ProbeSourceV4/V6: the node's
// own connections, the kubelet's probes, which SetProbePods source-NATs in
// the node's namespace), which reaches the app as it is.
// With DNS capture, UDP from outside to slowpath.DNSPort is dropped: the
// DNS server answers the pod only, never the world (TCP to it is
// redirected like any other port, and refused there).
//
// Redirected connections keep their original destination, which the agent
// reads with OriginalDst (TCP only: the kernel has no SO_ORIGINAL_DST for
// UDP). A redirect of the pod's own packets goes to 127.0.0.1 or ::1, an
// incoming one to the receiving interface's address, so TCP listeners can
// listen on the wildcard address; the DNS server's UDP sockets must be
// bound to 127.0.0.1 and ::1 (port DNSPort): an answer sent from a
// wildcard socket leaves from the pod's address, conntrack does not match
// it to the query, and the app never sees it. The rules are fail-closed: they stay when the
// agent is gone, so a captured connection finds nothing listening on the
// redirect port and is refused (RST) instead of reaching its destination
// in plaintext. Install replaces the table in one netlink batch (one
// nftables transaction), so an agent that restarts and installs again
// never opens a window without rules; Remove deletes the table when the
// pod goes away.
//
// The rules Install writes, as nft(8) would list them for the default
// Config with DNS (mark 0x539, ports 15001/15006/15008/15053):
//
//	table inet fibmesh {
//	  chain output {
//	    type nat hook output priority dstnat; policy accept;
//	    meta mark 0x539 counter accept
//	    udp dport 53 counter redirect to :15053
//	    tcp dport 53 counter redirect to :15053
//	    oif lo counter accept
//	    ip daddr 127.0.0.0/8 counter accept
//	    ip6 daddr ::1 counter accept
//	    tcp dport <each ExcludeOutboundPorts> counter accept
//	    meta l4proto tcp counter redirect to :15001
//	  }
//	  chain prerouting {
//	    type nat hook prerouting priority dstnat; policy accept;
//	    iif lo counter accept
//	    tcp dport 15008 counter accept
//	    udp dport 15053 counter drop
//	    tcp dport <each ExcludeInboundPorts> counter accept
//	    ip saddr 169.254.7.127 meta l4proto tcp counter accept
//	    ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff meta l4proto tcp counter accept
//	    meta l4proto tcp counter redirect to :15006
//	  }
//	}
//
// NAT chains see only the first packet of each connection (conntrack
// applies the verdict to the rest), so the rules cost nothing per packet
// of an established connection.
package capture

import (
	"fmt"

	"github.com/fibmesh/fibmesh/slowpath"
)

// TableName is the name of the inet table Install writes in each pod's
// network namespace. Nothing else in the namespace is touched.
const TableName = "fibmesh"

// Chain names in TableName.
const (
	OutputChain     = "output"
	PreroutingChain = "prerouting"
)

// MaxExcludedPorts bounds each of Config's exclusion lists: each port is
// one rule, evaluated once per new connection.
const MaxExcludedPorts = 256

// Config says what Install captures. The zero value captures TCP both ways
// with slowpath's mark and ports, and not DNS.
type Config struct {
	// Mark is the socket mark (SO_MARK) of the agent's own sockets;
	// packets whose mark equals it (all 32 bits) are never redirected. 0
	// means slowpath.Mark.
	Mark uint32
	// OutboundPort, InboundPlaintextPort, TunnelPort and DNSPort are the
	// agent's ports in the pod's namespace; 0 means slowpath's.
	OutboundPort, InboundPlaintextPort, TunnelPort, DNSPort uint16
	// DNS redirects the pod's DNS (UDP and TCP to port 53, any address,
	// loopback included) to DNSPort. Without it UDP 53 is left alone and
	// TCP 53 is captured like any other outbound TCP.
	DNS bool
	// ExcludeInboundPorts are pod ports whose inbound TCP is not captured:
	// connections from outside reach the app directly, in plaintext and
	// without authorization (for operators: health checks from a node
	// that is not in the mesh, say). At most MaxExcludedPorts.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports whose outbound TCP is not
	// captured: the app's connections leave the pod as they are (for
	// operators: a database outside the mesh reached in its own TLS, say).
	// DNS is not affected (turn DNS off instead). At most MaxExcludedPorts.
	ExcludeOutboundPorts []uint16
}

// withDefaults returns cfg with its zero fields set to slowpath's values,
// or an error naming the field that is wrong and how to fix it.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Mark == 0 {
		cfg.Mark = slowpath.Mark
	}
	for _, p := range []struct {
		v   *uint16
		def uint16
	}{
		{&cfg.OutboundPort, slowpath.OutboundPort},
		{&cfg.InboundPlaintextPort, slowpath.InboundPlaintextPort},
		{&cfg.TunnelPort, slowpath.TunnelPort},
		{&cfg.DNSPort, slowpath.DNSPort},
	} {
		if *p.v == 0 {
			*p.v = p.def
		}
	}
	ports := map[uint16]string{}
	for _, p := range []struct {
		name string
		v    uint16
	}{
		{"OutboundPort", cfg.OutboundPort},
		{"InboundPlaintextPort", cfg.InboundPlaintextPort},
		{"TunnelPort", cfg.TunnelPort},
		{"DNSPort", cfg.DNSPort},
	} {
		if other, dup := ports[p.v]; dup {
			return cfg, fmt.Errorf("capture config: %s and %s are both %d: give each agent port its own number", other, p.name, p.v)
		}
		ports[p.v] = p.name
	}
	if cfg.DNSPort == 53 && cfg.DNS {
		return cfg, fmt.Errorf("capture config: DNSPort is 53, the port DNS capture redirects from: pick another port (default %d)", slowpath.DNSPort)
	}
	for _, l := range []struct {
		name  string
		ports []uint16
	}{
		{"ExcludeInboundPorts", cfg.ExcludeInboundPorts},
		{"ExcludeOutboundPorts", cfg.ExcludeOutboundPorts},
	} {
		if len(l.ports) > MaxExcludedPorts {
			return cfg, fmt.Errorf("capture config: %s has %d ports, more than %d: exclude fewer ports", l.name, len(l.ports), MaxExcludedPorts)
		}
		for i, p := range l.ports {
			if p == 0 {
				return cfg, fmt.Errorf("capture config: %s[%d] is 0: give a TCP port from 1 to 65535", l.name, i)
			}
		}
	}
	return cfg, nil
}
