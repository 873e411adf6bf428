package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestCaptureOff(t *testing.T) {
	type m = map[string]string
	for _, tc := range []struct {
		name                  string
		labels, annots, nsLbl m
		want                  string // "" for captured
	}{
		{"nothing", nil, nil, nil, ""},
		{"pod fibmesh.io/capture=disabled", m{LabelCapture: "disabled"}, nil, nil, "pod label fibmesh.io/capture=disabled"},
		{"pod fibmesh.io/capture=enabled", m{LabelCapture: "enabled"}, nil, nil, ""},
		{"pod istio.io/dataplane-mode=none", m{LabelDataplaneMode: "none"}, nil, nil, "pod label istio.io/dataplane-mode=none"},
		{"pod istio.io/dataplane-mode=ambient", m{LabelDataplaneMode: "ambient"}, nil, nil, ""},
		{"pod label sidecar.istio.io/inject=false", m{LabelSidecarInject: "false"}, nil, nil, "pod label sidecar.istio.io/inject=false"},
		{"pod label sidecar.istio.io/inject=False", m{LabelSidecarInject: "False"}, nil, nil, "pod label sidecar.istio.io/inject=False"},
		{"pod label sidecar.istio.io/inject=true", m{LabelSidecarInject: "true"}, nil, nil, ""},
		{"pod label sidecar.istio.io/inject=nonsense", m{LabelSidecarInject: "nope"}, nil, nil, ""},
		{"pod annotation sidecar.istio.io/inject=false", nil, m{LabelSidecarInject: "false"}, nil, "pod annotation sidecar.istio.io/inject=false"},
		{"namespace fibmesh.io/capture=disabled", nil, nil, m{LabelCapture: "disabled"}, "namespace label fibmesh.io/capture=disabled"},
		{"namespace istio.io/dataplane-mode=none", nil, nil, m{LabelDataplaneMode: "none"}, "namespace label istio.io/dataplane-mode=none"},
		{"namespace sidecar.istio.io/inject=false is not a namespace switch", nil, nil, m{LabelSidecarInject: "false"}, ""},
		{"the pod's reason first", m{LabelCapture: "disabled"}, nil, m{LabelDataplaneMode: "none"}, "pod label fibmesh.io/capture=disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why, off := CaptureOff(tc.labels, tc.annots, tc.nsLbl)
			if off != (tc.want != "") || why != tc.want {
				t.Errorf("CaptureOff = %q, %v; want %q, %v", why, off, tc.want, tc.want != "")
			}
		})
	}
}

