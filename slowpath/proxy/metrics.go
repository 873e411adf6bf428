package proxy

import "github.com/prometheus/client_golang/prometheus"

// Results of connections_total.
const (
	resultEstablished = "established" // relayed through the mesh (tunnel, plaintext cluster, app)
	resultPassthrough = "passthrough" // relayed to a destination outside the mesh
	resultRefused     = "refused"     // refused_total says why
	resultDenied      = "denied"      // rbac_denied_total says by which policy
)

// Reasons of fibmesh_agent_proxy_refused_total{listener,reason}, also
// an Event's Reason and a closed ConnInfo's. Every refusal has one.
const (
	ReasonAborted        = "aborted"             // cut by RemovePod or Close during setup
	ReasonOverload       = "overload"            // more than MaxPendingHandshakes pending in the pod
	ReasonNoConfig       = "no-config"           // no snapshot yet
	ReasonNoOriginalDst  = "no-original-dst"     // SO_ORIGINAL_DST failed, or pointed at the proxy itself
	ReasonNoChain        = "no-chain"            // no listener or no matching chain (STRICT port on 15006; a tunnel chain without TLS)
	ReasonPassthroughOff = "passthrough-refused" // outside the mesh and no default chain (REGISTRY_ONLY)
	ReasonNoCluster      = "no-cluster"          // the chain's cluster is unknown
	ReasonNoEndpoint     = "no-endpoint"         // the cluster has no healthy endpoint
	ReasonOverflow       = "overflow"            // the cluster's max_connections from this pod are in use
	ReasonUpstream       = "upstream"            // every endpoint tried failed to connect or handshake
	ReasonHandshake      = "handshake"           // TLS handshake failed otherwise (garbage, timeout, version)
	ReasonNoClientCert   = "no-client-cert"      // the client sent no certificate
	ReasonBadTrustDomain = "bad-trust-domain"    // the peer's SPIFFE ID is of another trust domain
	ReasonBadCertificate = "bad-certificate"     // no SPIFFE ID, or no chain to the bundle
	ReasonALPN           = "alpn"                // the client did not offer fibmesh/1
	ReasonProxyHeader    = "proxy-header"        // missing, malformed, truncated or slow PROXY header
	ReasonBadDestination = "bad-destination"     // the PROXY/original destination is not this pod's app
	ReasonUpstreamApp    = "app-connect"         // the local app refused the connection
	ReasonOffloadFailed  = "offload-failed"      // the kernel took part of an offload, then failed: the connection was reset
)

