package agent

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

func TestKTLSMode(t *testing.T) {
	tests := []struct {
		nic             bool
		version, cipher string
		want            string
	}{
		{true, "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", ktlsModeNIC},
		{true, "TLS 1.3", "TLS_AES_128_GCM_SHA256", ktlsModeSW}, // the NICs' device offload takes TLS 1.2 only
		{true, "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", ktlsModeSW},
		{false, "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", ktlsModeSW},
		{false, "TLS 1.3", "TLS_AES_256_GCM_SHA384", ktlsModeSW},
	}
	for _, tt := range tests {
		if got := ktlsMode(tt.nic, tt.version, tt.cipher); got != tt.want {
			t.Errorf("ktlsMode(%v, %q, %q) = %q, want %q", tt.nic, tt.version, tt.cipher, got, tt.want)
		}
	}
}

// TestKTLSMetrics feeds synthetic proxy events and reads the metrics:
// offloaded connections counted once each, by version, cipher and mode,
// forgotten when they close; connections that stay in userspace or are
// HTTP not counted.
func TestKTLSMetrics(t *testing.T) {
	const (
		tls13 = "TLS_AES_128_GCM_SHA256"
		tls12 = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
	)
	conn := func(pod string, id uint64, state, version, cipher string) proxy.ConnInfo {
		return proxy.ConnInfo{ID: id, Pod: pod, State: state, TLSVersion: version, TLSCipher: cipher, Offload: proxy.OffloadSplice}
	}
	ev := func(k proxy.EventKind, c proxy.ConnInfo) proxy.Event { return proxy.Event{Kind: k, Conn: c} }
	tests := []struct {
		name       string
		nicOffload bool
		events     []proxy.Event
		// want is the exposition of fibmesh_agent_ktls_connections and
		// fibmesh_agent_ktls_connections_total, without HELP and TYPE.
		wantActive, wantTotal []string
	}{
		{
			name: "software kTLS", nicOffload: false,
			events: []proxy.Event{
				ev(proxy.EventEstablished, conn("a/p", 1, proxy.StateOffloaded, "TLS 1.3", tls13)),
				ev(proxy.EventEstablished, conn("a/p", 2, proxy.StateOffloaded, "TLS 1.3", tls13)),
				ev(proxy.EventEstablished, conn("a/p", 2, proxy.StateOffloaded, "TLS 1.3", tls13)),   // the same one again
				ev(proxy.EventEstablished, conn("a/q", 1, proxy.StateOffloaded, "TLS 1.3", tls13)),   // another pod's id 1
				ev(proxy.EventEstablished, conn("a/p", 3, proxy.StateEstablished, "TLS 1.3", tls13)), // userspace
				ev(proxy.EventEstablished, conn("a/p", 4, proxy.StateL7, "", "")),
				ev(proxy.EventClosed, conn("a/p", 1, proxy.StateClosed, "TLS 1.3", tls13)),
				ev(proxy.EventClosed, conn("a/p", 3, proxy.StateClosed, "TLS 1.3", tls13)), // never counted
				ev(proxy.EventClosed, conn("a/p", 1, proxy.StateClosed, "TLS 1.3", tls13)), // closed twice
			},
			wantActive: []string{`fibmesh_agent_ktls_connections{cipher="TLS_AES_128_GCM_SHA256",mode="sw",nic_profile="veth",version="TLS 1.3"} 2`},
			wantTotal:  []string{`fibmesh_agent_ktls_connections_total{cipher="TLS_AES_128_GCM_SHA256",mode="sw",nic_profile="veth",version="TLS 1.3"} 3`},
		},
		{
			name: "NIC offload", nicOffload: true,
			events: []proxy.Event{
				ev(proxy.EventEstablished, conn("a/p", 1, proxy.StateOffloaded, "TLS 1.2", tls12)), // a peer whose NIC offloads
				ev(proxy.EventEstablished, conn("a/p", 2, proxy.StateOffloaded, "TLS 1.3", tls13)), // one whose NIC does not
				ev(proxy.EventClosed, conn("a/p", 1, proxy.StateClosed, "TLS 1.2", tls12)),
			},
			wantActive: []string{
				`fibmesh_agent_ktls_connections{cipher="TLS_AES_128_GCM_SHA256",mode="sw",nic_profile="veth",version="TLS 1.3"} 1`,
				`fibmesh_agent_ktls_connections{cipher="TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",mode="nic",nic_profile="veth",version="TLS 1.2"} 0`,
			},
			wantTotal: []string{
				`fibmesh_agent_ktls_connections_total{cipher="TLS_AES_128_GCM_SHA256",mode="sw",nic_profile="veth",version="TLS 1.3"} 1`,
				`fibmesh_agent_ktls_connections_total{cipher="TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",mode="nic",nic_profile="veth",version="TLS 1.2"} 1`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newKTLSMetrics("eth0", "veth", tt.nicOffload)
			for _, e := range tt.events {
				m.event(e)
			}
			got := series(t, m.collectors()...)
			nic := "0"
			if tt.nicOffload {
				nic = "1"
			}
			want := append(append(slices.Clone(tt.wantActive), tt.wantTotal...), `fibmesh_agent_nic_ktls_offload{nic="eth0",profile="veth"} `+nic)
			slices.Sort(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("series (-want +got):\n%s", diff)
			}
		})
	}
	if p := newKTLSMetrics("eth0", "", false).profile; p != "unknown" {
		t.Errorf("an undetected NIC's profile label %q, want unknown", p)
	}
}

// series gathers cs and returns their series as `name{labels} value`
// lines, sorted.
func series(t *testing.T, cs ...prometheus.Collector) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var lbs []string
			for _, l := range m.GetLabel() {
				lbs = append(lbs, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out = append(out, fmt.Sprintf("%s{%s} %v", mf.GetName(), strings.Join(lbs, ","), v))
		}
	}
	slices.Sort(out)
	return out
}

func TestSparseCollectors(t *testing.T) {
	var got []string
	for _, c := range SparseCollectors() {
		ch := make(chan *prometheus.Desc, 8)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			_, rest, _ := strings.Cut(d.String(), `fqName: "`)
			name, _, _ := strings.Cut(rest, `"`)
			got = append(got, name)
		}
	}
	slices.Sort(got)
	want := []string{"fibmesh_agent_ktls_connections", "fibmesh_agent_ktls_connections_total", "fibmesh_agent_nic_ktls_offload",
		"fibmesh_agent_trace_spans_dropped_total", "fibmesh_agent_trace_spans_exported_total"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("described metrics (-want +got):\n%s", diff)
	}
}
