// Package proxy is the agent's userspace L4 proxy: for every captured pod
// it listens inside the pod's network namespace on the outbound port
// (15001), the inbound plaintext port (15006) and the mTLS tunnel port
// (15008) of package slowpath, and relays TCP streams as the compiled xDS
// config (slowpath/xdsconf) says.
//
// Outbound, a connection the capture redirected to 15001 is matched by its
// original destination against the outbound listener's filter chains; the
// chain names a cluster, the cluster an endpoint, and the proxy opens a
// tunnel to that endpoint's pod: TLS 1.3 to pod IP:15008 with ALPN
// fibmesh/1 and the source pod's SVID, the server's SPIFFE ID checked
// against the trust bundle and the cluster's SANs, then a PROXY protocol
// v2 header naming the original source and destination, then the bytes.
// A destination outside the mesh follows the default chain (passthrough,
// a plaintext connection to the original destination) or is refused.
//
// Inbound, the tunnel port requires TLS 1.3, the ALPN, and a client
// certificate that chains to the trust bundle and names a SPIFFE ID of the
// trust domain; it reads the PROXY header under the handshake deadline,
// accepts only a destination that is one of the pod's own IPs, matches the
// inbound listener's chain, evaluates its RBAC with the peer's SPIFFE ID
// and connects to the app. The plaintext port does the same without TLS
// for the ports that have a chain there (PERMISSIVE, DISABLE): STRICT
// ports have none, so plaintext to them is refused.
//
// Every socket the proxy opens in a pod's namespace carries slowpath.Mark
// (capture lets it through) and the pod's IP as its source. Bytes are
// copied both ways with half-close, reset propagation and an idle timeout;
// Connections lists what is in flight and Collectors exports the counters.
//
// The handshakes go through fastpath/ktls, so that an established L4
// tunnel connection can leave userspace (offload.go): where the kernel has
// kTLS, its record layer is handed to the kernel, fastpath/splice joins it
// to the app's socket, and Config.Offload.Flows installs its XDP flow
// entries; elsewhere it is relayed as above, with the reason in its row.
// Reevaluate (revoke.go) checks every established L4 connection against a
// new config and resets those it no longer allows.
package proxy
