package envoy

import (
	"cmp"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/fibmesh/fibmesh/controller/model"
)

// A hand-made model: one namespace "ns", services with one endpoint per
// workload, every workload on node "n1".

func httpPort(n int32) model.Port {
	return model.Port{Name: "http", Port: n, Protocol: model.ProtocolHTTP}
}
func tcpPort(n int32) model.Port {
	return model.Port{Name: "tcp", Port: n, Protocol: model.ProtocolTCP}
}

func workload(name, ip string, mode model.Mode) *model.Workload {
	return &model.Workload{Namespace: "ns", Name: name, IP: ip, Node: "n1", ServiceAccount: name,
		Identity: model.Identity("cluster.local", "ns", name), DefaultMode: mode, Labels: map[string]string{"app": name}}
}

func service(name string, vips []string, ports []model.Port, ws ...*model.Workload) *model.Service {
	s := &model.Service{Hostname: name + ".ns.svc.cluster.local", Namespace: "ns", Name: name, VIPs: vips, Ports: ports, Endpoints: []*model.Endpoint{}}
	for _, w := range ws {
		s.Endpoints = append(s.Endpoints, &model.Endpoint{Address: w.IP, Ready: true, Node: w.Node, Workload: "ns/" + w.Name, Identity: w.Identity, Labels: w.Labels})
	}
	return s
}

