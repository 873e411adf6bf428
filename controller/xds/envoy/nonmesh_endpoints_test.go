package envoy

import (
	"slices"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/controller/model"
)

// TestEndpointsOutsideMesh: an endpoint without a known pod (the
// kubernetes Service's API server addresses, a VM) is reached in
// plaintext, even in a STRICT mesh: nothing listens on its 15008. A
// MESH_INTERNAL ServiceEntry's endpoints are in the mesh as the user
// says, and take the mesh's mode.
func TestEndpointsOutsideMesh(t *testing.T) {
	w := workload("a", "10.0.0.1", model.ModeStrict)
	noPod := func(addr string) *model.Endpoint { return &model.Endpoint{Address: addr, Ready: true} }
	apiserver := service("kubernetes", []string{"10.96.0.1"}, []model.Port{{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS}})
	apiserver.Endpoints = []*model.Endpoint{noPod("172.18.0.2")}
	mixed := service("mixed", []string{"10.96.0.2"}, []model.Port{tcpPort(5432)}, w)
	mixed.Endpoints = append(mixed.Endpoints, noPod("192.168.7.7"))
	vmInternal := &model.Service{Hostname: "vm.internal", Namespace: "ns", Name: "vm", ServiceEntry: true, Location: "MESH_INTERNAL",
		Resolution: "STATIC", VIPs: []string{"10.97.0.1"}, Ports: []model.Port{tcpPort(5000)}, Endpoints: []*model.Endpoint{noPod("192.168.8.8")}}
	vmExternal := &model.Service{Hostname: "vm.external", Namespace: "ns", Name: "vm2", ServiceEntry: true, Location: "MESH_EXTERNAL",
		Resolution: "STATIC", VIPs: []string{"10.97.0.2"}, Ports: []model.Port{tcpPort(5000)},
		Endpoints: []*model.Endpoint{{Address: "192.168.9.9", Ready: true, Identity: model.Identity("cluster.local", "ns", "vm")}}}
	got := buildMesh(t, mesh([]*model.Service{apiserver, mixed, vmInternal, vmExternal}, []*model.Workload{w}, nil, nil, nil))

	for _, tc := range []struct {
		cluster   string
		tls       bool
		plaintext []string // endpoints marked tlsMode: disabled
	}{
		{"outbound|443||" + host("kubernetes"), false, nil},
		{"outbound|5432||" + host("mixed"), true, []string{"192.168.7.7"}},
		{"outbound|5000||vm.internal", true, nil},
		{"outbound|5000||vm.external", false, nil},
	} {
		c := findCluster(t, got, tc.cluster)
		if (c.TransportSocket != nil) != tc.tls {
			t.Errorf("%s: transport socket %v; want mTLS %v", tc.cluster, c.TransportSocket, tc.tls)
		}
		var marked []string
		for _, loc := range findCLA(t, got, tc.cluster).Endpoints {
			for _, e := range loc.LbEndpoints {
				if e.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() == "disabled" {
					marked = append(marked, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
				}
			}
		}
		if d := gocmp.Diff(tc.plaintext, marked); d != "" {
			t.Errorf("%s: plaintext endpoints (-want +got):\n%s", tc.cluster, d)
		}
	}
}

// TestOutboundChainHostMetadata: every outbound chain names the host
// whose VIP (or, without one, whose tls rule) it matches, in
// metadata.filter_metadata["fibmesh"].host; the default chain names none.
func TestOutboundChainHostMetadata(t *testing.T) {
	m := loadModel(t, nil)
	got := buildMesh(t, m)
	if got.Outbound.DefaultFilterChain.GetMetadata() != nil {
		t.Errorf("default chain has metadata %v", got.Outbound.DefaultFilterChain.GetMetadata())
	}
	for _, fc := range got.Outbound.FilterChains {
		host := fc.GetMetadata().GetFilterMetadata()[ChainMetadataKey].GetFields()[ChainMetadataHost].GetStringValue()
		svcs := m.ServicesFor(host)
		if len(svcs) == 0 {
			t.Errorf("chain %s: host %q is no service", fc.Name, host)
			continue
		}
		for _, r := range fc.GetFilterChainMatch().GetPrefixRanges() {
			if !slices.Contains(svcs[0].VIPs, r.GetAddressPrefix()) {
				t.Errorf("chain %s matches %s, not a VIP of its host %s", fc.Name, r.GetAddressPrefix(), host)
			}
		}
	}
}
