package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"

	"github.com/fibmesh/fibmesh/slowpath/capture"
	"github.com/fibmesh/fibmesh/slowpath/proxyproto"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// Defaults of a Config.
const (
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultIdleTimeout          = time.Hour // Envoy's tcp_proxy default
	DefaultConnectTimeout       = 10 * time.Second
	DefaultMaxPendingHandshakes = 256
	// DefaultMaxConcurrentDials bounds the threads connects hold (Go's
	// limit is 10,000 threads per process).
	DefaultMaxConcurrentDials = 1024
	// MaxProxyHeader bounds the PROXY header the tunnel port reads:
	// the fixed part, an IPv6 address block and the calling agent's
	// workload metadata (a proxyproto.TypeWorkload TLV of at most
	// maxPeerMeta bytes).
	MaxProxyHeader = proxyproto.FixedLength + proxyproto.IPv6Length + proxyproto.TLVHeaderLength + maxPeerMeta
	// connectRetries is how many more endpoints an outbound connection
	// tries after a failed connect.
	connectRetries = 2
)

// Pod is a captured pod the proxy serves.
type Pod struct {
	Namespace, Name string
	// Netns is the pod's network namespace (a /proc/PID/ns/net or
	// /run/netns file). AddPod duplicates the descriptor: the caller may
	// close its file afterwards.
	Netns *os.File
	// IPs are the pod's addresses: the sources of the proxy's sockets in
	// the namespace and the only destinations the tunnel port accepts.
	IPs []netip.Addr
}

func (p Pod) key() string { return p.Namespace + "/" + p.Name }

// Config configures a Proxy. Snapshot, Certificate, TrustBundle and
// TrustDomain are required.
type Config struct {
	// Snapshot returns the current compiled config (xdsconf.Store's
	// Snapshot); nil while none has arrived: every connection is then
	// refused (reason "no-config").
	Snapshot func() *xdsconf.Snapshot
	// Certificate returns the pod's current SVID, called at every
	// handshake so a rotation is picked up; id is its SPIFFE ID.
	Certificate func(namespace, pod string) (cert *tls.Certificate, id spiffeid.ID, err error)
	// TrustBundle returns the mesh's current roots (SDS ROOTCA).
	TrustBundle func() []*x509.Certificate
	// TrustDomain is the mesh's trust domain: a peer SPIFFE ID from
	// another is refused (reason "bad-trust-domain").
	TrustDomain spiffeid.TrustDomain
	// HandshakeTimeout bounds the inbound TLS handshake and PROXY header
	// and the outbound tunnel handshake (default DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection with no bytes either way for that
	// long, unless its tcp_proxy sets its own (default
	// DefaultIdleTimeout).
	IdleTimeout time.Duration
	// ConnectTimeout is for clusters without connect_timeout and
	// passthrough (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// MaxPendingHandshakes bounds, per pod, the connections accepted but
	// not yet established (handshake, PROXY header, upstream connect);
	// more are closed at once (reason "overload"). Default
	// DefaultMaxPendingHandshakes.
	MaxPendingHandshakes int
	// MaxConcurrentDials bounds the connects in progress across all pods
	// (each holds an OS thread inside the pod's namespace until it
	// connects); beyond it a connection is refused (reason "overload").
	// Default DefaultMaxConcurrentDials.
	MaxConcurrentDials int
	// OriginalDestination returns where a redirected connection was
	// going (default: slowpath/capture.OriginalDst, SO_ORIGINAL_DST from
	// conntrack). listener is slowpath.OutboundPort or
	// InboundPlaintextPort. Tests without nftables inject it.
	OriginalDestination func(c *net.TCPConn, pod Pod, listener int) (netip.AddrPort, error)
	// MeshPod, if set, says whether ip is a pod in the mesh and which
	// identity it has (the agent: FDS host routes' identity ids). An
	// outbound connection to such a pod's IP that no chain claims (a
	// headless Service, a pod without a Service) is tunnelled, and the
	// peer must present exactly that identity.
	MeshPod func(ip netip.Addr) (spiffeid.ID, bool)
	// Events, if set, is called for refusals, denials, established and
	// closed connections (synchronously: keep it quick). The proxy does
	// not log.
	Events func(Event)
	// Requests, if set, is called when an HTTP request on an L7 port
	// ends (synchronously, on the request's goroutine: keep it quick):
	// an access log's source.
	Requests func(RequestInfo)
	// Tracer, if set, returns the tracer of a pod's spans (called per
	// request: keep it quick; nil: none): a CLIENT span per outbound and
	// a SERVER span per inbound HTTP request, continuing the request's
	// W3C or B3 trace context and propagating it (trace.go). Its sampler
	// should honour SamplingDecision. Unset: no spans, trace headers
	// passed as they came.
	Tracer func(namespace, pod string) trace.Tracer
	// Workload, if set, says which workload a pod is (its controller,
	// app and version labels, cluster), called once when the pod is
	// added: the metadata its HTTP requests' peers learn (hdrPeer), that
	// its L4 tunnels carry to the called agent (a PROXY header TLV,
	// Event.PeerWorkload there) and RequestInfo.Workload. Unset: only
	// the namespace is known.
	Workload func(namespace, pod string) WorkloadMeta
	// Offload configures the socket fast path (offload.go); the zero
	// value offloads where the kernel has kTLS, with no flow entries.
	Offload Offload
}