// mesh sorts what the model keeps sorted.
func mesh(svcs []*model.Service, ws []*model.Workload, routes []*model.Route, dps []*model.DestinationPolicy, aps []*model.AuthzPolicy) *model.Model {
	slices.SortFunc(svcs, func(a, b *model.Service) int { return strings.Compare(a.Hostname, b.Hostname) })
	slices.SortFunc(ws, func(a, b *model.Workload) int { return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	return &model.Model{Version: 1, TrustDomain: "cluster.local", Services: svcs, Workloads: ws, Routes: routes,
		DestinationPolicies: dps, AuthzPolicies: aps, MeshMTLS: model.ModeStrict}
}

func host(name string) string { return name + ".ns.svc.cluster.local" }

func TestNoVirtualServiceDefaultRoute(t *testing.T) {
	w := workload("a", "10.0.0.1", model.ModeStrict)
	got := buildMesh(t, mesh([]*model.Service{service("a", []string{"10.1.0.1"}, []model.Port{httpPort(80)}, w)}, []*model.Workload{w}, nil, nil, nil))
	want := []*routev3.Route{{Name: "default", Match: prefixAll(), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|80||" + host("a")},
		Timeout:          secs(0),
		RetryPolicy:      wantRetry(t, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", 2, nil, 503),
	}}}}
	if d := gocmp.Diff(want, findRoute(t, got, host("a")+":80").VirtualHosts[0].Routes, protocmp.Transform()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestHeadlessService(t *testing.T) {
	w := workload("a", "10.0.0.1", model.ModeStrict)
	got := buildMesh(t, mesh([]*model.Service{service("a", nil, []model.Port{httpPort(80)}, w)}, []*model.Workload{w}, nil, nil, nil))
	if len(got.Outbound.FilterChains) != 0 {
		t.Errorf("headless service has outbound chains %v", got.Outbound.FilterChains)
	}
	if len(got.Routes) != 0 {
		t.Errorf("headless service has route configurations (unreferenced): %v", got.Routes)
	}
	findCluster(t, got, "outbound|80||"+host("a"))
	findCLA(t, got, "outbound|80||"+host("a"))
}

// The model's routes: regex, method and port matches, numeric retry
// codes, 0 attempts, a gRPC abort, a port-less destination.
func TestRouteMatches(t *testing.T) {
	w := workload("a", "10.0.0.1", model.ModeStrict)
	b := workload("b", "10.0.0.2", model.ModeStrict)
	svcs := []*model.Service{
		service("a", []string{"10.1.0.1"}, []model.Port{httpPort(80), {Name: "grpc", Port: 81, Protocol: model.ProtocolGRPC}}, w),
		service("b", []string{"10.1.0.2"}, []model.Port{httpPort(90)}, b),
	}
	r := &model.Route{Namespace: "ns", Name: "a", Hosts: []string{host("a")}, HTTP: []model.HTTPRoute{{
		Name:         "only-81",
		Matches:      []model.Match{{Port: 81, URI: &model.StringMatch{Kind: "exact", Value: "/x"}}},
		Destinations: []model.Destination{{Host: host("a"), Weight: 100}},
		Fault:        &model.Fault{AbortPercent: 0.5, AbortGRPCStatus: "UNAVAILABLE"},
	}, {
		Name: "regex",
		Matches: []model.Match{{URI: &model.StringMatch{Kind: "regex", Value: "/v[0-9]+/.*"}, Method: &model.StringMatch{Kind: "exact", Value: "POST"},
			Headers: map[string]model.StringMatch{"z": {Kind: "prefix", Value: ""}, "a": {Kind: "regex", Value: "x.*"}}}},
		Destinations: []model.Destination{{Host: host("b"), Weight: 100}},
		Retries:      &model.Retries{Attempts: 4, RetryOn: []string{"gateway-error", "503"}},
	}, {
		Name:         "no-retries",
		Destinations: []model.Destination{{Host: host("a"), Weight: 100}},
		Retries:      &model.Retries{Attempts: 0},
	}}}
	got := buildMesh(t, mesh(svcs, []*model.Workload{w, b}, []*model.Route{r}, nil, nil))
	want := []*routev3.Route{{
		Name: "regex",
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v[0-9]+/.*"}},
			Headers: []*routev3.HeaderMatcher{
				{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("POST")}},
				{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "x.*"}}}}},
				{Name: "z", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
			},
		},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|90||" + host("b")}, // b's only port
			Timeout:          secs(0),
			RetryPolicy:      wantRetry(t, "gateway-error,retriable-status-codes", 4, nil, 503),
		}},
	}, {
		Name: "no-retries", Match: prefixAll(),
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|80||" + host("a")}, Timeout: secs(0)}},
	}}
	if d := gocmp.Diff(want, findRoute(t, got, host("a")+":80").VirtualHosts[0].Routes, protocmp.Transform()); d != "" {
		t.Errorf("port 80 (-want +got):\n%s", d)
	}
	r81 := findRoute(t, got, host("a")+":81").VirtualHosts[0].Routes
	if len(r81) != 3 || r81[0].Name != "only-81" || r81[0].GetMatch().GetPath() != "/x" {
		t.Fatalf("port 81 routes %v; want only-81 first", r81)
	}
	if c := r81[0].GetRoute().GetCluster(); c != "outbound|81||"+host("a") {
		t.Errorf("port-less destination of a 2-port service: %s; want the routed port 81", c)
	}
	f := unpack[*faultv3.HTTPFault](t, r81[0].TypedPerFilterConfig["envoy.filters.http.fault"])
	if f.GetAbort().GetGrpcStatus() != 14 || f.GetAbort().GetPercentage().GetNumerator() != 5000 {
		t.Errorf("abort %v; want grpc 14 at 5000/1e6", f.GetAbort())
	}
	// GRPC upstreams speak HTTP/2.
	if _, ok := findCluster(t, got, "outbound|81||"+host("a")).TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Error("grpc cluster without HttpProtocolOptions")
	}
}

