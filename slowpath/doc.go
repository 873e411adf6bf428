// Package slowpath holds what the agent's userspace proxy and the pod
// capture agree on: the ports the agent listens on inside every captured
// pod's network namespace, the socket mark its own sockets carry so that
// capture lets them through, and the tunnel's ALPN. The proxy is
// slowpath/proxy, the capture rules slowpath/capture, the DNS proxy
// slowpath/dns, the compiled xDS config slowpath/xdsconf.
package slowpath

// Ports inside a captured pod's network namespace (Istio's numbers).
const (
	// OutboundPort receives the pod's outbound TCP (nftables redirect).
	OutboundPort = 15001
	// InboundPlaintextPort receives inbound plaintext TCP to the pod's
	// ports (nftables redirect); only PERMISSIVE and DISABLE ports have a
	// filter chain there, so plaintext to a STRICT port is refused.
	InboundPlaintextPort = 15006
	// TunnelPort is the mTLS tunnel between agents: TLS 1.3, ALPN
	// TunnelALPN, a PROXY protocol v2 header, then the stream. It is not
	// redirected: the agent listens on it in the pod's namespace.
	TunnelPort = 15008
	// DNSPort receives the pod's DNS queries (UDP and TCP to port 53).
	DNSPort = 15053
)

// Mark is the socket mark (SO_MARK) of every socket the agent opens in a
// pod's namespace: capture skips marked packets, so the agent's own
// connections (the tunnel, the connection to the app, DNS upstream) are
// not captured again. 0x539 (1337) is Istio's.
const Mark = 0x539

// TunnelALPN is the ALPN protocol of the tunnel that carries one TCP
// stream (L4, and HTTP upgrades); a handshake without it or
// TunnelALPNHTTP2 is refused.
const TunnelALPN = "fibmesh/1"

// TunnelALPNHTTP2 is the ALPN protocol of the pooled HTTP tunnel: TLS 1.3,
// a PROXY protocol v2 header (the calling pod's IP, the endpoint pod's
// IP:port), then HTTP/2 carrying every request of one pod to that
// endpoint, one stream each (L7 ports, whatever protocol the app spoke).
const TunnelALPNHTTP2 = "fibmesh-h2/1"

// Kubelet probes. The kubelet probes a pod from the node, in plaintext: to
// a STRICT port, that would be refused like any plaintext client. So the
// agent source-NATs TCP that processes in the node's own network
// namespace open to a captured pod (the kubelet's probes, among them) to
// ProbeSourceV4 or ProbeSourceV6 (table ProbeTable there), and capture
// lets TCP from those addresses reach the pod's app as it is. They are
// Istio's (ambient mode does the same). Nothing outside the node can use
// them: the XDP FIB drops plaintext to STRICT ports from any interface,
// and the node's own stack is the only path into a pod that bypasses it.
const (
	ProbeSourceV4 = "169.254.7.127"
	ProbeSourceV6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"
)
