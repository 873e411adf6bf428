package xds

import (
	"github.com/prometheus/client_golang/prometheus"

	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/fibmesh/fibmesh/controller/xds/fds"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

// Types are the resource types the server serves, in the order a push
// applies them (make before break: clusters before the listeners and
// routes that use them).
var Types = servedTypes[:]

// servedTypes holds Types; its length sizes each node's inline type
// states (numTypes).
var servedTypes = [...]string{
	resource.ClusterType,
	resource.EndpointType,
	resource.ListenerType,
	resource.RouteType,
	resource.SecretType,
	fds.TypeURL,
}

const numTypes = len(servedTypes)

func typeOrder(url string) int {
	for i, t := range Types {
		if t == url {
			return i
		}
	}
	return len(Types)
}

// ShortType is a type URL's usual short name (xdsapi.ShortType).
func ShortType(url string) string { return xdsapi.ShortType(url) }

// metrics are the server's Prometheus metrics.
type metrics struct {
	pushes       prometheus.Counter
	pushDuration prometheus.Histogram
	updates      *prometheus.CounterVec
	responses    *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	connected    prometheus.Gauge
	convergence  prometheus.Histogram
}

func newMetrics() *metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	return &metrics{
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fibmesh_xds_pushes_total", Help: "Pushes: model versions translated and applied to the xDS caches.",
		}),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fibmesh_xds_push_duration_seconds", Help: "Time to translate a model version and update the xDS caches.", Buckets: buckets,
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_xds_resource_updates_total", Help: "Resources added, changed or removed by pushes, by type.",
		}, []string{"type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_xds_responses_total", Help: "xDS responses sent to agents, by type.",
		}, []string{"type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_xds_response_bytes_total", Help: "Bytes of xDS responses sent to agents, by type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_xds_nacks_total", Help: "Responses refused (NACKed) by agents, by type.",
		}, []string{"type"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fibmesh_xds_connected_agents", Help: "Agents (nodes) with at least one open xDS stream.",
		}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fibmesh_xds_convergence_seconds", Help: "Per node, from a change seen by the controller to the node's ACK of every response it caused.", Buckets: buckets,
		}),
	}
}

// zero makes every per-type series exist from the start, at 0, so that
// rate() and alerts see the first NACK.
func (m *metrics) zero() *metrics {
	for _, t := range Types {
		for _, v := range []*prometheus.CounterVec{m.updates, m.responses, m.bytes, m.nacks} {
			v.WithLabelValues(ShortType(t))
		}
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.pushes, m.pushDuration, m.updates, m.responses, m.bytes, m.nacks, m.connected, m.convergence}
}