func TestServiceEntries(t *testing.T) {
	ext := &model.Service{Hostname: "ext.example.com", Namespace: "ns", Name: "ext", ServiceEntry: true, Location: "MESH_EXTERNAL", Resolution: "STATIC",
		VIPs: []string{"192.0.2.1"}, Ports: []model.Port{tcpPort(5432)}, Endpoints: []*model.Endpoint{{Address: "192.0.2.10", Ready: true, Identity: "spiffe://cluster.local/ns/ns/sa/x"}}}
	internal := &model.Service{Hostname: "vm.example.com", Namespace: "ns", Name: "vm", ServiceEntry: true, Location: "MESH_INTERNAL", Resolution: "STATIC",
		VIPs: []string{"192.0.2.2"}, Ports: []model.Port{tcpPort(5432)}, Endpoints: []*model.Endpoint{{Address: "192.0.2.20", Ready: true, Identity: "spiffe://cluster.local/ns/ns/sa/vm"}}}
	none := &model.Service{Hostname: "none.example.com", Namespace: "ns", Name: "none", ServiceEntry: true, Location: "MESH_EXTERNAL", Resolution: "NONE",
		VIPs: []string{"192.0.2.3"}, Ports: []model.Port{tcpPort(443)}, Endpoints: []*model.Endpoint{}}
	got := buildMesh(t, mesh([]*model.Service{ext, internal, none}, nil, nil, nil, nil))
	c := findCluster(t, got, "outbound|5432||ext.example.com")
	if c.TransportSocket != nil {
		t.Errorf("MESH_EXTERNAL cluster has a transport socket: %v", c.TransportSocket)
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		t.Errorf("STATIC ServiceEntry: %v; want EDS", c.GetType())
	}
	if d := gocmp.Diff(wantUpstreamTLS(t, "spiffe://cluster.local/ns/ns/sa/vm"), findCluster(t, got, "outbound|5432||vm.example.com").TransportSocket, protocmp.Transform()); d != "" {
		t.Errorf("MESH_INTERNAL tls (-want +got):\n%s", d)
	}
	if c := findCluster(t, got, "outbound|443||none.example.com"); c.GetType() != clusterv3.Cluster_ORIGINAL_DST || c.LbPolicy != clusterv3.Cluster_CLUSTER_PROVIDED {
		t.Errorf("resolution NONE: %v %v; want ORIGINAL_DST, CLUSTER_PROVIDED", c.GetType(), c.LbPolicy)
	}
	tp := unpack[*tcpproxyv3.TcpProxy](t, findChain(t, got.Outbound, "192.0.2.1_5432").Filters[0].GetTypedConfig())
	if tp.GetCluster() != "outbound|5432||ext.example.com" {
		t.Errorf("tcp chain to %s", tp.GetCluster())
	}
}

// A DISABLE port: no mTLS chain, a plaintext one; clients speak
// plaintext to it, and a service with both kinds of endpoints gets a
// transport socket match for the DISABLE ones.
func TestDisablePort(t *testing.T) {
	off := workload("off", "10.0.0.1", model.ModeStrict)
	off.PortModes = map[uint32]model.Mode{8080: model.ModeDisable, 9999: model.ModeStrict}
	on := workload("on", "10.0.0.2", model.ModeStrict)
	svcs := []*model.Service{
		service("off", []string{"10.1.0.1"}, []model.Port{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}}, off),
		service("mixed", []string{"10.1.0.2"}, []model.Port{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}}, off, on),
	}
	for _, s := range svcs {
		for _, e := range s.Endpoints {
			e.Ports = []model.EndpointPort{{Name: "http", Port: 8080}}
		}
	}
	m := mesh(svcs, []*model.Workload{off, on}, nil, nil, nil)
	got := buildMesh(t, m)
	if ts := findCluster(t, got, "outbound|80||"+host("off")).TransportSocket; ts != nil {
		t.Errorf("all endpoints DISABLE: transport socket %v; want plaintext", ts)
	}
	mixed := findCluster(t, got, "outbound|80||"+host("mixed"))
	if mixed.TransportSocket == nil || len(mixed.TransportSocketMatches) != 1 {
		t.Fatalf("mixed: tls %v, matches %v; want tls with one plaintext match", mixed.TransportSocket, mixed.TransportSocketMatches)
	}
	var marked []string
	for _, loc := range findCLA(t, got, mixed.Name).Endpoints {
		for _, e := range loc.LbEndpoints {
			if e.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() == "disabled" {
				marked = append(marked, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
	}
	if d := gocmp.Diff([]string{"10.0.0.1"}, marked); d != "" {
		t.Errorf("plaintext endpoints (-want +got):\n%s", d)
	}

	ls := nodeListeners(t, m, "n1")
	mtls, plain := findListener(ls, "inbound"), findListener(ls, "inbound-plaintext")
	// The DISABLE port's mTLS chain refuses: without it, the STRICT
	// catch-all (or another pod's port 8080 chain) would decide.
	refuse := findChain(t, mtls, "ns/off|8080").Filters
	if len(refuse) != 2 || refuse[0].Name != wkNetworkRBAC {
		t.Fatalf("DISABLE port's mTLS chain filters %v; want network RBAC, tcp_proxy", refuse)
	}
	if r := unpack[*netrbacv3.RBAC](t, refuse[0].GetTypedConfig()).GetRules(); r.GetAction() != rbacv3.RBAC_ALLOW || len(r.GetPolicies()) != 0 {
		t.Errorf("DISABLE port's mTLS chain RBAC %v; want ALLOW without policies (deny all)", r)
	}
	findChain(t, plain, "ns/off|8080")
	findChain(t, mtls, "ns/off|9999") // a port-level STRICT port no service serves
	var plainNames []string
	for _, fc := range plain.FilterChains {
		plainNames = append(plainNames, fc.Name)
	}
	if d := gocmp.Diff([]string{"ns/off|8080"}, plainNames); d != "" {
		t.Errorf("plaintext chains (-want +got):\n%s", d)
	}
}

// rbacOf returns the RBAC filters of a workload's first HTTP chain (as
// actions and policies) and of its catch-all TCP chain.
func rbacOf(t *testing.T, m *model.Model, chain string) (httpRules, tcpRules []*rbacv3.RBAC) {
	t.Helper()
	l := findListener(nodeListeners(t, m, "n1"), "inbound")
	h := unpack[*hcmv3.HttpConnectionManager](t, findChain(t, l, chain+"|80").Filters[0].GetTypedConfig())
	for _, f := range h.HttpFilters[:len(h.HttpFilters)-1] {
		if f.Name != "envoy.filters.http.rbac" {
			t.Fatalf("filter %s before router", f.Name)
		}
		httpRules = append(httpRules, unpack[*httprbacv3.RBAC](t, f.GetTypedConfig()).Rules)
	}
	fs := findChain(t, l, chain+"|*").Filters
	for _, f := range fs[:len(fs)-1] {
		tcpRules = append(tcpRules, unpack[*netrbacv3.RBAC](t, f.GetTypedConfig()).Rules)
	}
	return httpRules, tcpRules
}

func authzModel(aps ...*model.AuthzPolicy) *model.Model {
	w := workload("a", "10.0.0.1", model.ModeStrict)
	for _, ap := range aps {
		ap.Namespace, ap.Workloads = "ns", []string{"ns/a"}
	}
	return mesh([]*model.Service{service("a", []string{"10.1.0.1"}, []model.Port{httpPort(80)}, w)}, []*model.Workload{w}, nil, nil, aps)
}

func principalID(s string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exact(s)}}}
}

