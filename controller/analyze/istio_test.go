package analyze

import (
	"testing"

	"istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Tests of the conditions taken from istioctl analyze's analyzers
// (exportTo, ports, namespaces, DestinationRule hosts and subsets).

func withExportTo(r config.Resource, exportTo ...string) config.Resource {
	switch o := r.Object.(type) {
	case *corev1.Service:
		o.Annotations = map[string]string{exportToAnnotation: join(exportTo)}
	default:
		switch s := specOf(r).(type) {
		case *v1alpha3.VirtualService:
			s.ExportTo = exportTo
		case *v1alpha3.ServiceEntry:
			s.ExportTo = exportTo
		case *v1alpha3.DestinationRule:
			s.ExportTo = exportTo
		}
	}
	return r
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

func TestRouteDestinationsVisibility(t *testing.T) {
	route := func(ns, name, host string) config.Resource {
		return vs(ns, name, &v1alpha3.VirtualService{Hosts: []string{"x"}, Http: []*v1alpha3.HTTPRoute{{
			Route: []*v1alpha3.HTTPRouteDestination{dest(host, "", 0)}}}})
	}
	local := withExportTo(svc("prod", "ratings", nil, port("http", 9080)), ".")
	toProd := withExportTo(svc("other", "ratings", nil, port("http", 9080)), "prod")
	extLocal := withExportTo(se("prod", "api", &v1alpha3.ServiceEntry{Hosts: []string{"api.example.com"}}), ".")
	wild := withExportTo(se("prod", "wild", &v1alpha3.ServiceEntry{Hosts: []string{"*.example.org"}}), ".")
	// A local catch-all in a namespace sorted first: the exact entry is
	// the one named.
	catchAll := withExportTo(se("aaa", "all", &v1alpha3.ServiceEntry{Hosts: []string{"*"}}), ".")
	fromDev := route("dev", "r", "ratings.prod.svc.cluster.local")
	fromProd := route("prod", "r", "ratings")
	extFromDev := route("dev", "ext", "api.example.com")
	wildFromProd := route("prod", "wild", "a.example.org")
	wildFromDev := route("dev", "wild", "a.example.org")
	toProdFromProd := route("prod", "other", "ratings.other.svc.cluster.local")
	toProdFromDev := route("dev", "other", "ratings.other.svc.cluster.local")
	// A VirtualService exported to "*" looks up hosts exported to all,
	// not those exported to its own namespace only, as in Istio.
	exported := withExportTo(route("prod", "exported", "ratings"), "*")
	notExported := func(r config.Resource, host, fq, ns, by string) Finding {
		return want(ReferencedResourceNotFound, r, `Referenced host not found: "`+host+`" (spec.http[0].route[0].destination.host); `+by+` has `+fq+` but is not exported to namespace `+ns+` (exportTo, or the networking.istio.io/exportTo annotation): export it there, or fix the host or the VirtualService's exportTo`)
	}
	runCases(t, routeDestinations, []analyzerCase{
		{name: "visible", snap: snap(local, toProd, extLocal, wild, fromProd, wildFromProd, toProdFromProd)},
		{name: "not visible", snap: snap(catchAll, local, toProd, extLocal, wild, fromDev, extFromDev, wildFromDev, toProdFromDev, exported), want: []Finding{
			notExported(extFromDev, "api.example.com", "api.example.com", "dev", "ServiceEntry prod/api"),
			notExported(toProdFromDev, "ratings.other.svc.cluster.local", "ratings.other.svc.cluster.local", "dev", "Service other/ratings"),
			notExported(fromDev, "ratings.prod.svc.cluster.local", "ratings.prod.svc.cluster.local", "dev", "Service prod/ratings"),
			// The host is only covered by a wildcard entry: the message
			// names it, so a typo in the host is not taken for exportTo.
			notExported(wildFromDev, "a.example.org", "a.example.org", "dev", `ServiceEntry prod/wild (host "*.example.org")`),
			notExported(exported, "ratings", "ratings.prod.svc.cluster.local", "prod", "Service prod/ratings"),
		}},
	})
}

func TestRouteDestinationsPorts(t *testing.T) {
	multi := svc("default", "multi", nil, port("http", 80), port("grpc", 9090))
	single := svc("default", "single", nil, port("http", 80))
	ext := se("default", "ext", &v1alpha3.ServiceEntry{Hosts: []string{"api.example.com"}, Ports: []*v1alpha3.ServicePort{{Number: 443, Name: "https", Protocol: "HTTPS"}, {Number: 80, Name: "http", Protocol: "HTTP"}}})
	withPort := func(host string, p uint32) *v1alpha3.HTTPRouteDestination {
		d := dest(host, "", 0)
		d.Destination.Port = &v1alpha3.PortSelector{Number: p}
		return d
	}
	good := vs("default", "good", &v1alpha3.VirtualService{Hosts: []string{"multi"}, Http: []*v1alpha3.HTTPRoute{{
		Route: []*v1alpha3.HTTPRouteDestination{withPort("multi", 80)}}, {Route: []*v1alpha3.HTTPRouteDestination{dest("single", "", 0)}}}})
	bad := vs("default", "bad", &v1alpha3.VirtualService{Hosts: []string{"multi"},
		Http: []*v1alpha3.HTTPRoute{{
			Route:   []*v1alpha3.HTTPRouteDestination{dest("multi", "", 0)},
			Mirror:  &v1alpha3.Destination{Host: "nosuch", Subset: "v1"},
			Mirrors: []*v1alpha3.HTTPMirrorPolicy{{Destination: &v1alpha3.Destination{Host: "single", Port: &v1alpha3.PortSelector{Number: 81}}}},
		}},
		Tcp: []*v1alpha3.TCPRoute{{Route: []*v1alpha3.RouteDestination{{Destination: &v1alpha3.Destination{Host: "api.example.com"}}}}},
	})
	runCases(t, routeDestinations, []analyzerCase{
		{name: "port given where needed", snap: snap(multi, single, good)},
		{name: "port missing or wrong, mirrors", snap: snap(multi, single, ext, bad), want: []Finding{
			want(ReferencedResourceNotFound, bad, `Referenced host:port not found: "single:81" (spec.http[0].mirrors[0].destination.port); host single.default.svc.cluster.local has ports [80]: fix the port number`),
			want(ReferencedResourceNotFound, bad, `Referenced mirror host not found: "nosuch" (spec.http[0].mirror.host); no Service or ServiceEntry has host nosuch.default.svc.cluster.local: fix the host or add the Service`),
			want(ReferencedResourceNotFound, bad, `Referenced mirror+subset in destinationrule not found: "nosuch+v1" (spec.http[0].mirror.subset); no DestinationRule for host nosuch.default.svc.cluster.local defines subset "v1": add it to the DestinationRule's subsets or fix the name`),
			want(VirtualServiceDestinationPortSelectorRequired, bad, `This VirtualService routes to a service "api.example.com" that exposes multiple ports [443 80] (spec.tcp[0].route[0].destination). Specifying a port in the destination is required to disambiguate: set spec.tcp[0].route[0].destination.port.number`),
			want(VirtualServiceDestinationPortSelectorRequired, bad, `This VirtualService routes to a service "multi" that exposes multiple ports [80 9090] (spec.http[0].route[0].destination). Specifying a port in the destination is required to disambiguate: set spec.http[0].route[0].destination.port.number`),
		}},
	})
}

func TestConflictingVirtualServicesExportTo(t *testing.T) {
	a := withExportTo(vs("prod", "a", &v1alpha3.VirtualService{Hosts: []string{"reviews.default.svc.cluster.local"}}), ".")
	b := withExportTo(vs("dev", "b", &v1alpha3.VirtualService{Hosts: []string{"reviews.default.svc.cluster.local"}}), ".")
	all := vs("default", "all", &v1alpha3.VirtualService{Hosts: []string{"*.default.svc.cluster.local"}})
	msg := "The VirtualServices prod/a,default/all associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
	runCases(t, conflictingVirtualServices, []analyzerCase{
		{name: "each visible to its own namespace", snap: snap(a, b)},
		{name: "one exported to all, by a wildcard", snap: snap(a, all), want: []Finding{
			want(ConflictingMeshGatewayVirtualServiceHosts, all, msg),
			want(ConflictingMeshGatewayVirtualServiceHosts, a, msg),
		}},
	})
}

func TestPolicyNamespaces(t *testing.T) {
	from := func(name string, nss, notNss []string) config.Resource {
		return ap("prod", name, &securityv1beta1.AuthorizationPolicy{Rules: []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{
			{Source: &securityv1beta1.Source{Namespaces: nss, NotNamespaces: notNss}}}}}})
	}
	ns := res("", "Namespace", "", "frontend", &corev1.Namespace{ObjectMeta: meta("", "frontend", nil)})
	// Namespaces that exist: a Namespace object, the namespace of any
	// object, the ones every cluster has; patterns as Istio's.
	good := from("good", []string{"frontend", "prod", "default", "kube-system", "front*", "*end", "*", "FRONTEND"}, []string{"kube-public"})
	bad := from("bad", []string{"fronted"}, []string{"frontend", "stagin*"})
	runCases(t, policyNamespaces, []analyzerCase{
		{name: "known", snap: snap(ns, good)},
		{name: "unknown", snap: snap(ns, bad), want: []Finding{
			want(ReferencedResourceNotFound, bad, `Referenced namespace not found: "fronted" (spec.rules[0].from[0].source.namespaces[0]); no such namespace exists: fix the name or create the namespace`),
			want(ReferencedResourceNotFound, bad, `Referenced namespace not found: "stagin*" (spec.rules[0].from[0].source.notNamespaces[1]); no such namespace exists: fix the name or create the namespace`),
		}},
	})
}

