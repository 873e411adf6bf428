package analyze

import (
	"strings"
	"testing"

	"istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
)

func l4dest(host, subset string, weight int32) *v1alpha3.RouteDestination {
	return &v1alpha3.RouteDestination{Destination: &v1alpha3.Destination{Host: host, Subset: subset}, Weight: weight}
}

// TestL4RouteDestinations: tcp and tls destinations are checked as HTTP
// ones are: known host and subset (IST0101), weights (FM0001).
func TestL4RouteDestinations(t *testing.T) {
	db := svc("default", "db", nil, port("tcp-postgres", 5432))
	dbR := dr("default", "db", &v1alpha3.DestinationRule{Host: "db", Subsets: []*v1alpha3.Subset{{Name: "v1"}, {Name: "v2"}}})
	good := vs("default", "db", &v1alpha3.VirtualService{Hosts: []string{"db"},
		Tcp: []*v1alpha3.TCPRoute{{Route: []*v1alpha3.RouteDestination{l4dest("db", "v1", 90), l4dest("db", "v2", 10)}}}})
	bad := vs("default", "db", &v1alpha3.VirtualService{Hosts: []string{"db"},
		Tcp: []*v1alpha3.TCPRoute{{Route: []*v1alpha3.RouteDestination{l4dest("db", "v3", 90), l4dest("db", "v2", 20)}}},
		Tls: []*v1alpha3.TLSRoute{{Match: []*v1alpha3.TLSMatchAttributes{{SniHosts: []string{"db"}}}, Route: []*v1alpha3.RouteDestination{l4dest("nosuch", "", 0)}}}})
	runCases(t, routeDestinations, []analyzerCase{
		{name: "known", snap: snap(db, dbR, good)},
		{name: "unknown subset and host", snap: snap(db, dbR, bad), want: []Finding{
			want(ReferencedResourceNotFound, bad, `Referenced host not found: "nosuch" (spec.tls[0].route[0].destination.host); no Service or ServiceEntry has host nosuch.default.svc.cluster.local: fix the host or add the Service`),
			want(ReferencedResourceNotFound, bad, `Referenced host+subset in destinationrule not found: "db+v3" (spec.tcp[0].route[0].destination.subset); no DestinationRule for host db.default.svc.cluster.local defines subset "v3": add it to the DestinationRule's subsets or fix the name`),
		}},
	})
	runCases(t, routeWeights, []analyzerCase{
		{name: "100", snap: snap(db, good)},
		{name: "110", snap: snap(db, bad), want: []Finding{
			want(RouteWeightsNotHundred, bad, "spec.tcp[0].route weights add up to 110 (90+20), not 100: traffic is split in proportion to them; set weights that add up to 100 to say what you mean"),
		}},
	})
}

func TestL4RoutesNotApplied(t *testing.T) {
	db := svc("default", "db", nil, port("tcp-postgres", 5432))
	web := svc("default", "web", nil, port("http", 80))
	headless := svc("default", "hl", nil, port("tls", 443))
	headless.Object.(*corev1.Service).Spec.ClusterIP = corev1.ClusterIPNone
	api := se("default", "api", &v1alpha3.ServiceEntry{Hosts: []string{"api.example.com"}, Ports: []*v1alpha3.ServicePort{{Number: 443, Name: "https", Protocol: "HTTPS"}}})
	tcp := func(host string, subnets ...string) *v1alpha3.TCPRoute {
		return &v1alpha3.TCPRoute{Match: []*v1alpha3.L4MatchAttributes{{DestinationSubnets: subnets}}, Route: []*v1alpha3.RouteDestination{l4dest(host, "", 0)}}
	}
	tls := func(host string, sni ...string) *v1alpha3.TLSRoute {
		return &v1alpha3.TLSRoute{Match: []*v1alpha3.TLSMatchAttributes{{SniHosts: sni}}, Route: []*v1alpha3.RouteDestination{l4dest(host, "", 0)}}
	}
	fine := vs("default", "fine", &v1alpha3.VirtualService{Hosts: []string{"db", "api.example.com"},
		Tcp: []*v1alpha3.TCPRoute{tcp("db", "10.96.0.0/16", "10.96.0.1")}, Tls: []*v1alpha3.TLSRoute{tls("api.example.com", "api.example.com")}})
	wrongPorts := vs("default", "ports", &v1alpha3.VirtualService{Hosts: []string{"web", "hl", "api.example.com"},
		Tcp: []*v1alpha3.TCPRoute{tcp("web")}, Tls: []*v1alpha3.TLSRoute{tls("web", "web.example")}})
	tlsWeb := vs("default", "tlsweb", &v1alpha3.VirtualService{Hosts: []string{"web"}, Tls: []*v1alpha3.TLSRoute{tls("web", "web.example")}})
	gatewayOnly := vs("default", "gw", &v1alpha3.VirtualService{Hosts: []string{"web"}, Gateways: []string{"ingress"}, Tcp: []*v1alpha3.TCPRoute{tcp("web")}})
	runCases(t, l4RoutesNotApplied, []analyzerCase{
		{name: "applies", snap: snap(db, api, fine)},
		{name: "bound to another gateway only", snap: snap(web, gatewayOnly)},
		{name: "hosts without the ports or address", snap: snap(web, headless, api, wrongPorts, tlsWeb), want: []Finding{
			want(L4RouteNotApplied, wrongPorts, "spec.tcp is never used: host api.example.com has no address (a headless Service, or a ServiceEntry without addresses) and tcp rules match on it; give it an address, or route its TLS with tls rules"),
			want(L4RouteNotApplied, wrongPorts, "spec.tcp is never used: host hl.default.svc.cluster.local has no address (a headless Service, or a ServiceEntry without addresses) and tcp rules match on it; give it an address, or route its TLS with tls rules"),
			want(L4RouteNotApplied, wrongPorts, "spec.tcp is never used: none of the ports of host web.default.svc.cluster.local is TCP, TLS, HTTPS or undeclared (ports: HTTP), and tcp rules apply to no other; use http rules, or name the port tcp-…"),
			want(L4RouteNotApplied, tlsWeb, "spec.tls is never used: none of the ports of host web.default.svc.cluster.local is TLS or HTTPS (ports: HTTP), and tls rules apply to no other; name the port tls-… or https-…, or set its protocol"),
		}},
	})
}