// TestWorkloadOutsideMesh: a pod outside the mesh has no identity, every
// port DISABLE whatever PeerAuthentication says, and its endpoints carry
// no identity; a namespace outside the mesh takes its pods, and the
// modes of pods not seen yet, with it. A pod with hostNetwork shares its
// node's IP: it is outside the mesh too.
func TestWorkloadOutsideMesh(t *testing.T) {
	in := pod("prod", "in", "node1", "10.200.1.11", map[string]string{"app": "a"})
	out := pod("prod", "out", "node1", "10.200.1.12", map[string]string{"app": "a", LabelCapture: CaptureDisabled})
	annotated := pod("prod", "annotated", "node1", "10.200.1.13", map[string]string{"app": "a"})
	annotated.Annotations = map[string]string{LabelSidecarInject: "false"}
	legacy := pod("legacy", "old", "node2", "10.200.2.11", nil)
	hostNet := pod("prod", "hostnet", "node1", "10.100.0.1", map[string]string{"app": "a"})
	hostNet.Spec.HostNetwork = true
	nsLegacy := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Labels: map[string]string{LabelDataplaneMode: DataplaneModeNone}}}
	nsProd := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}
	strictPA := pa("strict", mtlsLevel{ns: RootNamespace, mode: strict})
	selecting := pa("sel", mtlsLevel{ns: "prod", selector: map[string]string{"app": "a"}, mode: strict, ports: map[uint32]securityapi.PeerAuthentication_MutualTLS_Mode{9080: permissive}})
	m := build(t, snap(nsProd, nsLegacy, in, out, annotated, legacy, hostNet, strictPA, selecting,
		service("prod", "a", "10.96.0.1", corev1.ServicePort{Name: "http", Port: 80}), slice("a", 8080, in, out, annotated)), nil, Options{})

	type got struct {
		Identity, By string
		Outside      bool
		Mode         Mode
		Ports        map[uint32]Mode
	}
	want := map[string]got{
		"legacy/old":     {By: "namespace label istio.io/dataplane-mode=none", Outside: true, Mode: ModeDisable},
		"prod/annotated": {By: "pod annotation sidecar.istio.io/inject=false", Outside: true, Mode: ModeDisable},
		"prod/hostnet":   {By: OutsideMeshHostNetwork, Outside: true, Mode: ModeDisable},
		"prod/in":        {Identity: "spiffe://cluster.local/ns/prod/sa/sa-in", Mode: ModeStrict, Ports: map[uint32]Mode{9080: ModePermissive}},
		"prod/out":       {By: "pod label fibmesh.io/capture=disabled", Outside: true, Mode: ModeDisable},
	}
	for _, w := range m.Workloads {
		key := w.Namespace + "/" + w.Name
		if d := cmp.Diff(want[key], got{w.Identity, w.OutsideMeshBy, w.OutsideMesh, w.DefaultMode, w.PortModes}, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("%s (-want +got):\n%s", key, d)
		}
		if w.OutsideMesh && m.MTLSMode(key, 9080) != ModeDisable {
			t.Errorf("MTLSMode(%s, 9080) = %s; want DISABLE", key, m.MTLSMode(key, 9080))
		}
	}
	if d := cmp.Diff([]string{"legacy"}, m.NamespacesOutsideMesh); d != "" {
		t.Errorf("namespaces outside the mesh (-want +got):\n%s", d)
	}
	if got := m.MTLSMode("legacy/not-seen-yet", 80); got != ModeDisable {
		t.Errorf("MTLSMode(legacy/not-seen-yet) = %s; want DISABLE", got)
	}
	if got := m.MTLSMode("prod/not-seen-yet", 80); got != ModeStrict {
		t.Errorf("MTLSMode(prod/not-seen-yet) = %s; want STRICT", got)
	}
	ids := map[string]string{}
	for _, e := range m.Services[0].Endpoints {
		ids[e.Workload] = e.Identity
	}
	if d := cmp.Diff(map[string]string{"prod/in": "spiffe://cluster.local/ns/prod/sa/sa-in", "prod/out": "", "prod/annotated": ""}, ids); d != "" {
		t.Errorf("endpoint identities (-want +got):\n%s", d)
	}
}

// TestCaptureLabelChanges: flipping the label (on the pod, or on its
// namespace) is a workload change on the pod's node.
func TestCaptureLabelChanges(t *testing.T) {
	p := pod("prod", "a", "node1", "10.200.1.11", map[string]string{"app": "a"})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}
	m := build(t, snap(ns, p), nil, Options{})
	for _, step := range []struct {
		name    string
		podLbl  map[string]string
		nsLbl   map[string]string
		outside bool
	}{
		{"pod label", map[string]string{"app": "a", LabelCapture: CaptureDisabled}, nil, true},
		{"pod label removed", map[string]string{"app": "a"}, nil, false},
		{"namespace label", map[string]string{"app": "a"}, map[string]string{LabelCapture: CaptureDisabled}, true},
		{"namespace label removed", map[string]string{"app": "a"}, nil, false},
	} {
		p2, ns2 := p.DeepCopy(), ns.DeepCopy()
		p2.Labels, ns2.Labels = step.podLbl, step.nsLbl
		next := build(t, snap(ns2, p2), m, Options{})
		if next.Workloads[0].OutsideMesh != step.outside {
			t.Errorf("%s: outside the mesh %v; want %v", step.name, next.Workloads[0].OutsideMesh, step.outside)
		}
		if ch := next.Change; !ch.Kinds.Workloads || !cmp.Equal(ch.LocalNodes, []string{"node1"}) {
			t.Errorf("%s: change %+v; want a workload change on node1", step.name, ch)
		}
		m = next
	}
}

