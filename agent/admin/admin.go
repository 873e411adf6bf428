// Package admin is the agent's admin API, served on 127.0.0.1:15000 in
// the node's network namespace (fibctl config dump and fibctl certs read
// it):
//
//	GET /config_dump[?type=FDS]  what the agent accepted from the controller, per xDS type (Envoy-style)
//	GET /pods                    enrolled pods: netns, identity, SVID serial and expiry
//	GET /fib                     the FIB: routes, policies, attached interfaces, pending, counters
//	GET /connections             connections the slow path proxies (?pod=NS/NAME, ?state=STATE)
//	GET /offload/flows           the XDP flow entries of offloaded connections (?pod=NS/NAME, ?conn=ID)
//	GET /services                service VIPs: backends with weight, Maglev share and live flows (services.go)
//	GET /debug/pprof/            Go's profiles (CPU, heap, goroutines): the admin API listens on localhost only
//	GET /healthz                 200 while the process serves
//	GET /readyz                  200 once the first flow table is applied, 503 with the reason before
//
// The response types are exported: they are the API's schema, and
// fibctl decodes them.
package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultListen is the admin API's address: localhost of the node's
// network namespace.
const DefaultListen = "127.0.0.1:15000"

// ConfigDump is /config_dump: one entry per subscribed xDS type.
type ConfigDump struct {
	Configs []TypeConfig `json:"configs"`
}

// TypeConfig is what the agent holds of one xDS type.
type TypeConfig struct {
	// Type is the short name (CDS, EDS, LDS, RDS, SDS, FDS) and TypeURL
	// the xDS type URL.
	Type    string `json:"type"`
	TypeURL string `json:"type_url"`
	// VersionInfo is the last version accepted ("" before the first);
	// LastUpdated when it was.
	VersionInfo string     `json:"version_info"`
	LastUpdated *time.Time `json:"last_updated,omitempty"`
	// Resources in force, sorted by name.
	Resources []Resource `json:"resources"`
	// ErrorState is the last refused version of this type, if it was
	// refused after the last accepted one (the last good config stays).
	ErrorState *UpdateFailure `json:"error_state,omitempty"`
}

// Resource is one xDS resource in force.
type Resource struct {
	Name string `json:"name"`
	// Resource is the message as protojson, with its "@type".
	Resource json.RawMessage `json:"resource"`
}

// UpdateFailure is a NACKed response.
type UpdateFailure struct {
	VersionInfo string    `json:"version_info"`
	Details     string    `json:"details"`
	At          time.Time `json:"last_update_attempt"`
}

// PodInfo is one enrolled pod (/pods).
type PodInfo struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	IP        string    `json:"ip,omitempty"`
	Netns     string    `json:"netns"`
	Enrolled  time.Time `json:"enrolled"`
	// Identity is the pod's SPIFFE ID; SVID its certificate, nil before
	// the first was issued.
	Identity string    `json:"identity,omitempty"`
	SVID     *SVIDInfo `json:"svid,omitempty"`
	// Error is why the pod has no (fresh) SVID, when that is the case.
	Error string `json:"error,omitempty"`
}

