package live

import (
	"math"
	"time"

	"github.com/fibmesh/fibmesh/controller/xds"
)

// The controller's own metrics the control plane panel reads
// (controller/xds/metrics.go, controller/ca).
const (
	metricConnectedAgents = "fibmesh_xds_connected_agents"
	metricPushes          = "fibmesh_xds_pushes_total"
	metricPushBucket      = "fibmesh_xds_push_duration_seconds_bucket"
	metricConvBucket      = "fibmesh_xds_convergence_seconds_bucket"
	metricNACKs           = "fibmesh_xds_nacks_total"
	metricCSRIssued       = "fibmesh_ca_csr_issued_total"
	metricCSRRefused      = "fibmesh_ca_csr_refused_total"
)

// ControlPlane is the controller's side: its agents, its pushes and how
// fast the mesh converges.
type ControlPlane struct {
	// ConnectedAgents is fibmesh_xds_connected_agents: nodes with an
	// open xDS stream.
	ConnectedAgents int `json:"connectedAgents"`
	// ModelVersion is the version of the model in force.
	ModelVersion uint64 `json:"modelVersion"`
	// LastPush is the last push to the xDS caches (nil: none since the
	// controller started).
	LastPush *Push `json:"lastPush,omitempty"`
	// Pushes is the pushes since the controller started.
	Pushes float64 `json:"pushes"`
	// ConvergenceP99Ms is the 99th percentile of the time from a change
	// seen to every affected node's ACK, since the controller started;
	// ConvergenceWindowP99Ms the same over the last ConvergenceWindow
	// (absent without a change in it).
	ConvergenceP99Ms       *float64 `json:"convergenceP99Ms,omitempty"`
	ConvergenceWindowP99Ms *float64 `json:"convergenceWindowP99Ms,omitempty"`
	ConvergenceWindow      string   `json:"convergenceWindow"`
	// PushP99Ms is the 99th percentile of a push's translation time.
	PushP99Ms *float64 `json:"pushP99Ms,omitempty"`
	// NACKs is the responses agents refused since the controller
	// started, by type (CDS, EDS, LDS, RDS, SDS, FDS).
	NACKs       float64            `json:"nacks"`
	NACKsByType map[string]float64 `json:"nacksByType,omitempty"`
	// CSRsIssued and CSRsRefused are the CA's certificate requests.
	CSRsIssued  float64 `json:"csrsIssued"`
	CSRsRefused float64 `json:"csrsRefused"`
	// Agents is every agent the controller has seen, connected or not.
	Agents []AgentView `json:"agents"`
}

// Push is one push to the xDS caches.
type Push struct {
	Version uint64    `json:"version"`
	At      time.Time `json:"at"`
	TookMs  float64   `json:"tookMs"`
	Error   string    `json:"error,omitempty"`
}

// AgentView is one agent as the xDS server tracks it.
type AgentView struct {
	Node           string    `json:"node"`
	InModel        bool      `json:"inModel"`
	Connected      bool      `json:"connected"`
	ConnectedSince time.Time `json:"connectedSince,omitzero"`
	// Synced is true when the agent ACKed the last version of every
	// type sent to it.
	Synced bool `json:"synced"`
	// NACKs counts its refusals; LastNACK is the reason of one still in
	// force (cleared by the next ACK).
	NACKs    uint64 `json:"nacks"`
	LastNACK string `json:"lastNack,omitempty"`
	// LastConvergenceMs is how long its last change took to be ACKed.
	LastConvergenceMs float64 `json:"lastConvergenceMs,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// p99ms is the 99th percentile of second-valued buckets in ms, or nil.
func p99ms(samples []Sample) *float64 {
	bs, err := Buckets(samples)
	if err != nil {
		return nil
	}
	q := Quantile(0.99, bs)
	if math.IsNaN(q) {
		return nil
	}
	q *= 1000
	return &q
}

// agentViews turns the xDS server's status into the panel's rows.
func agentViews(st []xds.NodeStatus) []AgentView {
	out := make([]AgentView, 0, len(st))
	for _, n := range st {
		a := AgentView{Node: n.Node, InModel: n.InModel, Connected: n.Streams > 0, ConnectedSince: n.ConnectedSince,
			LastConvergenceMs: ms(n.LastConvergence), Synced: len(n.Types) > 0}
		for _, t := range n.Types {
			a.NACKs += t.NACKs
			if !t.Synced() {
				a.Synced = false
			}
			if t.NACK != nil {
				a.LastNACK = xds.ShortType(t.TypeURL) + " " + t.NACK.Version + ": " + t.NACK.Reason
			}
		}
		out = append(out, a)
	}
	return out
}

// controlPlane reads the controller's registry (cur; win is the
// convergence histogram's increase over the window, nil if unknown).
func controlPlane(cur Samples, win []Sample, window time.Duration, st []xds.NodeStatus) ControlPlane {
	cp := ControlPlane{
		ConnectedAgents:   int(Sum(cur[metricConnectedAgents], nil)),
		Pushes:            Sum(cur[metricPushes], nil),
		ConvergenceP99Ms:  p99ms(cur[metricConvBucket]),
		PushP99Ms:         p99ms(cur[metricPushBucket]),
		NACKs:             Sum(cur[metricNACKs], nil),
		NACKsByType:       SumBy(cur[metricNACKs], "type"),
		CSRsIssued:        Sum(cur[metricCSRIssued], nil),
		CSRsRefused:       Sum(cur[metricCSRRefused], nil),
		Agents:            agentViews(st),
		ConvergenceWindow: window.String(),
	}
	if win != nil {
		cp.ConvergenceWindowP99Ms = p99ms(win)
	}
	return cp
}
