package analyze

import (
	"maps"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fibmesh/fibmesh/controller/config"
)

// RootNamespace is the Istio root namespace: a policy there without a
// selector applies to the whole mesh.
const RootNamespace = "istio-system"

// clusterDomain completes short service names: reviews in namespace
// default is reviews.default.svc.cluster.local.
const clusterDomain = "svc.cluster.local"

// index holds a snapshot's resources by kind, in a deterministic order
// (namespace, name), and the lookups the analyzers share.
type index struct {
	snap *config.Snapshot

	services  []typed[*corev1.Service]
	pods      []typed[*corev1.Pod]
	vss       []typed[*networkingv1.VirtualService]
	drs       []typed[*networkingv1.DestinationRule]
	ses       []typed[*networkingv1.ServiceEntry]
	pas       []typed[*securityv1.PeerAuthentication]
	aps       []typed[*securityv1.AuthorizationPolicy]
	nsLabels  map[string]map[string]string      // Namespace labels by name
	byHost    map[string]typed[*corev1.Service] // FQDN → Service
	seHosts   []string                          // ServiceEntry hosts, may start with "*."
	istioKind []config.Resource                 // every Istio resource, for the field check
}

type typed[T any] struct {
	config.Resource
	Obj T
}

func newIndex(s *config.Snapshot) *index {
	ix := &index{snap: s, byHost: map[string]typed[*corev1.Service]{}, nsLabels: map[string]map[string]string{}}
	rs := slices.Clone(s.Resources)
	slices.SortStableFunc(rs, func(a, b config.Resource) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, r := range rs {
		switch o := r.Object.(type) {
		case *corev1.Service:
			t := typed[*corev1.Service]{r, o}
			ix.services = append(ix.services, t)
			ix.byHost[o.Name+"."+r.Namespace+"."+clusterDomain] = t
		case *corev1.Pod:
			ix.pods = append(ix.pods, typed[*corev1.Pod]{r, o})
		case *corev1.Namespace:
			ix.nsLabels[o.Name] = o.Labels
		case *networkingv1.VirtualService:
			ix.vss = append(ix.vss, typed[*networkingv1.VirtualService]{r, o})
			ix.istioKind = append(ix.istioKind, r)
		case *networkingv1.DestinationRule:
			ix.drs = append(ix.drs, typed[*networkingv1.DestinationRule]{r, o})
			ix.istioKind = append(ix.istioKind, r)
		case *networkingv1.ServiceEntry:
			ix.ses = append(ix.ses, typed[*networkingv1.ServiceEntry]{r, o})
			ix.istioKind = append(ix.istioKind, r)
			for _, h := range o.Spec.GetHosts() {
				ix.seHosts = append(ix.seHosts, fqdn(h, r.Namespace))
			}
		case *securityv1.PeerAuthentication:
			ix.pas = append(ix.pas, typed[*securityv1.PeerAuthentication]{r, o})
			ix.istioKind = append(ix.istioKind, r)
		case *securityv1.AuthorizationPolicy:
			ix.aps = append(ix.aps, typed[*securityv1.AuthorizationPolicy]{r, o})
			ix.istioKind = append(ix.istioKind, r)
		}
	}
	return ix
}

// fqdn resolves a host as Istio does: a name without a dot is a short
// Service name in namespace ns; anything else is taken as written.
func fqdn(host, ns string) string {
	if host == "" || strings.Contains(host, ".") || host == "*" {
		return host
	}
	return host + "." + ns + "." + clusterDomain
}

// hostMatches reports whether host is matched by pattern, which may be a
// wildcard ("*.example.com", "*").
func hostMatches(pattern, host string) bool {
	if pattern == host || pattern == "*" {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix)
	}
	return false
}

// knownHost reports whether host (an FQDN) is a Service or ServiceEntry host.
func (ix *index) knownHost(host string) bool {
	if _, ok := ix.byHost[host]; ok {
		return true
	}
	return slices.ContainsFunc(ix.seHosts, func(p string) bool { return hostMatches(p, host) })
}

// subsets returns the names of the subsets DestinationRules define for host.
func (ix *index) subsets(host string) map[string]bool {
	out := map[string]bool{}
	for _, dr := range ix.drs {
		if !hostMatches(fqdn(dr.Obj.Spec.GetHost(), dr.Namespace), host) {
			continue
		}
		for _, s := range dr.Obj.Spec.GetSubsets() {
			out[s.GetName()] = true
		}
	}
	return out
}

// podsMatching returns how many pods in namespace ns (every namespace if
// ns is RootNamespace) carry all of the given labels.
func (ix *index) podsMatching(ns string, sel map[string]string) int {
	n := 0
	s := labels.SelectorFromSet(sel)
	for _, p := range ix.pods {
		if ns != RootNamespace && p.Namespace != ns {
			continue
		}
		if s.Matches(labels.Set(p.Obj.Labels)) {
			n++
		}
	}
	return n
}

// labelString formats a selector as "k1=v1,k2=v2", keys sorted.
func labelString(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}