// SVIDInfo describes a certificate.
type SVIDInfo struct {
	SpiffeID  string    `json:"spiffeID"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	IssuedAt  time.Time `json:"issuedAt"`
}

// FIB is /fib: the node's FIB as the agent keeps it.
type FIB struct {
	// Versions of the flow tables applied, by table name.
	Versions map[string]string `json:"versions"`
	Routes   []Route           `json:"routes"`
	Policies []Policy          `json:"policies"`
	// Attached maps each interface the FIB is attached to by this agent
	// to its ifindex.
	Attached map[string]int `json:"attached"`
	// Pending maps what is not programmed yet to why (it is retried).
	Pending map[string]string `json:"pending,omitempty"`
	// Flows is the number of flow entries in use.
	Flows int `json:"flows"`
	// Counters are the data path's counters by reason, summed over CPUs.
	Counters map[string]Counter `json:"counters"`
	// Writes counts the map entries written since the agent started.
	Writes Writes `json:"writes"`
}

// Route is one FIB route.
type Route struct {
	Prefix  string `json:"prefix"`
	Ifindex int    `json:"ifindex"`
	SrcMAC  string `json:"srcMAC"`
	DstMAC  string `json:"dstMAC"`
	PuntNew bool   `json:"puntNew,omitempty"`
}

// Policy is one port's mTLS mode.
type Policy struct {
	Addr  string `json:"addr"`
	Port  uint16 `json:"port"`
	Proto string `json:"proto"`
	Mode  string `json:"mode"`
}

// Connection is one connection the slow path proxies (closed ones stay
// listed for a while, with why they ended).
type Connection struct {
	ID uint64 `json:"id"`
	// Direction is "outbound" (the pod called out) or "inbound" (a peer
	// called the pod); Listener the listener that accepted it
	// ("outbound", "inbound" for the mTLS tunnel, "inbound-plaintext").
	Direction string `json:"direction"`
	Listener  string `json:"listener"`
	// Pod is the local pod, "namespace/name".
	Pod string `json:"pod"`
	// Source and Destination are the stream's original endpoints as the
	// apps see them: the calling app's address, and the VIP:port
	// (outbound) or pod IP:port (inbound) it called.
	Source      netip.AddrPort `json:"source,omitzero"`
	Destination netip.AddrPort `json:"destination,omitzero"`
	// Upstream is where the agent connected: the endpoint pod's IP:15008
	// (tunnel), a plaintext endpoint or the original destination, or the
	// app (inbound). Endpoint is the endpoint (pod IP:target port) a
	// cluster picked; Mode how it was reached ("tunnel", "plaintext",
	// "passthrough", "app").
	Upstream netip.AddrPort `json:"upstream,omitzero"`
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
	Mode     string         `json:"mode,omitempty"`
	// ServerName is the SNI of the app's ClientHello, where the outbound
	// listener routes by it.
	ServerName string `json:"serverName,omitempty"`
	// Cluster and Chain are the xDS cluster and filter chain used.
	Cluster string `json:"cluster,omitempty"`
	Chain   string `json:"chain,omitempty"`
	// LocalIdentity and PeerIdentity are SPIFFE IDs: the local pod's and
	// the peer's, verified in the handshake ("" in plaintext).
	LocalIdentity string `json:"localIdentity,omitempty"`
	PeerIdentity  string `json:"peerIdentity,omitempty"`
	// TLSVersion and TLSCipher describe the tunnel ("" in plaintext).
	TLSVersion string `json:"tlsVersion,omitempty"`
	TLSCipher  string `json:"tlsCipher,omitempty"`
	// TLSResumed: the tunnel resumed an earlier session (no certificate
	// signatures; the peer's chain was verified again).
	TLSResumed bool `json:"tlsResumed,omitempty"`
	// State is "handshake", "established" (relayed in userspace),
	// "offloaded" (the kernel moves its bytes: kTLS and splice/sockmap),
	// "l7" (an HTTP connection), "revoked" (a config change forbade it)
	// or "closed".
	State string `json:"state"`
	// Offload is how an established L4 tunnel connection moves its
	// bytes: "splice", "sockmap" or "userspace"; OffloadReason says why
	// one stays in userspace.
	Offload       string `json:"offload,omitempty"`
	OffloadReason string `json:"offloadReason,omitempty"`
	// XDPPackets and XDPBytes are what the XDP FIB's flow entries of an
	// offloaded connection's tunnel counted, both directions.
	XDPPackets uint64 `json:"xdpPackets,omitempty"`
	XDPBytes   uint64 `json:"xdpBytes,omitempty"`
	// Reason says why a connection was refused or how it ended.
	Reason string `json:"reason,omitempty"`
	// BytesOut are the bytes from the local app to the peer, BytesIn the
	// other way.
	BytesOut uint64    `json:"bytesOut"`
	BytesIn  uint64    `json:"bytesIn"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end,omitzero"`
}

// OffloadFlow is one offloaded connection's XDP flow entries
// (/offload/flows): the forward entries of both directions of its tunnel
// 5-tuple, and what a revocation did to them.
type OffloadFlow struct {
	// ConnID and Pod name the connection as /connections does.
	ConnID uint64 `json:"connID"`
	Pod    string `json:"pod"`
	// Local is this side's tunnel socket (the local pod's IP and port),
	// Remote the peer's; one of them is a pod's IP:15008.
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	// LocalIdentity and PeerIdentity are the SPIFFE IDs of both ends;
	// the IDs their identity ids in the node's flow tables (0: none
	// there), written in the entries.
	LocalIdentity   string `json:"localIdentity,omitempty"`
	PeerIdentity    string `json:"peerIdentity,omitempty"`
	LocalIdentityID uint32 `json:"localIdentityID"`
	PeerIdentityID  uint32 `json:"peerIdentityID"`
	// State is "offloaded" (both entries forward), "revoked" (the entry
	// toward the local pod drops) or "draining" (revoked and closed: the
	// drop entry stays for the grace period, so that the peer's
	// retransmissions die in XDP).
	State string `json:"state"`
	// Packets and Bytes are what the XDP FIB counted for the tunnel, both
	// directions, including what it counted before a revocation reset
	// the entry it turned to drop.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Entries are the two flow entries: "out" (local → remote) first,
	// then "in" (remote → local).
	Entries   []OffloadFlowEntry `json:"entries"`
	Installed time.Time          `json:"installed"`
	// Revocation is set once the connection was revoked.
	Revocation *Revocation `json:"revocation,omitempty"`
}

