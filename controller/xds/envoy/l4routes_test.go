package envoy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/fibmesh/fibmesh/controller/model"
)

// chainSummary is what a test says of an outbound chain: its match and
// where its tcp_proxy sends.
type chainSummary struct {
	Name    string
	Dst     string // vip:port, or *:port
	SNI     []string
	Sources []string
	To      string // a cluster, or "w1:c1,w2:c2" weighted
}

func summarize(t *testing.T, l *listenerv3.Listener) []chainSummary {
	t.Helper()
	var out []chainSummary
	for _, fc := range l.FilterChains {
		m := fc.FilterChainMatch
		s := chainSummary{Name: fc.Name, SNI: m.ServerNames, Dst: "*:" + port(m.DestinationPort.GetValue())}
		if len(m.PrefixRanges) > 0 {
			s.Dst = m.PrefixRanges[0].AddressPrefix + ":" + port(m.DestinationPort.GetValue())
		}
		for _, r := range m.SourcePrefixRanges {
			s.Sources = append(s.Sources, fmt.Sprintf("%s/%d", r.AddressPrefix, r.PrefixLen.GetValue()))
		}
		if len(fc.Filters) != 1 || fc.Filters[0].Name != wkTCPProxy {
			t.Fatalf("chain %s: filters %v; want one tcp_proxy", fc.Name, fc.Filters)
		}
		tp := unpack[*tcpproxyv3.TcpProxy](t, fc.Filters[0].GetTypedConfig())
		if c := tp.GetCluster(); c != "" {
			s.To = c
		} else {
			var ws []string
			for _, w := range tp.GetWeightedClusters().GetClusters() {
				ws = append(ws, fmt.Sprintf("%d:%s", w.Weight, w.Name))
			}
			s.To = strings.Join(ws, ",")
		}
		out = append(out, s)
	}
	return out
}

// l4Model: db (TCP 3306 on 10.1.0.5) routed by source labels and
// weights; web (TLS 443 on 10.1.0.6) routed by SNI, source and, for
// connections without a matching SNI, by a tcp rule; api.example.com
// (TLS 443, no address) by SNI alone.
func l4Model() *model.Model {
	a := workload("a", "10.0.0.1", model.ModeStrict)
	a.Labels["role"] = "reporting"
	b := workload("b", "10.0.0.2", model.ModeStrict)
	c := workload("c", "10.0.0.3", model.ModeDisable) // outside the mesh: never a source
	c.Labels["role"], c.OutsideMesh, c.Identity = "reporting", true, ""
	tlsPort := model.Port{Name: "tls", Port: 443, Protocol: model.ProtocolTLS}
	db := service("db", []string{"10.1.0.5"}, []model.Port{{Name: "tcp-mysql", Port: 3306, Protocol: model.ProtocolTCP}}, b)
	web := service("web", []string{"10.1.0.6"}, []model.Port{tlsPort}, b)
	api := &model.Service{Hostname: "api.example.com", Namespace: "ns", Name: "api", ServiceEntry: true, Resolution: "DNS",
		Ports: []model.Port{{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS}}, Endpoints: []*model.Endpoint{}}
	dst := func(h, subset string, w int32) model.Destination {
		return model.Destination{Host: h, Subset: subset, Weight: w}
	}
	routes := []*model.Route{{
		Namespace: "ns", Name: "api", Hosts: []string{"api.example.com"},
		TLS: []model.L4Route{{Matches: []model.L4Match{{SNIHosts: []string{"api.example.com"}, Port: 443}},
			Destinations: []model.Destination{dst("api.example.com", "", 100)}}},
	}, {
		Namespace: "ns", Name: "db", Hosts: []string{host("db")},
		TCP: []model.L4Route{
			{Matches: []model.L4Match{{Port: 3306, SourceLabels: map[string]string{"role": "reporting"}}}, Destinations: []model.Destination{dst(host("db"), "replica", 100)}},
			{Matches: []model.L4Match{{Port: 9999}}, Destinations: []model.Destination{dst(host("db"), "never", 100)}}, // another port
			{Destinations: []model.Destination{dst(host("db"), "v1", 80), dst(host("db"), "v2", 20), dst(host("db"), "v3", 0)}},
			{Destinations: []model.Destination{dst(host("db"), "unreachable", 100)}}, // after a rule without matches
		},
	}, {
		Namespace: "ns", Name: "web", Hosts: []string{host("web")},
		TLS: []model.L4Route{
			{Matches: []model.L4Match{{SNIHosts: []string{"a.web.example", "*.web.example"}, SourceLabels: map[string]string{"app": "a"}}},
				Destinations: []model.Destination{dst(host("web"), "x", 100)}},
			{Matches: []model.L4Match{{SNIHosts: []string{"*.web.example"}}}, Destinations: []model.Destination{dst(host("web"), "y", 100)}},
			{Matches: []model.L4Match{{SNIHosts: []string{"elsewhere.example"}, DestinationSubnets: []string{"192.168.0.0/16"}}}, // another VIP
				Destinations: []model.Destination{dst(host("web"), "never", 100)}},
		},
		TCP: []model.L4Route{{Matches: []model.L4Match{{SourceLabels: map[string]string{"app": "b"}}}, Destinations: []model.Destination{dst(host("web"), "z", 100)}}},
	}}
	return mesh([]*model.Service{db, web, api}, []*model.Workload{a, b, c}, routes, nil, nil)
}