type metrics struct {
	conns   *prometheus.CounterVec
	active  *prometheus.GaugeVec
	bytes   *prometheus.CounterVec
	denied  *prometheus.CounterVec
	refused *prometheus.CounterVec

	// L7.
	requests  *prometheus.CounterVec
	overflow  *prometheus.CounterVec
	faults    *prometheus.CounterVec
	retries   prometheus.Counter
	timeouts  prometheus.Counter
	ejections prometheus.Counter
	// httpErrors counts net/http's reports (EventHTTPError).
	httpErrors prometheus.Counter

	// Offload.
	offloadDecisions *prometheus.CounterVec
	offloaded        *prometheus.GaugeVec
	offloadedBytes   *prometheus.CounterVec
	revoked          *prometheus.CounterVec
	flowErrors       prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_connections_total",
			Help: "Connections the proxy accepted, by direction (outbound, inbound) and result (established, passthrough, refused, denied).",
		}, []string{"direction", "result"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fibmesh_agent_proxy_active_connections",
			Help: "Connections the proxy relays now, by direction.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_bytes_total",
			Help: "Bytes relayed, both ways, by the connection's direction (outbound, inbound), counted as they flow.",
		}, []string{"direction"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_rbac_denied_total",
			Help: "Connections closed by network RBAC and HTTP requests answered 403 by HTTP RBAC, by the deciding policy (default-deny when no ALLOW policy matched).",
		}, []string{"policy"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_refused_total",
			Help: "Connections refused before being relayed, by listener (outbound, inbound, inbound-plaintext) and reason.",
		}, []string{"listener", "reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_http_requests_total",
			Help: "HTTP requests on L7 ports, by direction (outbound: the pod called; inbound: it was called), the status sent to the client (0: the stream was reset) and Envoy's response flags (\"-\": none; UT timeout, UO overflow, UF connect failure, UH no healthy upstream, NR no route, NC no cluster, FI fault abort, DI fault delay, URX retries exhausted, UR reset, RBAC denied).",
		}, []string{"direction", "code", "flags"}),
		overflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_http_overflow_total",
			Help: "Requests refused by a cluster's circuit breaker (503, x-envoy-overloaded), by kind: pending (http1MaxPendingRequests), requests (http2MaxRequests), connections (maxConnections), retries (maxRetries: the retry was not made).",
		}, []string{"kind"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_http_faults_total",
			Help: "Faults injected by VirtualService fault rules, by kind (delay, abort).",
		}, []string{"kind"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_http_retries_total",
			Help: "Retries made by route retry policies.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_http_timeouts_total",
			Help: "Requests that ran past their route's timeout or their last per-try timeout (504, flag UT).",
		}),
		httpErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_http_server_errors_total",
			Help: "Errors net/http reported on L7 connections (HTTP/2 protocol errors, recovered panics); the agent logs them, sampled.",
		}),
		ejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_http_outlier_ejections_total",
			Help: "Endpoints ejected by outlier detection (consecutive 5xx), from one pod's view.",
		}),
		offloadDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_offload_decisions_total",
			Help: "Established L4 tunnel connections by where their bytes went: splice or sockmap (kTLS and the kernel byte path), userspace (no kTLS, offload off, or the kernel refused this one; fibctl conns says why).",
		}, []string{"mode"}),
		offloaded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fibmesh_agent_proxy_offloaded_connections",
			Help: "Connections whose bytes the kernel moves now, by byte path (splice, sockmap).",
		}, []string{"mode"}),
		offloadedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_offloaded_bytes_total",
			Help: "Bytes the kernel moved for offloaded connections, both ways, from the byte path's counters (read every second and at the end); also in fibmesh_agent_proxy_bytes_total.",
		}, []string{"mode"}),
		revoked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_revocations_total",
			Help: "Established L4 connections a config change no longer allowed, reset on both sides, by reason (rbac, no-chain, no-cluster, endpoint-removed) and where their bytes were (offloaded, userspace).",
		}, []string{"reason", "where"}),
		flowErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fibmesh_agent_proxy_offload_flow_errors_total",
			Help: "XDP flow entries of offloaded connections that could not be installed or turned to drop (the connection itself was not affected).",
		}),
	}
}

// Collectors returns the proxy's metrics for the agent to register:
// fibmesh_agent_proxy_connections_total{direction,result},
// fibmesh_agent_proxy_active_connections{direction},
// fibmesh_agent_proxy_bytes_total{direction},
// fibmesh_agent_proxy_rbac_denied_total{policy},
// fibmesh_agent_proxy_refused_total{listener,reason}, and at L7
// fibmesh_agent_proxy_http_requests_total{direction,code,flags},
// fibmesh_agent_proxy_http_overflow_total{kind},
// fibmesh_agent_proxy_http_faults_total{kind},
// fibmesh_agent_proxy_http_retries_total,
// fibmesh_agent_proxy_http_timeouts_total,
// fibmesh_agent_proxy_http_outlier_ejections_total and
// fibmesh_agent_proxy_http_server_errors_total; for the offload
// fibmesh_agent_proxy_offload_decisions_total{mode},
// fibmesh_agent_proxy_offloaded_connections{mode},
// fibmesh_agent_proxy_offloaded_bytes_total{mode},
// fibmesh_agent_proxy_revocations_total{reason,where} and
// fibmesh_agent_proxy_offload_flow_errors_total.
func (p *Proxy) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.m.conns, p.m.active, p.m.bytes, p.m.denied, p.m.refused,
		p.m.requests, p.m.overflow, p.m.faults, p.m.retries, p.m.timeouts, p.m.ejections, p.m.httpErrors,
		p.m.offloadDecisions, p.m.offloaded, p.m.offloadedBytes, p.m.revoked, p.m.flowErrors}
}