// OffloadFlowEntry is one flow entry of an offloaded connection, as the
// FIB's flow map holds it now.
type OffloadFlowEntry struct {
	// Direction is "out" (local → remote) or "in" (remote → local).
	Direction string         `json:"direction"`
	Src       netip.AddrPort `json:"src"`
	Dst       netip.AddrPort `json:"dst"`
	// Action is the entry's action (forward, drop); "missing" when the
	// map no longer holds it (the LRU evicted it, or a write failed).
	Action  string `json:"action"`
	SrcID   uint32 `json:"srcID"`
	DstID   uint32 `json:"dstID"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// IdleMs is the time since the entry's last packet; -1: none yet.
	IdleMs int64 `json:"idleMs"`
}

// Revocation is what turning an offloaded connection's entry to drop
// did, and how long it took to drop the peer's first packet.
type Revocation struct {
	// Pushed is when the change that revoked the connection arrived;
	// RevokedAt when the entry was turned to drop.
	Pushed    time.Time `json:"pushed"`
	RevokedAt time.Time `json:"revokedAt"`
	// State is "waiting" (no packet dropped yet), "dropped" (the first
	// one was: FirstDropMs is set) or "no-drop" (no packet came before
	// the deadline, or the entry went first: no latency measured).
	State string `json:"state"`
	// FirstDropMs is the revocation latency: from Pushed to the first
	// packet the drop entry counted (its last_seen_ns, CLOCK_MONOTONIC,
	// when it had counted one packet). FirstDropErrorMs is its
	// uncertainty: 0 when exact; otherwise the entry had counted more
	// than one packet when first read, the first drop lies within that
	// many ms before FirstDropMs and FirstDropMs is an upper bound.
	FirstDropMs      float64 `json:"firstDropMs,omitempty"`
	FirstDropErrorMs float64 `json:"firstDropErrorMs,omitempty"`
	// Dropped counts the packets the drop entry dropped so far.
	Dropped uint64 `json:"dropped"`
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Writes counts map writes by map and kind.
type Writes struct {
	RoutePuts     uint64 `json:"routePuts"`
	RouteDeletes  uint64 `json:"routeDeletes"`
	PolicyPuts    uint64 `json:"policyPuts"`
	PolicyDeletes uint64 `json:"policyDeletes"`
	// ServicePuts and ServiceDeletes count service tables written and
	// removed; FlowsMoved the flows whose entries were deleted because
	// their backend left the service, so that they pick again.
	ServicePuts    uint64 `json:"servicePuts"`
	ServiceDeletes uint64 `json:"serviceDeletes"`
	FlowsMoved     uint64 `json:"flowsMoved"`
}

// Source is what the admin API shows: the agent.
type Source interface {
	ConfigDump() ConfigDump
	Pods() []PodInfo
	FIBSummary() (FIB, error)
	Connections() []Connection
	// OffloadFlows lists the XDP flow entries of the offloaded
	// connections (empty without a flow table), by connection id.
	OffloadFlows() ([]OffloadFlow, error)
	// Ready says whether the agent is ready, and if not, why.
	Ready() (bool, string)
}

// Handler serves the admin API of src.
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		d := src.ConfigDump()
		if t := r.URL.Query().Get("type"); t != "" {
			var kept []TypeConfig
			for _, c := range d.Configs {
				if strings.EqualFold(c.Type, t) || c.TypeURL == t {
					kept = append(kept, c)
				}
			}
			if kept == nil {
				var names []string
				for _, c := range d.Configs {
					names = append(names, c.Type)
				}
				http.Error(w, fmt.Sprintf("type %q: not subscribed: want one of %s or a type URL", t, strings.Join(names, ", ")), http.StatusNotFound)
				return
			}
			d.Configs = kept
		}
		writeJSON(w, d)
	})
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, r *http.Request) {
		p := src.Pods()
		if p == nil {
			p = []PodInfo{}
		}
		writeJSON(w, p)
	})
	mux.HandleFunc("GET /fib", func(w http.ResponseWriter, r *http.Request) {
		f, err := src.FIBSummary()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, f)
	})
	mux.HandleFunc("GET /connections", func(w http.ResponseWriter, r *http.Request) {
		pod, state := r.URL.Query().Get("pod"), r.URL.Query().Get("state")
		out := []Connection{}
		for _, c := range src.Connections() {
			if (pod == "" || c.Pod == pod) && (state == "" || strings.EqualFold(c.State, state)) {
				out = append(out, c)
			}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /offload/flows", func(w http.ResponseWriter, r *http.Request) {
		pod, conn := r.URL.Query().Get("pod"), r.URL.Query().Get("conn")
		var id uint64
		if conn != "" {
			var err error
			if id, err = strconv.ParseUint(conn, 10, 64); err != nil {
				http.Error(w, fmt.Sprintf("conn %q: want a connection id (a number, as /connections lists)", conn), http.StatusBadRequest)
				return
			}
		}
		flows, err := src.OffloadFlows()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out := []OffloadFlow{}
		for _, f := range flows {
			if (pod == "" || f.Pod == pod) && (conn == "" || f.ConnID == id) {
				out = append(out, f)
			}
		}
		writeJSON(w, out)
	})
	handleServices(mux, src)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := src.Ready()
		if !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	_ = e.Encode(v)
}
