package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// metrics are the agent's Prometheus metrics (fibmesh_agent_*): events
// are counted as they happen; the FIB, SVIDs and pods are read at each
// scrape (fibState), so they cannot drift from what they describe.
type metrics struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	updates    *prometheus.CounterVec
	versions   *prometheus.GaugeVec
	state      *fibState
	// puntVerdicts and puntRedecided count L4 policy's work on punted
	// flows (l4policy.go).
	puntVerdicts  *prometheus.CounterVec
	puntRedecided prometheus.Counter
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fibmesh_agent_xds_connected",
			Help: "1 while the xDS stream to the controller is up (a response received on it), 0 otherwise."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "fibmesh_agent_xds_reconnects_total",
			Help: "xDS streams that were up and were lost (each followed by a reconnect with backoff)."}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fibmesh_agent_xds_updates_total",
			Help: "xDS responses handled, by type (CDS, EDS, LDS, RDS, SDS, FDS) and result (ack, nack)."}, []string{"type", "result"}),
		versions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fibmesh_agent_xds_version",
			Help: "1 for the last version of each type accepted (state=ack) and the last refused one (state=nack, until a version is accepted)."}, []string{"type", "state", "version"}),
		state: &fibState{a: a},
		puntVerdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fibmesh_agent_punt_verdicts_total",
			Help: "Flows the XDP FIB punted to the agent that it decided, by verdict (allow: forward entries both ways, packet re-injected; deny: drop entry, packet dropped)."}, []string{"verdict"}),
		puntRedecided: prometheus.NewCounter(prometheus.CounterOpts{Name: "fibmesh_agent_punt_flows_redecided_total",
			Help: "Punted flows whose entries a policy change deleted because their verdict changed: their next packet is punted and decided again."}),
	}
	for _, v := range []string{"allow", "deny"} {
		m.puntVerdicts.WithLabelValues(v) // export zeros
	}
	for _, s := range xdsapi.AgentSubscriptions(a.cfg.Node) {
		for _, r := range []string{"ack", "nack"} {
			m.updates.WithLabelValues(xdsapi.ShortType(s.TypeURL), r) // export zeros
		}
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{m.connected, m.reconnects, m.updates, m.versions, m.state, m.puntVerdicts, m.puntRedecided}
	// fibmesh_agent_trace_* (tracebatch.go) and fibmesh_agent_ktls_*,
	// fibmesh_agent_nic_ktls_offload (ktlsmetrics.go).
	cs = append(cs, m.state.a.spans.collectors()...)
	cs = append(cs, m.state.a.ktls.collectors()...)
	if ft := m.state.a.flows; ft != nil {
		// fibmesh_agent_offload_flow_* and the revocation latency
		// (flows.go).
		cs = append(cs, ft.collectors()...)
	}
	return cs
}