// tcpTLSVS routes the TCP port 3306 of db: clients labelled
// role=reporting go to the replica subset, everyone else 80/20 between
// v1 and v2; TLS to api.example.com (sniHosts) goes to the egress host.
func tcpTLSVS() *networkingv1.VirtualService {
	dest := func(host, subset string, port uint32, w int32) *networkingapi.RouteDestination {
		d := &networkingapi.RouteDestination{Destination: &networkingapi.Destination{Host: host, Subset: subset}, Weight: w}
		if port != 0 {
			d.Destination.Port = &networkingapi.PortSelector{Number: port}
		}
		return d
	}
	vs := &networkingv1.VirtualService{ObjectMeta: om("prod", "db")}
	vs.Spec.Hosts = []string{"db", "api.example.com"}
	vs.Spec.Tcp = []*networkingapi.TCPRoute{{
		Match: []*networkingapi.L4MatchAttributes{{Port: 3306, SourceLabels: map[string]string{"role": "reporting"}, SourceNamespace: "prod"}},
		Route: []*networkingapi.RouteDestination{dest("db", "replica", 0, 0)},
	}, {
		Match: []*networkingapi.L4MatchAttributes{{DestinationSubnets: []string{"10.96.0.0/16"}}},
		Route: []*networkingapi.RouteDestination{dest("db", "v1", 3306, 80), dest("db.prod", "v2", 3306, 20)},
	}}
	vs.Spec.Tls = []*networkingapi.TLSRoute{{
		Match: []*networkingapi.TLSMatchAttributes{{SniHosts: []string{"api.example.com", "*.example.com", "httpbin.org", "db"}, Port: 443}},
		Route: []*networkingapi.RouteDestination{dest("api.example.com", "", 443, 0)},
	}}
	return vs
}

func TestL4Routes(t *testing.T) {
	m := build(t, snap(tcpTLSVS()), nil, Options{})
	want := &Route{
		Namespace: "prod", Name: "db", Hosts: []string{"db.prod.svc.cluster.local", "api.example.com"},
		TCP: []L4Route{{
			Matches:      []L4Match{{Port: 3306, SourceLabels: map[string]string{"role": "reporting"}, SourceNamespace: "prod"}},
			Destinations: []Destination{{Host: "db.prod.svc.cluster.local", Subset: "replica", Weight: 100}},
		}, {
			Matches: []L4Match{{DestinationSubnets: []string{"10.96.0.0/16"}}},
			Destinations: []Destination{{Host: "db.prod.svc.cluster.local", Subset: "v1", Port: 3306, Weight: 80},
				{Host: "db.prod.svc.cluster.local", Subset: "v2", Port: 3306, Weight: 20}},
		}},
		TLS: []L4Route{{
			Matches:      []L4Match{{SNIHosts: []string{"api.example.com", "*.example.com", "httpbin.org", "db.prod.svc.cluster.local"}, Port: 443}},
			Destinations: []Destination{{Host: "api.example.com", Port: 443, Weight: 100}},
		}},
	}
	if d := cmp.Diff(want, m.Routes[0], cmpopts.EquateEmpty()); d != "" {
		t.Errorf("route (-want +got):\n%s", d)
	}
	if !m.Routes[0].HasL4() {
		t.Error("HasL4() = false")
	}
	sel := m.Routes[0].TCP[0].Matches[0]
	for _, tc := range []struct {
		w    *Workload
		want bool
	}{
		{&Workload{Namespace: "prod", Labels: map[string]string{"role": "reporting", "app": "x"}}, true},
		{&Workload{Namespace: "other", Labels: map[string]string{"role": "reporting"}}, false},
		{&Workload{Namespace: "prod", Labels: map[string]string{"role": "web"}}, false},
		{&Workload{Namespace: "prod"}, false},
	} {
		if got := sel.SelectsSource(tc.w); got != tc.want {
			t.Errorf("SelectsSource(%s %v) = %v; want %v", tc.w.Namespace, tc.w.Labels, got, tc.want)
		}
	}
	if !sel.SelectsSources() || m.Routes[0].TCP[1].Matches[0].SelectsSources() {
		t.Error("SelectsSources: want true for the sourceLabels match only")
	}
}