func TestL4Routes(t *testing.T) {
	got := buildMesh(t, l4Model())
	db, web := host("db"), host("web")
	want := []chainSummary{
		{Name: "*_443|api.example.com", Dst: "*:443", SNI: []string{"api.example.com"}, To: "outbound|443||api.example.com"},
		{Name: "10.1.0.5_3306|tcp[0]", Dst: "10.1.0.5:3306", Sources: []string{"10.0.0.1/32"}, To: "outbound|3306|replica|" + db},
		{Name: "10.1.0.5_3306", Dst: "10.1.0.5:3306", To: "80:outbound|3306|v1|" + db + ",20:outbound|3306|v2|" + db},
		{Name: "10.1.0.6_443|tcp[0]", Dst: "10.1.0.6:443", Sources: []string{"10.0.0.2/32"}, To: "outbound|443|z|" + web},
		{Name: "10.1.0.6_443", Dst: "10.1.0.6:443", To: "outbound|443||" + web},
		{Name: "10.1.0.6_443|*.web.example|tls[0]", Dst: "10.1.0.6:443", SNI: []string{"*.web.example"}, Sources: []string{"10.0.0.1/32"}, To: "outbound|443|x|" + web},
		{Name: "10.1.0.6_443|*.web.example", Dst: "10.1.0.6:443", SNI: []string{"*.web.example"}, To: "outbound|443|y|" + web},
		{Name: "10.1.0.6_443|a.web.example|tls[0]", Dst: "10.1.0.6:443", SNI: []string{"a.web.example"}, Sources: []string{"10.0.0.1/32"}, To: "outbound|443|x|" + web},
		{Name: "10.1.0.6_443|a.web.example", Dst: "10.1.0.6:443", SNI: []string{"a.web.example"}, To: "outbound|443|y|" + web},
	}
	if d := gocmp.Diff(want, summarize(t, got.Outbound)); d != "" {
		t.Errorf("outbound chains (-want +got):\n%s", d)
	}
	wantFilters := []*listenerv3.ListenerFilter{b().originalDst()[0], {
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &tlsinspectorv3.TlsInspector{})},
		FilterDisabled: &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{
			NotMatch: &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
				DestinationPortRange: &typev3.Int32Range{Start: 443, End: 444}}}}},
	}}
	if d := gocmp.Diff(wantFilters, got.Outbound.ListenerFilters, protocmp.Transform()); d != "" {
		t.Errorf("listener filters (-want +got):\n%s", d)
	}
	weighted := unpack[*tcpproxyv3.TcpProxy](t, findChain(t, got.Outbound, "10.1.0.5_3306").Filters[0].GetTypedConfig())
	if weighted.StatPrefix != "outbound|3306||"+db {
		t.Errorf("weighted stat prefix %q; want the service port's cluster", weighted.StatPrefix)
	}
}