func (m *metrics) setConnected(up bool) {
	if up {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

func (m *metrics) update(u xdsclient.Update) {
	t := xdsapi.ShortType(u.TypeURL)
	if u.NACK != nil {
		m.updates.WithLabelValues(t, "nack").Inc()
		m.versions.DeletePartialMatch(prometheus.Labels{"type": t, "state": "nack"})
		m.versions.WithLabelValues(t, "nack", u.Version).Set(1)
		return
	}
	m.updates.WithLabelValues(t, "ack").Inc()
	m.versions.DeletePartialMatch(prometheus.Labels{"type": t})
	m.versions.WithLabelValues(t, "ack", u.Version).Set(1)
}

var (
	descReady = prometheus.NewDesc("fibmesh_agent_ready",
		"1 once the first flow table from the controller is applied (/readyz).", nil, nil)
	descPackets = prometheus.NewDesc("fibmesh_agent_fib_packets_total",
		"Packets the XDP FIB counted, by reason (the per-CPU stats map, summed).", []string{"reason"}, nil)
	descBytes = prometheus.NewDesc("fibmesh_agent_fib_bytes_total",
		"Bytes the XDP FIB counted, by reason (the per-CPU stats map, summed).", []string{"reason"}, nil)
	descRoutes = prometheus.NewDesc("fibmesh_agent_fib_routes",
		"Routes in the FIB's route map.", nil, nil)
	descPolicies = prometheus.NewDesc("fibmesh_agent_fib_policies",
		"Pod ports in the FIB's mTLS policy map.", nil, nil)
	descFlows = prometheus.NewDesc("fibmesh_agent_fib_flows",
		"Flow entries in use in the FIB's flow table.", nil, nil)
	descPending = prometheus.NewDesc("fibmesh_agent_fib_pending",
		"Routes and interfaces of the flow tables not programmed yet (unresolved neighbours, failed writes): retried.", nil, nil)
	descWrites = prometheus.NewDesc("fibmesh_agent_fib_map_writes_total",
		"Entries written to the FIB's maps since the agent started, by map (routes, policy, services: a service's whole Maglev table) and op (put, delete). Flat while the tables do not change: no flaps.", []string{"map", "op"}, nil)
	descFlowsMoved = prometheus.NewDesc("fibmesh_agent_service_flows_moved_total",
		"Service flows whose backend left the service: their flow entries (both ways) deleted, so that their next packet picks a backend again.", nil, nil)
	descAttached = prometheus.NewDesc("fibmesh_agent_fib_attached_interfaces",
		"Interfaces this agent attached the FIB to.", nil, nil)
	descSVIDs = prometheus.NewDesc("fibmesh_agent_svids",
		"Pods with a current SVID.", nil, nil)
	descSVIDExpiry = prometheus.NewDesc("fibmesh_agent_svid_expiry_seconds",
		"Seconds until each pod's current SVID expires.", []string{"namespace", "pod"}, nil)
	descEnrolled = prometheus.NewDesc("fibmesh_agent_enrolled_pods",
		"Pods enrolled on the node's socket.", nil, nil)
	descPuntPackets = prometheus.NewDesc("fibmesh_agent_punt_packets_total",
		"Packets the XDP FIB punted to the agent, by result: received, malformed (dropped: not parsed), reinjected (allowed, sent to their next hop), reinject_error (allowed but not sent, or a flow entry not written: should stay 0).", []string{"result"}, nil)
)

// fibState reads the agent's state at each scrape.
type fibState struct{ a *Agent }

func (s *fibState) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReady, descPackets, descBytes, descRoutes, descPolicies, descFlows, descPending,
		descWrites, descFlowsMoved, descAttached, descSVIDs, descSVIDExpiry, descEnrolled, descPuntPackets} {
		ch <- d
	}
}

func (s *fibState) Collect(ch chan<- prometheus.Metric) {
	a := s.a
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	ready, _ := a.Ready()
	gauge(descReady, b2f(ready))
	if cs, err := a.fib.Stats.Read(); err == nil {
		for i, c := range cs {
			counter(descPackets, float64(c.Packets), fib.Reason(i).String())
			counter(descBytes, float64(c.Bytes), fib.Reason(i).String())
		}
	}
	st := a.rec.Status()
	gauge(descRoutes, float64(len(st.Routes)))
	gauge(descPolicies, float64(len(st.Policies)))
	gauge(descPending, float64(len(st.Pending)))
	gauge(descAttached, float64(len(st.Attached)))
	counter(descWrites, float64(st.Writes.RoutePuts), "routes", "put")
	counter(descWrites, float64(st.Writes.RouteDeletes), "routes", "delete")
	counter(descWrites, float64(st.Writes.PolicyPuts), "policy", "put")
	counter(descWrites, float64(st.Writes.PolicyDeletes), "policy", "delete")
	counter(descWrites, float64(st.Writes.ServicePuts), "services", "put")
	counter(descWrites, float64(st.Writes.ServiceDeletes), "services", "delete")
	counter(descFlowsMoved, float64(st.Writes.FlowsMoved))
	if flows, err := a.fib.Flows.List(); err == nil {
		gauge(descFlows, float64(len(flows)))
	}
	n := 0
	for _, p := range a.svids.List() {
		if p.Current == nil {
			continue
		}
		n++
		gauge(descSVIDExpiry, time.Until(p.Current.NotAfter).Seconds(), p.Namespace, p.Pod)
	}
	gauge(descSVIDs, float64(n))
	gauge(descEnrolled, float64(len(a.enrol.Pods())))
	ps := a.punter.Stats()
	counter(descPuntPackets, float64(ps.Received), "received")
	counter(descPuntPackets, float64(ps.Malformed), "malformed")
	counter(descPuntPackets, float64(ps.Reinjected), "reinjected")
	counter(descPuntPackets, float64(ps.ReinjectErrors), "reinject_error")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