func TestStrictOutsideMesh(t *testing.T) {
	strict := &securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}}
	meshStrict := pa(RootNamespace, "default", strict)
	selStrict := pa("prod", "db", &securityv1beta1.PeerAuthentication{Selector: selector("app", "db"),
		PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{5432: {Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}}})
	permissive := pa("legacy", "default", &securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE}})
	in := pod("prod", "db-0", labelsOf("app", "db"))
	out := pod("prod", "db-1", labelsOf("app", "db", model.LabelCapture, model.CaptureDisabled))
	legacyNS := res("", "Namespace", "", "legacy", &corev1.Namespace{ObjectMeta: meta("", "legacy", labelsOf(model.LabelDataplaneMode, model.DataplaneModeNone))})
	old := pod("legacy", "old", nil)
	annotated := pod("prod", "web-0", labelsOf("app", "web"))
	annotated.Object.(*corev1.Pod).Annotations = map[string]string{model.LabelSidecarInject: "false"}
	hostNet := pod("prod", "db-host", labelsOf("app", "db"))
	hostNet.Object.(*corev1.Pod).Spec.HostNetwork = true
	runCases(t, strictOutsideMesh, []analyzerCase{
		{name: "every pod captured", snap: snap(meshStrict, selStrict, in)},
		{name: "hostNetwork", snap: snap(selStrict, in, hostNet), want: []Finding{
			want(PeerAuthenticationNotEnforced, selStrict, "STRICT mTLS cannot be enforced for pods outside the mesh: prod/db-host (hostNetwork); they are not captured and accept plaintext (fibmesh treats their ports as DISABLE): remove the label to bring them into the mesh (a hostNetwork pod shares its node's IP and cannot be), or narrow the policy's selector"),
		}},
		{name: "PERMISSIVE is not reported", snap: snap(permissive, legacyNS, old)},
		{name: "outside the mesh", snap: snap(meshStrict, selStrict, permissive, legacyNS, in, out, old, annotated), want: []Finding{
			want(PeerAuthenticationNotEnforced, meshStrict, "STRICT mTLS cannot be enforced for pods outside the mesh: legacy/old (namespace label istio.io/dataplane-mode=none), prod/db-1 (pod label fibmesh.io/capture=disabled), prod/web-0 (pod annotation sidecar.istio.io/inject=false); they are not captured and accept plaintext (fibmesh treats their ports as DISABLE): remove the label to bring them into the mesh, or narrow the policy's selector"),
			want(PeerAuthenticationNotEnforced, selStrict, "STRICT mTLS cannot be enforced for pods outside the mesh: prod/db-1 (pod label fibmesh.io/capture=disabled); they are not captured and accept plaintext (fibmesh treats their ports as DISABLE): remove the label to bring them into the mesh, or narrow the policy's selector"),
		}},
	})
	var many []config.Resource
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		many = append(many, pod("prod", n, labelsOf(model.LabelCapture, model.CaptureDisabled)))
	}
	nsStrict := pa("prod", "default", strict)
	fs := strictOutsideMesh(newIndex(snap(append(many, nsStrict)...)))
	if len(fs) != 1 || !strings.Contains(fs[0].Message, "prod/e (pod label fibmesh.io/capture=disabled) and 2 more;") {
		t.Errorf("findings %v; want one listing five pods and 2 more", fs)
	}
}
