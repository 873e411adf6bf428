package agent

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	nicprofiles "github.com/fibmesh/fibmesh/nic-profiles"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

// kTLS modes of an offloaded connection (the mode label of
// fibmesh_agent_ktls_connections).
const (
	// ktlsModeSW: the kernel's software crypto runs the record layer.
	ktlsModeSW = "sw"
	// ktlsModeNIC: the tunnel uses the suite the NICs' device offload
	// takes (TLS 1.2 AES-128-GCM), chosen because this node's NIC
	// offloads kTLS and so does the peer's (nictls.go).
	ktlsModeNIC = "nic"
)

// ktlsMetrics are the kTLS state of the offloaded connections, by
// version, cipher, mode and the node's NIC profile, kept from the
// proxy's events (fibmesh_agent_ktls_*), and the NIC's kTLS offload
// decision (fibmesh_agent_nic_ktls_offload).
type ktlsMetrics struct {
	profile    string // the node's NIC profile ("unknown": not detected)
	nicOffload bool   // the node's NIC offloads kTLS record crypto
	active     *prometheus.GaugeVec
	total      *prometheus.CounterVec
	nic        *prometheus.GaugeVec

	mu    sync.Mutex
	conns map[ktlsConn][]string // the label values of each counted connection
}

// ktlsConn names a connection: its pod and its id in the proxy's table.
type ktlsConn struct {
	pod string
	id  uint64
}

var ktlsLabels = []string{"version", "cipher", "mode", "nic_profile"}

// newKTLSMetrics counts for a node whose NIC nic has profile (""
// unknown) and does or does not offload kTLS (NICTLSDecision.Offload).
func newKTLSMetrics(nic, profile string, nicOffload bool) *ktlsMetrics {
	if profile == "" {
		profile = "unknown"
	}
	m := &ktlsMetrics{profile: profile, nicOffload: nicOffload, conns: map[ktlsConn][]string{},
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fibmesh_agent_ktls_connections",
			Help: "Offloaded connections whose TLS record layer the kernel runs (kTLS), by TLS version, cipher suite, mode " +
				"(sw: the kernel's software crypto; nic: the suite of the NICs' device offload, TLS 1.2 AES-128-GCM, where both nodes' NICs offload) and the node's NIC profile."}, ktlsLabels),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fibmesh_agent_ktls_connections_total",
			Help: "Connections handed to kTLS (offloaded) since the agent started, labelled as fibmesh_agent_ktls_connections."}, ktlsLabels),
		nic: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fibmesh_agent_nic_ktls_offload",
			Help: "1 if the node's NIC offloads kTLS record crypto (--nic-ktls-offload, auto: its NIC profile and measured features), 0 if not; by interface and NIC profile."},
			[]string{"nic", "profile"}),
	}
	m.nic.WithLabelValues(nic, profile).Set(b2f(nicOffload))
	return m
}

// nicProfile is the name of nic's profile, "" when it cannot be
// detected.
func nicProfile(nic string) string {
	d, err := nicprofiles.Detect(nic)
	if err != nil || d.Profile == nil {
		return ""
	}
	return d.Profile.Name
}

// ktlsMode is the mode of a tunnel of version and cipher (Go's names:
// "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256").
func ktlsMode(nicOffload bool, version, cipher string) string {
	if nicOffload && version == "TLS 1.2" && strings.Contains(cipher, "AES_128_GCM") {
		return ktlsModeNIC
	}
	return ktlsModeSW
}

// event counts an offloaded connection when it is established and
// forgets it when it closes.
func (m *ktlsMetrics) event(ev proxy.Event) {
	if m == nil {
		return
	}
	k := ktlsConn{ev.Conn.Pod, ev.Conn.ID}
	switch ev.Kind {
	case proxy.EventEstablished:
		if ev.Conn.State != proxy.StateOffloaded {
			return
		}
		lv := []string{ev.Conn.TLSVersion, ev.Conn.TLSCipher, ktlsMode(m.nicOffload, ev.Conn.TLSVersion, ev.Conn.TLSCipher), m.profile}
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.conns[k]; ok {
			return
		}
		m.conns[k] = lv
		m.active.WithLabelValues(lv...).Inc()
		m.total.WithLabelValues(lv...).Inc()
	case proxy.EventClosed:
		m.mu.Lock()
		defer m.mu.Unlock()
		if lv, ok := m.conns[k]; ok {
			delete(m.conns, k)
			m.active.WithLabelValues(lv...).Dec()
		}
	}
}

func (m *ktlsMetrics) collectors() []prometheus.Collector {
	if m == nil {
		return nil
	}
	return []prometheus.Collector{m.active, m.total, m.nic}
}

// onProxyEvents is the proxy's Events hook: the kTLS state, then
// onProxyEvent (Istio's TCP metrics, the access log, the agent's log).
func (a *Agent) onProxyEvents(ev proxy.Event) {
	a.ktls.event(ev)
	a.onProxyEvent(ev)
}

// SparseCollectors returns new, unregistered collectors of the agent's
// metrics that may have no series at all (vectors whose series appear
// with their first event: the kTLS state, the span counters), for tools
// that check metric names against what an agent can expose, such as the
// dashboards test. Their values mean nothing.
func SparseCollectors() []prometheus.Collector {
	return append(newKTLSMetrics("", "", false).collectors(), newTraceMetrics().collectors()...)
}