var (
	anyP   = &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	noneP  = &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: anyP}}
	anyPm  = &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	nonePm = &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: anyPm}}
)

func pol(perm *rbacv3.Permission, id *rbacv3.Principal) *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{perm}, Principals: []*rbacv3.Principal{id}}
}

func TestAuthz(t *testing.T) {
	const rule0 = "ns[ns]-policy[p]-rule[0]"
	allowFrom := func(src model.AuthzSource) *model.AuthzPolicy {
		return &model.AuthzPolicy{Name: "p", Action: "ALLOW", Rules: []model.AuthzRule{{From: []model.AuthzSource{src}}}}
	}
	for _, tc := range []struct {
		name      string
		policies  []*model.AuthzPolicy
		wantHTTP  []*rbacv3.RBAC
		wantTCP   []*rbacv3.RBAC // nil: same as wantHTTP
		sameAsTCP bool
	}{{
		name: "DENY before ALLOW",
		policies: []*model.AuthzPolicy{
			{Name: "p", Action: "ALLOW", Rules: []model.AuthzRule{{From: []model.AuthzSource{{Principals: []string{"cluster.local/ns/ns/sa/x"}}}}}},
			{Name: "q", Action: "DENY", Rules: []model.AuthzRule{{From: []model.AuthzSource{{IPBlocks: []string{"10.9.0.0/16"}}}}}},
		},
		wantHTTP: []*rbacv3.RBAC{
			{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"ns[ns]-policy[q]-rule[0]": pol(anyPm, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: wantCIDR("10.9.0.0", 16)}})}},
			{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{rule0: pol(anyPm, principalID("spiffe://cluster.local/ns/ns/sa/x"))}},
		},
		sameAsTCP: true,
	}, {
		name:      "ALLOW without rules denies everything",
		policies:  []*model.AuthzPolicy{{Name: "p", Action: "ALLOW"}},
		wantHTTP:  []*rbacv3.RBAC{{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}},
		sameAsTCP: true,
	}, {
		name:      "DENY only: what it does not match is allowed; a DENY without rules installs nothing",
		policies:  []*model.AuthzPolicy{{Name: "p", Action: "DENY", Rules: []model.AuthzRule{{}}}, {Name: "q", Action: "DENY"}},
		wantHTTP:  []*rbacv3.RBAC{{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{rule0: pol(anyPm, anyP)}}},
		sameAsTCP: true,
	}, {
		name:      "AUDIT and CUSTOM are skipped",
		policies:  []*model.AuthzPolicy{{Name: "p", Action: "AUDIT", Rules: []model.AuthzRule{{}}}, {Name: "q", Action: "CUSTOM", Rules: []model.AuthzRule{{}}}},
		sameAsTCP: true,
	}, {
		name: "not values, wildcards, namespaces, service accounts",
		policies: []*model.AuthzPolicy{allowFrom(model.AuthzSource{
			NotPrincipals: []string{"cluster.local/ns/bad/*"}, Namespaces: []string{"prod"}, ServiceAccounts: []string{"web", "other/db"},
		})},
		wantHTTP: []*rbacv3.RBAC{{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{rule0: pol(anyPm, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
				PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/ns/bad/"}}}}}}},
			{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*/ns/prod/.*"}}}}}},
			{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				principalID("spiffe://cluster.local/ns/ns/sa/web"), principalID("spiffe://cluster.local/ns/other/sa/db"),
			}}}},
		}}}})}}},
		sameAsTCP: true,
	}, {
		name:     "HTTP-only fields: ALLOW rule matches nothing on TCP",
		policies: []*model.AuthzPolicy{{Name: "p", Action: "ALLOW", Rules: []model.AuthzRule{{To: []model.AuthzOperation{{NotMethods: []string{"DELETE"}, Ports: []string{"80"}}}}}}},
		wantHTTP: []*rbacv3.RBAC{{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{rule0: pol(&rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}},
			{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("DELETE")}}}}}},
		}}}}, anyP)}}},
		wantTCP: []*rbacv3.RBAC{{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{rule0: pol(nonePm, anyP)}}},
	}, {
		name:     "HTTP-only fields: DENY ignores them on TCP",
		policies: []*model.AuthzPolicy{{Name: "p", Action: "DENY", Rules: []model.AuthzRule{{To: []model.AuthzOperation{{Paths: []string{"*/admin"}, Ports: []string{"80"}}}}}}},
		wantHTTP: []*rbacv3.RBAC{{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{rule0: pol(&rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}},
			{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/admin"}}}}}},
		}}}}, anyP)}}},
		wantTCP: []*rbacv3.RBAC{{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{rule0: pol(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}}, anyP)}}},
	}, {
		name:      "unknown condition key: ALLOW fails closed",
		policies:  []*model.AuthzPolicy{{Name: "p", Action: "ALLOW", Rules: []model.AuthzRule{{When: []model.Condition{{Key: "experimental.envoy.filters.x", Values: []string{"y"}}}}}}},
		wantHTTP:  []*rbacv3.RBAC{{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{rule0: pol(nonePm, anyP)}}},
		sameAsTCP: true,
	}, {
		name: "unknown condition key: DENY fails closed (the key is ignored, the rest denies)",
		policies: []*model.AuthzPolicy{{Name: "p", Action: "DENY", Rules: []model.AuthzRule{{
			From: []model.AuthzSource{{Namespaces: []string{"x"}}}, When: []model.Condition{{Key: "request.regex.headers[x]", Values: []string{"y"}}},
		}}}},
		wantHTTP: []*rbacv3.RBAC{{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{rule0: pol(anyPm, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*/ns/x/.*"}}}}}})}}},
		sameAsTCP: true,
	}, {
		name: "conditions: source.ip, destination.port notValues, request principals (no JWT)",
		policies: []*model.AuthzPolicy{{Name: "p", Action: "ALLOW", Rules: []model.AuthzRule{{
			When: []model.Condition{{Key: "source.ip", Values: []string{"10.0.0.9"}}, {Key: "destination.port", NotValues: []string{"81"}}},
		}, {
			From: []model.AuthzSource{{RequestPrincipals: []string{"*"}}},
		}}}},
		wantHTTP: []*rbacv3.RBAC{{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			rule0: pol(&rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 81}}}},
				&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: wantCIDR("10.0.0.9", 32)}}),
			"ns[ns]-policy[p]-rule[1]": pol(anyPm, noneP),
		}}},
		sameAsTCP: true,
	}, {
		name:      "an unparsable ipBlock in a not field still fails closed",
		policies:  []*model.AuthzPolicy{allowFrom(model.AuthzSource{NotIPBlocks: []string{"10.0.0.0/99"}})},
		wantHTTP:  []*rbacv3.RBAC{{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{rule0: pol(anyPm, noneP)}}},
		sameAsTCP: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			gotHTTP, gotTCP := rbacOf(t, authzModel(tc.policies...), "ns/a")
			if d := gocmp.Diff(tc.wantHTTP, gotHTTP, protocmp.Transform()); d != "" {
				t.Errorf("http (-want +got):\n%s", d)
			}
			wantTCP := tc.wantTCP
			if tc.sameAsTCP {
				wantTCP = tc.wantHTTP
			}
			if d := gocmp.Diff(wantTCP, gotTCP, protocmp.Transform()); d != "" {
				t.Errorf("tcp (-want +got):\n%s", d)
			}
		})
	}
}

