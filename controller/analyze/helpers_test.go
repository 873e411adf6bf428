package analyze

import (
	"google.golang.org/protobuf/proto"
	"istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Builders for snapshots in tests. Each resource's Source is
// "<kind>.yaml" document 1, so findings are easy to predict.

func res(group, kind, ns, name string, obj runtime.Object) config.Resource {
	return config.Resource{
		GVK:       schema.GroupVersionKind{Group: group, Version: "v1", Kind: kind},
		Namespace: ns,
		Name:      name,
		Source:    config.Source{File: kind + ".yaml", Doc: 1},
		Object:    obj,
	}
}

func meta(ns, name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}
}

func svc(ns, name string, sel map[string]string, ports ...corev1.ServicePort) config.Resource {
	return res("", "Service", ns, name, &corev1.Service{
		ObjectMeta: meta(ns, name, nil),
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: ports},
	})
}

func port(name string, n int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: n, TargetPort: intstr.FromInt32(n), Protocol: corev1.ProtocolTCP}
}

func pod(ns, name string, labels map[string]string) config.Resource {
	return res("", "Pod", ns, name, &corev1.Pod{ObjectMeta: meta(ns, name, labels)})
}

func vs(ns, name string, spec *v1alpha3.VirtualService) config.Resource {
	o := &networkingv1.VirtualService{ObjectMeta: meta(ns, name, nil)}
	proto.Merge(&o.Spec, spec)
	return res("networking.istio.io", "VirtualService", ns, name, o)
}

func dr(ns, name string, spec *v1alpha3.DestinationRule) config.Resource {
	o := &networkingv1.DestinationRule{ObjectMeta: meta(ns, name, nil)}
	proto.Merge(&o.Spec, spec)
	return res("networking.istio.io", "DestinationRule", ns, name, o)
}

func se(ns, name string, spec *v1alpha3.ServiceEntry) config.Resource {
	o := &networkingv1.ServiceEntry{ObjectMeta: meta(ns, name, nil)}
	proto.Merge(&o.Spec, spec)
	return res("networking.istio.io", "ServiceEntry", ns, name, o)
}

func pa(ns, name string, spec *securityv1beta1.PeerAuthentication) config.Resource {
	o := &securityv1.PeerAuthentication{ObjectMeta: meta(ns, name, nil)}
	proto.Merge(&o.Spec, spec)
	return res("security.istio.io", "PeerAuthentication", ns, name, o)
}

func ap(ns, name string, spec *securityv1beta1.AuthorizationPolicy) config.Resource {
	o := &securityv1.AuthorizationPolicy{ObjectMeta: meta(ns, name, nil)}
	proto.Merge(&o.Spec, spec)
	return res("security.istio.io", "AuthorizationPolicy", ns, name, o)
}

func selector(kv ...string) *typev1beta1.WorkloadSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &typev1beta1.WorkloadSelector{MatchLabels: m}
}

func dest(host, subset string, weight int32) *v1alpha3.HTTPRouteDestination {
	return &v1alpha3.HTTPRouteDestination{Destination: &v1alpha3.Destination{Host: host, Subset: subset}, Weight: weight}
}

func prefix(p string) *v1alpha3.StringMatch {
	return &v1alpha3.StringMatch{MatchType: &v1alpha3.StringMatch_Prefix{Prefix: p}}
}

func exact(s string) *v1alpha3.StringMatch {
	return &v1alpha3.StringMatch{MatchType: &v1alpha3.StringMatch_Exact{Exact: s}}
}

func snap(rs ...config.Resource) *config.Snapshot { return &config.Snapshot{Resources: rs} }

// want builds the finding an analyzer should report about r.
func want(c Code, r config.Resource, msg string) Finding {
	return Finding{Code: c.ID, Level: c.Level, Kind: r.GVK.Kind, Namespace: r.Namespace, Name: r.Name, Message: msg, Source: r.Source}
}

func labelsOf(kv ...string) map[string]string { return selector(kv...).MatchLabels }