// TestL4RoutesWithoutRules: a TCP port whose host has no route, or a
// route with only HTTP rules, keeps its one chain and no tls_inspector.
func TestL4RoutesWithoutRules(t *testing.T) {
	w := workload("a", "10.0.0.1", model.ModeStrict)
	s := service("db", []string{"10.1.0.5"}, []model.Port{tcpPort(3306), {Name: "tls", Port: 443, Protocol: model.ProtocolTLS}}, w)
	for _, routes := range [][]*model.Route{nil, {{Namespace: "ns", Name: "db", Hosts: []string{host("db")},
		HTTP: []model.HTTPRoute{{Destinations: []model.Destination{{Host: host("db"), Subset: "v1", Weight: 100}}}}}}} {
		got := buildMesh(t, mesh([]*model.Service{s}, []*model.Workload{w}, routes, nil, nil))
		want := []chainSummary{
			{Name: "10.1.0.5_3306", Dst: "10.1.0.5:3306", To: "outbound|3306||" + host("db")},
			{Name: "10.1.0.5_443", Dst: "10.1.0.5:443", To: "outbound|443||" + host("db")},
		}
		if d := gocmp.Diff(want, summarize(t, got.Outbound)); d != "" {
			t.Errorf("routes %v: chains (-want +got):\n%s", routes, d)
		}
		if len(got.Outbound.ListenerFilters) != 1 {
			t.Errorf("routes %v: listener filters %v; want original_dst only", routes, got.Outbound.ListenerFilters)
		}
	}
}

// TestL4RoutesTLSInspectorPorts: with SNI chains on several ports the
// inspector runs on those ports only (or_match).
func TestL4RoutesTLSInspectorPorts(t *testing.T) {
	s := service("web", []string{"10.1.0.6"}, []model.Port{{Name: "tls", Port: 443, Protocol: model.ProtocolTLS},
		{Name: "https-alt", Port: 8443, Protocol: model.ProtocolHTTPS}, tcpPort(5432)})
	r := &model.Route{Namespace: "ns", Name: "web", Hosts: []string{host("web")}, TLS: []model.L4Route{{
		Matches: []model.L4Match{{SNIHosts: []string{"a.example"}}}, Destinations: []model.Destination{{Host: host("web"), Subset: "x", Weight: 100}},
	}}}
	got := buildMesh(t, mesh([]*model.Service{s}, nil, []*model.Route{r}, nil, nil))
	if n := len(got.Outbound.ListenerFilters); n != 2 {
		t.Fatalf("%d listener filters; want original_dst and tls_inspector", n)
	}
	var ports []string
	for _, p := range got.Outbound.ListenerFilters[1].FilterDisabled.GetNotMatch().GetOrMatch().GetRules() {
		ports = append(ports, fmt.Sprintf("%d-%d", p.GetDestinationPortRange().Start, p.GetDestinationPortRange().End))
	}
	if d := gocmp.Diff([]string{"443-444", "8443-8444"}, ports); d != "" {
		t.Errorf("inspected ports (-want +got):\n%s", d)
	}
	var sni []string
	for _, fc := range got.Outbound.FilterChains {
		if len(fc.FilterChainMatch.ServerNames) > 0 {
			sni = append(sni, fc.Name)
		}
	}
	if d := gocmp.Diff([]string{"10.1.0.6_443|a.example", "10.1.0.6_8443|a.example"}, sni); d != "" {
		t.Errorf("SNI chains (-want +got): none on the TCP port\n%s", d)
	}
}