// TestL4RouteChanges: a change to a route with tcp or tls rules, or to a
// route of a host another route gives such rules, is an L4 route change
// (the outbound listener); an HTTP-only route of other hosts is not.
func TestL4RouteChanges(t *testing.T) {
	l4 := tcpTLSVS()
	httpOnly := canaryVS()
	shadow := &networkingv1.VirtualService{ObjectMeta: om("prod", "a-db-http")} // sorts before prod/db: in force for db
	shadow.Spec.Hosts = []string{"db"}
	shadow.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "db"}}}}}
	base := []runtime.Object{node("node1", "10.100.0.1")}
	with := func(objs ...runtime.Object) []runtime.Object {
		return append(append([]runtime.Object{}, base...), objs...)
	}
	m := build(t, snap(with(httpOnly)...), nil, Options{})
	for _, step := range []struct {
		name   string
		objs   []runtime.Object
		wantL4 bool
	}{
		{"add a tcp/tls route", with(httpOnly, l4), true},
		{"edit an HTTP-only route of another host", with(canaryWith(70), l4), false},
		{"add an HTTP route for a host with tcp rules", with(canaryWith(70), l4, shadow), true},
		{"remove it", with(canaryWith(70), l4), true},
		{"remove the tcp/tls route", with(canaryWith(70)), true},
	} {
		next := build(t, snap(step.objs...), m, Options{})
		if k := next.Change.Kinds; !k.Routes || k.L4Routes != step.wantL4 {
			t.Errorf("%s: kinds %+v; want Routes, L4Routes %v", step.name, k, step.wantL4)
		}
		m = next
	}
}

// canaryWith is canaryVS with the split at w/100-w.
func canaryWith(w int32) *networkingv1.VirtualService {
	vs := canaryVS()
	vs.Spec.Http[1].Route[0].Weight, vs.Spec.Http[1].Route[1].Weight = w, 100-w
	return vs
}

// TestEndpointMTLSMode: an endpoint takes its pod's mode; one without a
// known pod (no targetRef: the API server, a VM) is outside the mesh,
// plaintext, unless it belongs to a MESH_INTERNAL ServiceEntry.
func TestEndpointMTLSMode(t *testing.T) {
	in := pod("prod", "in", "node1", "10.200.1.11", map[string]string{"app": "a"})
	strictPA := pa("strict", mtlsLevel{ns: RootNamespace, mode: strict})
	selecting := pa("sel", mtlsLevel{ns: "prod", selector: map[string]string{"app": "a"}, mode: strict, ports: map[uint32]securityapi.PeerAuthentication_MutualTLS_Mode{9080: permissive}})
	m := build(t, snap(in, strictPA, selecting), nil, Options{})
	podEP := &Endpoint{Address: "10.200.1.11", Workload: "prod/in"}
	noPod := &Endpoint{Address: "172.18.0.2"}
	for _, tc := range []struct {
		name string
		svc  *Service
		ep   *Endpoint
		port uint32
		want Mode
	}{
		{"pod, port-level mode", &Service{Namespace: "prod"}, podEP, 9080, ModePermissive},
		{"pod, default mode", &Service{Namespace: "prod"}, podEP, 8080, ModeStrict},
		{"Service endpoint without a pod", &Service{Namespace: "default"}, noPod, 6443, ModeDisable},
		{"MESH_EXTERNAL ServiceEntry", &Service{Namespace: "prod", ServiceEntry: true, Location: "MESH_EXTERNAL"}, noPod, 443, ModeDisable},
		{"ServiceEntry without location (MESH_EXTERNAL)", &Service{Namespace: "prod", ServiceEntry: true}, noPod, 443, ModeDisable},
		{"MESH_INTERNAL ServiceEntry: the mesh's mode", &Service{Namespace: "prod", ServiceEntry: true, Location: "MESH_INTERNAL"}, noPod, 443, ModeStrict},
	} {
		if got := m.EndpointMTLSMode(tc.svc, tc.ep, tc.port); got != tc.want {
			t.Errorf("%s: EndpointMTLSMode = %s; want %s", tc.name, got, tc.want)
		}
	}
}
