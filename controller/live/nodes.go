package live

import (
	"strings"
	"time"
)

// The agents' own metrics the node panels read (agent/metrics.go,
// agent/flows.go, slowpath/proxy/metrics.go).
const (
	metricFIBPackets       = "fibmesh_agent_fib_packets_total"
	metricFIBFlows         = "fibmesh_agent_fib_flows"
	metricReady            = "fibmesh_agent_ready"
	metricOffloaded        = "fibmesh_agent_proxy_offloaded_connections"
	metricOffloadedBytes   = "fibmesh_agent_proxy_offloaded_bytes_total"
	metricOffloadDecisions = "fibmesh_agent_proxy_offload_decisions_total"
	metricFlowConnections  = "fibmesh_agent_offload_flow_connections"
	metricRevocations      = "fibmesh_agent_proxy_revocations_total"
	metricProxyRequests    = "fibmesh_agent_proxy_http_requests_total"
	metricProxyActive      = "fibmesh_agent_proxy_active_connections"
	metricProxyBytes       = "fibmesh_agent_proxy_bytes_total"
)

// Agent states of a node.
const (
	// StateUp: the last scrape succeeded.
	StateUp = "up"
	// StateDown: the last scrape failed (Error says how).
	StateDown = "down"
	// StateNoAddress: an agent is connected for the node but the model
	// has no InternalIP for it, so it cannot be scraped.
	StateNoAddress = "no-address"
	// StateNoAgent: a node of the model no agent ever connected for.
	StateNoAgent = "no-agent"
	// StateNotScraped: scraping is off (--live-agent-port 0).
	StateNotScraped = "not-scraped"
)

// NodeView is one node: its agent's state and its fast path.
type NodeView struct {
	Name string `json:"name"`
	// URL is where the agent's metrics are scraped.
	URL   string `json:"url,omitempty"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// LastScrape is when the last successful scrape ended; ScrapeMs how
	// long the last attempt took.
	LastScrape time.Time `json:"lastScrape,omitzero"`
	ScrapeMs   float64   `json:"scrapeMs,omitempty"`
	// XDSConnected is whether the controller has an xDS stream from the
	// node's agent; Ready the agent's own fibmesh_agent_ready.
	XDSConnected bool `json:"xdsConnected"`
	Ready        bool `json:"ready"`
	// Workloads is the number of the model's pods on the node.
	Workloads int `json:"workloads"`
	// XDP is packets per second through the XDP FIB by action (rx: all
	// received; redirect, tx, pass, drop, punt) and by reason (the
	// fibmesh_agent_fib_packets_total reasons).
	XDP       map[string]float64 `json:"xdpPps,omitempty"`
	XDPReason map[string]float64 `json:"xdpPpsByReason,omitempty"`
	// PuntPPS is packets per second punted to the agent over AF_XDP;
	// PuntDropPPS those dropped because no punt socket was there.
	PuntPPS     float64 `json:"puntPps"`
	PuntDropPPS float64 `json:"puntDropPps"`
	// FlowEntries is the XDP flow table's entries in use.
	FlowEntries float64 `json:"flowEntries"`
	// Offloaded is the connections whose bytes the kernel moves now, by
	// byte path (splice, sockmap); OffloadFlows those holding XDP flow
	// entries; OffloadedBps the bytes per second the kernel moved for
	// them; OffloadDecisions the established tunnel connections per
	// second by where their bytes went (splice, sockmap, userspace);
	// RevocationsPerSecond the offloaded connections revoked.
	Offloaded            map[string]float64 `json:"offloadedConnections,omitempty"`
	OffloadFlows         float64            `json:"offloadFlows"`
	OffloadedBps         float64            `json:"offloadedBytesPerSecond"`
	OffloadDecisions     map[string]float64 `json:"offloadDecisionsPerSecond,omitempty"`
	RevocationsPerSecond float64            `json:"revocationsPerSecond"`
	// RPS, ActiveConnections and BytesPerSecond are the slow path's:
	// HTTP requests handled (both directions), connections relayed now,
	// bytes relayed.
	RPS               float64 `json:"rps"`
	ActiveConnections float64 `json:"activeConnections"`
	BytesPerSecond    float64 `json:"bytesPerSecond"`
}

// xdpAction is the XDP action a fibmesh_agent_fib_packets_total reason
// ends in (fastpath/fib's reason names: pass_*, drop_*, redirect, tx,
// punt; rx counts every packet received).
func xdpAction(reason string) string {
	switch {
	case strings.HasPrefix(reason, "pass"):
		return "pass"
	case strings.HasPrefix(reason, "drop"):
		return "drop"
	}
	return reason
}

// fillNode sets a node's figures from its agent's window.
func fillNode(v *NodeView, a agentWindow) {
	cur := a.cur
	v.Ready = Sum(cur[metricReady], nil) > 0
	v.FlowEntries = Sum(cur[metricFIBFlows], nil)
	v.Offloaded = SumBy(cur[metricOffloaded], "mode")
	v.OffloadFlows = Sum(cur[metricFlowConnections], nil)
	v.ActiveConnections = Sum(cur[metricProxyActive], nil)
	if a.inc == nil || a.dt <= 0 {
		return
	}
	rate := func(name string) float64 { return Sum(a.inc[name], nil) / a.dt }
	v.XDP, v.XDPReason = map[string]float64{}, map[string]float64{}
	for reason, n := range SumBy(a.inc[metricFIBPackets], "reason") {
		r := n / a.dt
		v.XDPReason[reason] = r
		v.XDP[xdpAction(reason)] += r
	}
	v.PuntPPS = v.XDPReason["punt"]
	v.PuntDropPPS = v.XDPReason["drop_punt_no_socket"]
	v.OffloadedBps = rate(metricOffloadedBytes)
	v.OffloadDecisions = map[string]float64{}
	for mode, n := range SumBy(a.inc[metricOffloadDecisions], "mode") {
		v.OffloadDecisions[mode] = n / a.dt
	}
	v.RevocationsPerSecond = rate(metricRevocations)
	v.RPS = rate(metricProxyRequests)
	v.BytesPerSecond = rate(metricProxyBytes)
}