func wantCIDR(addr string, n uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: addr, PrefixLen: u32(n)}
}

// Two services on one VIP and port: one chain, the first service's; a
// UDP port: no cluster, no chain; PASSTHROUGH: an ORIGINAL_DST cluster.
func TestOutboundConflicts(t *testing.T) {
	a := service("a", []string{"10.1.0.1"}, []model.Port{httpPort(80), {Name: "dns", Port: 53, Protocol: model.ProtocolUDP}})
	b := service("b", []string{"10.1.0.1", "not-an-ip"}, []model.Port{httpPort(80), tcpPort(81)})
	dp := &model.DestinationPolicy{Namespace: "ns", Name: "b", Host: host("b"), LoadBalancer: "PASSTHROUGH", Subsets: []model.Subset{{Name: "v1", Labels: map[string]string{"v": "1"}}}}
	got := buildMesh(t, mesh([]*model.Service{a, b}, nil, nil, []*model.DestinationPolicy{dp}, nil))
	var chains []string
	for _, fc := range got.Outbound.FilterChains {
		chains = append(chains, fc.Name)
	}
	if d := gocmp.Diff([]string{"10.1.0.1_80", "10.1.0.1_81"}, chains); d != "" {
		t.Errorf("chains (-want +got):\n%s", d)
	}
	if rds := unpack[*hcmv3.HttpConnectionManager](t, got.Outbound.FilterChains[0].Filters[0].GetTypedConfig()).GetRds().GetRouteConfigName(); rds != host("a")+":80" {
		t.Errorf("shared VIP routes to %s; want the first service's", rds)
	}
	var routes []string
	for _, r := range got.Routes {
		routes = append(routes, r.Name)
	}
	if d := gocmp.Diff([]string{host("a") + ":80"}, routes); d != "" {
		t.Errorf("routes (-want +got): b:80 has no chain, so no route\n%s", d)
	}
	for _, c := range got.Clusters {
		if strings.HasPrefix(c.Name, "outbound|53|") {
			t.Errorf("UDP port has cluster %s", c.Name)
		}
	}
	for _, name := range []string{"outbound|80||" + host("b"), "outbound|80|v1|" + host("b")} {
		if c := findCluster(t, got, name); c.GetType() != clusterv3.Cluster_ORIGINAL_DST || c.EdsClusterConfig != nil {
			t.Errorf("%s: %v; want ORIGINAL_DST without EDS", name, c.GetType())
		}
	}
}

// Unparsable durations are errors naming the resource and field.
func TestErrors(t *testing.T) {
	a := service("a", []string{"10.1.0.1"}, []model.Port{httpPort(80)})
	for _, tc := range []struct {
		name string
		m    *model.Model
		want string
	}{
		{"route timeout", mesh([]*model.Service{a}, nil, []*model.Route{{Namespace: "ns", Name: "vs", Hosts: []string{host("a")},
			HTTP: []model.HTTPRoute{{Destinations: []model.Destination{{Host: host("a"), Weight: 100}}, Timeout: "soon"}}}}, nil, nil),
			"virtual service ns/vs http[0]: timeout"},
		{"connect timeout", mesh([]*model.Service{a}, nil, nil, []*model.DestinationPolicy{{Namespace: "ns", Name: "dr", Host: host("a"), ConnectTimeout: "x"}}, nil),
			"destination rule ns/dr connectionPool.tcp.connectTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildMesh(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}