func TestDestinationRuleHosts(t *testing.T) {
	v1 := pod("default", "reviews-v1", labelsOf("app", "reviews", "version", "v1"))
	elsewhere := pod("dev", "other-v2", labelsOf("app", "other", "version", "v2"))
	zoned := pod("default", "reviews-z", labelsOf("app", "reviews"))
	zoned.Object.(*corev1.Pod).Spec.NodeName = "node1"
	node := res("", "Node", "", "node1", &corev1.Node{ObjectMeta: meta("", "node1", map[string]string{"topology.kubernetes.io/zone": "z1"})})
	byZone := dr("default", "zoned", &v1alpha3.DestinationRule{Host: "reviews", Subsets: []*v1alpha3.Subset{
		{Name: "z1", Labels: labelsOf("topology.kubernetes.io/zone", "z1")},
		{Name: "n1", Labels: labelsOf("kubernetes.io/hostname", "node1")},
	}})
	unknown := dr("default", "nosuch", &v1alpha3.DestinationRule{Host: "nosuch", Subsets: []*v1alpha3.Subset{{Name: "v1", Labels: labelsOf("version", "v1")}}})
	hidden := withExportTo(svc("other", "hidden", nil, port("http", 80)), ".")
	hiddenDR := dr("default", "hidden", &v1alpha3.DestinationRule{Host: "hidden.other.svc.cluster.local"})
	seDR := dr("default", "ext", &v1alpha3.DestinationRule{Host: "api.example.com", Subsets: []*v1alpha3.Subset{{Name: "v1", Labels: labelsOf("version", "v1")}}})
	ext := se("default", "ext", &v1alpha3.ServiceEntry{Hosts: []string{"api.example.com"},
		WorkloadSelector: &v1alpha3.WorkloadSelector{Labels: labelsOf("app", "api")}})
	noPod := func(r config.Resource, subset string, i int, lbls string) Finding {
		return want(DestinationRuleSubsetNotSelectPods, r, "The Subset "+subset+" defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream). (spec.subsets["+string(rune('0'+i))+"]: no pod has the labels "+lbls+"): fix the subset's labels, deploy the pods, or remove the subset")
	}
	runCases(t, destinationRuleHosts, []analyzerCase{
		{name: "every subset has pods", snap: snap(reviews, reviewsR, v1, pod("default", "reviews-v2", labelsOf("app", "reviews", "version", "v2")))},
		// Istio reports a subset without pods also when the input has
		// no pod at all.
		{name: "no pods at all", snap: snap(reviews, reviewsR), want: []Finding{
			noPod(reviewsR, "v1", 0, "version=v1"), noPod(reviewsR, "v2", 1, "version=v2"),
		}},
		// Istio matches a subset's labels alone against every pod; the
		// pod with version=v2 in dev keeps IST0173 quiet, FM0003 says
		// that the Service has no such pod.
		{name: "subset pods outside the Service", snap: snap(reviews, reviewsR, v1, elsewhere), want: []Finding{
			want(SubsetSelectsNoWorkload, reviewsR, `spec.subsets[1] ("v2") selects no pod of Service default/reviews: no pod in namespace default has the labels app=reviews,version=v2 (the Service's selector plus the subset's labels), so the subset has no endpoint; fix the subset labels or deploy that version`),
		}},
		{name: "node topology labels", snap: snap(reviews, byZone, zoned, node)},
		{name: "unknown and hidden hosts", snap: snap(unknown, hidden, hiddenDR, v1), want: []Finding{
			want(UnknownDestinationRuleHost, hiddenDR, "The host hidden.other.svc.cluster.local defined in the DestinationRule does not match any services in the mesh (no Service or ServiceEntry for hidden.other.svc.cluster.local is visible to namespace default): fix spec.host, or add the Service"),
			want(UnknownDestinationRuleHost, unknown, "The host nosuch defined in the DestinationRule does not match any services in the mesh (no Service or ServiceEntry for nosuch.default.svc.cluster.local is visible to namespace default): fix spec.host, or add the Service"),
		}},
		// A ServiceEntry's workloadSelector joins the subset's labels.
		{name: "ServiceEntry workloadSelector", snap: snap(ext, seDR, v1), want: []Finding{noPod(seDR, "v1", 0, "app=api,version=v1")}},
	})
}

// A PeerAuthentication's selector in the root namespace selects pods of
// the root namespace only (as the model applies it); an
// AuthorizationPolicy's selects in every namespace (as Istio).
func TestSelectorsWithoutWorkloadsRoot(t *testing.T) {
	p := pod("prod", "reviews-1", labelsOf("app", "reviews"))
	apRoot := ap(RootNamespace, "reviews", &securityv1beta1.AuthorizationPolicy{Selector: selector("app", "reviews")})
	paRoot := pa(RootNamespace, "reviews", &securityv1beta1.PeerAuthentication{Selector: selector("app", "reviews")})
	runCases(t, selectorsWithoutWorkloads, []analyzerCase{
		{name: "root namespace selectors", snap: snap(p, apRoot, paRoot), want: []Finding{
			want(NoMatchingWorkloadsFound, paRoot, "No matching workloads for this resource with the following labels: app=reviews (no pod in the mesh in namespace istio-system has them); fix the selector or deploy the workload"),
		}},
	})
}