func TestSNICovers(t *testing.T) {
	for _, tc := range []struct {
		pattern, server string
		want            bool
	}{
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "b.example.com", false},
		{"*", "a.example.com", true},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.example.com", true},
		{"*.example.com", "*.eu.example.com", true},
		{"*.eu.example.com", "*.example.com", false},
		{"*.com", "*.example.com", true},
		{"a.example.com", "*.example.com", false},
		{"*example.com", "aexample.com", false}, // not a wildcard Envoy or Istio accepts
	} {
		if got := sniCovers(tc.pattern, tc.server); got != tc.want {
			t.Errorf("sniCovers(%q, %q) = %v; want %v", tc.pattern, tc.server, got, tc.want)
		}
	}
}

func TestL4RouteErrors(t *testing.T) {
	s := service("db", []string{"10.1.0.5"}, []model.Port{tcpPort(3306)})
	r := &model.Route{Namespace: "ns", Name: "db", Hosts: []string{host("db")}, TCP: []model.L4Route{
		{Destinations: []model.Destination{{Host: host("db"), Weight: 0}, {Host: host("db"), Subset: "v2", Weight: 0}}},
	}}
	_, err := BuildMesh(mesh([]*model.Service{s}, nil, []*model.Route{r}, nil, nil))
	if err == nil || !strings.Contains(err.Error(), "virtual service ns/db tcp[0]: no destination with a weight") {
		t.Errorf("error %v; want one naming virtual service ns/db tcp[0]", err)
	}
}

// TestOutsideMesh: a workload outside the mesh is reached in plaintext
// (its endpoints get the plaintext transport socket match, or the
// cluster none), its identity is in no SAN match, and it has no inbound
// chain.
func TestOutsideMesh(t *testing.T) {
	in := workload("in", "10.0.0.1", model.ModeStrict)
	out := workload("out", "10.0.0.2", model.ModeDisable)
	out.OutsideMesh, out.OutsideMeshBy, out.Identity = true, "pod label fibmesh.io/capture=disabled", ""
	svcs := []*model.Service{
		service("mixed", []string{"10.1.0.1"}, []model.Port{httpPort(80)}, in, out),
		service("legacy", []string{"10.1.0.2"}, []model.Port{tcpPort(5432)}, out),
	}
	m := mesh(svcs, []*model.Workload{in, out}, nil, nil, nil)
	got := buildMesh(t, m)
	mixed := findCluster(t, got, "outbound|80||"+host("mixed"))
	if d := gocmp.Diff(wantUpstreamTLS(t, in.Identity), mixed.TransportSocket, protocmp.Transform()); d != "" {
		t.Errorf("mixed: transport socket (-want +got): only the captured endpoint's identity\n%s", d)
	}
	if len(mixed.TransportSocketMatches) != 1 {
		t.Errorf("mixed: transport socket matches %v; want the plaintext one", mixed.TransportSocketMatches)
	}
	var plain []string
	for _, loc := range findCLA(t, got, mixed.Name).Endpoints {
		for _, e := range loc.LbEndpoints {
			if e.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() == "disabled" {
				plain = append(plain, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
	}
	if d := gocmp.Diff([]string{"10.0.0.2"}, plain); d != "" {
		t.Errorf("plaintext endpoints (-want +got):\n%s", d)
	}
	if ts := findCluster(t, got, "outbound|5432||"+host("legacy")).TransportSocket; ts != nil {
		t.Errorf("legacy: transport socket %v; want plaintext", ts)
	}
	for _, l := range nodeListeners(t, m, "n1") {
		for _, fc := range l.FilterChains {
			if strings.HasPrefix(fc.Name, "ns/out|") {
				t.Errorf("listener %s: chain %s for a workload outside the mesh", l.Name, fc.Name)
			}
		}
	}
	// With only it on the node, there are no inbound listeners at all.
	if ls := nodeListeners(t, mesh(svcs, []*model.Workload{out}, nil, nil, nil), "n1"); len(ls) != 0 {
		t.Errorf("inbound listeners %v; want none", names(ls))
	}
	if !slices.ContainsFunc(nodeListeners(t, m, "n1")[0].FilterChains, func(fc *listenerv3.FilterChain) bool { return fc.Name == "ns/in|*" }) {
		t.Error("the captured workload lost its chains")
	}
}

func b() *builder { return &builder{} }
