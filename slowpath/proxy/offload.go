package proxy

import (
	"net/netip"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/splice"
)

// Offload configures the socket fast path: once an L4 tunnel connection
// (a tcp_proxy chain, no HTTP) is established and authorized, its TLS
// record layer is handed to the kernel (fastpath/ktls) and its bytes are
// moved between the app's socket and the tunnel's in the kernel
// (fastpath/splice); the XDP FIB gets flow entries for the tunnel's
// 5-tuple. Both agents of a connection decide alone, by the same rule, so
// nothing is signalled: one side that cannot offload stays in userspace
// and the other still can (kTLS and crypto/tls interoperate on the wire).
type Offload struct {
	// Disabled keeps every connection in userspace.
	Disabled bool
	// Mode is the byte path's engine; zero means splice.DefaultMode().
	Mode splice.Mode
	// Flows, if set, installs the XDP flow entries of each offloaded
	// connection and turns them to drop when it is revoked.
	Flows FlowTable
	// NICTLS, if set, reports whether the tunnel to peer (an endpoint
	// pod's IP) runs where both nodes' NICs offload kTLS record crypto
	// (mainline device offload: TLS 1.2 AES-128-GCM only). The client
	// then offers TLS 1.2 with AES-128-GCM alone; everyone else TLS 1.3.
	NICTLS func(peer netip.Addr) bool
	// LocalNICTLS, if set, reports whether this node's NIC offloads kTLS
	// record crypto: the tunnel port then also accepts TLS 1.2 with
	// AES-128-GCM (ECDHE), which only a client that NICTLS told so offers.
	LocalNICTLS func() bool
}

// FlowTable installs the XDP flow entries of offloaded connections (the
// agent's FIB; fastpath/fib is the only code that touches BPF maps).
type FlowTable interface {
	// Install adds forward entries for both directions of the tunnel's
	// 5-tuple (Local ↔ Remote, TCP), carrying the identities. Two
	// connections of the same node may install the same tuple (both ends
	// on one node): the table counts references.
	Install(f TunnelFlow) (FlowHandle, error)
}

// TunnelFlow is an offloaded connection's tunnel, as Install sees it.
type TunnelFlow struct {
	// ConnID and Pod name the connection in the proxy's table.
	ConnID uint64
	Pod    string
	// Local is this side's tunnel socket (the local pod's IP and port),
	// Remote the peer's: the client's pod IP:ephemeral port and the
	// server pod's IP:15008, one way or the other.
	Local, Remote netip.AddrPort
	// LocalIdentity and PeerIdentity are the SPIFFE IDs of both ends.
	LocalIdentity, PeerIdentity string
}

// FlowHandle is one connection's reference to its flow entries.
type FlowHandle interface {
	// Revoke turns the entry of the direction toward the local pod
	// (Remote → Local) to drop, so that no byte of the peer's reaches
	// the local pod any more; pushed is when the change that revoked the
	// connection arrived (the measure of revocation latency runs from it
	// to the first packet dropped). The other direction keeps
	// forwarding, so the resets the proxy sends reach the peer.
	Revoke(pushed time.Time) error
	// Counters returns the packets and bytes the XDP FIB counted for
	// the tunnel, both directions together.
	Counters() (packets, bytes uint64)
	// Release drops the connection's reference; the last one removes the
	// entries (a revoked connection's stay as drop entries for a grace
	// period, so that the peer's retransmissions are dropped too).
	Release()
}