func (c *Config) setDefaults() error {
	var missing []string
	if c.Snapshot == nil {
		missing = append(missing, "Snapshot")
	}
	if c.Certificate == nil {
		missing = append(missing, "Certificate")
	}
	if c.TrustBundle == nil {
		missing = append(missing, "TrustBundle")
	}
	if c.TrustDomain.IsZero() {
		missing = append(missing, "TrustDomain")
	}
	if len(missing) > 0 {
		return fmt.Errorf("proxy: config: %v not set", missing)
	}
	if c.HandshakeTimeout < 0 || c.IdleTimeout < 0 || c.ConnectTimeout < 0 || c.MaxPendingHandshakes < 0 {
		return errors.New("proxy: config: HandshakeTimeout, IdleTimeout, ConnectTimeout and MaxPendingHandshakes must not be negative")
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxPendingHandshakes == 0 {
		c.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	if c.MaxConcurrentDials <= 0 {
		c.MaxConcurrentDials = DefaultMaxConcurrentDials
	}
	if c.OriginalDestination == nil {
		c.OriginalDestination = func(c *net.TCPConn, _ Pod, _ int) (netip.AddrPort, error) { return capture.OriginalDst(c) }
	}
	return nil
}

// Event is something that happened to a connection, for the Events hook.
type Event struct {
	Kind EventKind
	// Conn is the connection as the table shows it.
	Conn ConnInfo
	// PeerWorkload is what the peer's agent said of its workload:
	// inbound on an L4 tunnel, the calling pod's, from the tunnel's
	// PROXY header (a proxyproto.TypeWorkload TLV). Zero when it said
	// nothing (an agent older than the TLV, plaintext, outbound: the
	// PROXY header goes one way only), or something malformed or of
	// another namespace than the peer's SPIFFE ID.
	PeerWorkload WorkloadMeta
	// EndpointWorkload is what EDS says of the workload of the endpoint
	// an outbound connection went to (Istio's endpoint metadata,
	// xdsconf.Endpoint.Workload): what names the destination workload
	// on the caller, where the PROXY header says nothing back. Zero
	// inbound, before an endpoint is picked, and when the endpoint's
	// metadata says none.
	EndpointWorkload WorkloadMeta
	// Reason is the refusal reason (the refused_total label) or the
	// denying policy.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

// EventKind says what an Event is.
type EventKind string

// Event kinds.
const (
	EventRefused     EventKind = "refused"     // closed before being relayed: Reason says why
	EventDenied      EventKind = "denied"      // RBAC denied it: Reason is the policy
	EventEstablished EventKind = "established" // bytes flow
	EventClosed      EventKind = "closed"      // an established connection ended
	// EventRevoked: a config change no longer allows an established
	// connection (Reevaluate); Reason says why. Its EventClosed follows.
	EventRevoked EventKind = "revoked"
	// EventHTTPError is net/http's report about an L7 connection (a
	// protocol error, a recovered panic): Err has its text.
	EventHTTPError EventKind = "http-error"
)
