package analyze

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"

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
	nodes     map[string]*corev1.Node           // Nodes by name
	byHost    map[string]typed[*corev1.Service] // FQDN → Service
	seHosts   []string                          // ServiceEntry hosts, may start with "*."
	istioKind []config.Resource                 // every Istio resource, for the field check
	// registry is every Service and ServiceEntry host with the
	// namespaces it is visible to, as Istio's analyzers see them.
	registry []registered
	// namespaces are the namespaces known to exist: Namespace objects,
	// the namespace of every object, and those every cluster has.
	namespaces map[string]bool
}

// registered is one host of a Service or ServiceEntry, visible to the
// namespace scope ("*" for every namespace), with its ports, and for a
// ServiceEntry the labels of its workloadSelector (for a Service, svc
// holds it).
type registered struct {
	scope    string
	host     string
	ports    []uint32
	selector map[string]string
	svc      *corev1.Service // nil for a ServiceEntry
}

// clusterNamespaces exist in every Kubernetes cluster, whether or not the
// input holds their Namespace objects.
var clusterNamespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

type typed[T any] struct {
	config.Resource
	Obj T
}

func newIndex(s *config.Snapshot) *index {
	ix := &index{snap: s, byHost: map[string]typed[*corev1.Service]{}, nsLabels: map[string]map[string]string{}, nodes: map[string]*corev1.Node{}}
	rs := slices.Clone(s.Resources)
	slices.SortStableFunc(rs, func(a, b config.Resource) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	ix.namespaces = map[string]bool{}
	for _, ns := range clusterNamespaces {
		ix.namespaces[ns] = true
	}
	for _, r := range s.Skipped {
		if r.Namespace != "" {
			ix.namespaces[r.Namespace] = true
		}
	}
	for _, r := range rs {
		if r.Namespace != "" {
			ix.namespaces[r.Namespace] = true
		}
		switch o := r.Object.(type) {
		case *corev1.Service:
			t := typed[*corev1.Service]{r, o}
			ix.services = append(ix.services, t)
			ix.byHost[o.Name+"."+r.Namespace+"."+clusterDomain] = t
			ix.registerService(r.Namespace, o)
		case *corev1.Pod:
			ix.pods = append(ix.pods, typed[*corev1.Pod]{r, o})
		case *corev1.Node:
			ix.nodes[o.Name] = o
		case *corev1.Namespace:
			ix.nsLabels[o.Name] = o.Labels
			ix.namespaces[o.Name] = true
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
			ix.registerServiceEntry(r.Namespace, o)
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

// exportToAnnotation is the annotation that limits which namespaces see a
// Service, as exportTo does for Istio resources.
const exportToAnnotation = "networking.istio.io/exportTo"

// scopes turns an exportTo list into the namespaces it names: "*" for
// all, "." for ns itself. An empty list means all.
func scopes(exportTo []string, ns string) []string {
	if len(exportTo) == 0 || slices.Contains(exportTo, "*") {
		return []string{"*"}
	}
	var out []string
	for _, e := range exportTo {
		if e = strings.TrimSpace(e); e == "." {
			e = ns
		}
		if e != "" && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}

func (ix *index) registerService(ns string, svc *corev1.Service) {
	var exportTo []string
	if a := svc.Annotations[exportToAnnotation]; a != "" {
		exportTo = strings.Split(a, ",")
	}
	var ports []uint32
	for _, p := range svc.Spec.Ports {
		ports = append(ports, uint32(p.Port))
	}
	for _, sc := range scopes(exportTo, ns) {
		ix.registry = append(ix.registry, registered{scope: sc, host: svc.Name + "." + ns + "." + clusterDomain,
			ports: ports, svc: svc})
	}
}

func (ix *index) registerServiceEntry(ns string, se *networkingv1.ServiceEntry) {
	var ports []uint32
	for _, p := range se.Spec.GetPorts() {
		ports = append(ports, p.GetNumber())
	}
	for _, sc := range scopes(se.Spec.GetExportTo(), ns) {
		for _, h := range se.Spec.GetHosts() {
			ix.registry = append(ix.registry, registered{scope: sc, host: fqdn(h, ns), ports: ports,
				selector: se.Spec.GetWorkloadSelector().GetLabels()})
		}
	}
}

// lookup finds the Service or ServiceEntry that host means to a
// VirtualService or DestinationRule in namespace ns exported to
// exportTo, as Istio's analyzers do (util.GetDestinationHost): first a
// host visible to every namespace, then one visible to the namespaces the
// resource is exported to (ns itself when exportTo is empty), then a
// wildcard host visible to every namespace or to ns.
func (ix *index) lookup(ns string, exportTo []string, host string) (registered, bool) {
	h := fqdn(host, ns)
	want := []string{ns}
	if len(exportTo) > 0 {
		want = nil
		for _, e := range exportTo {
			if e == "." {
				e = ns
			}
			want = append(want, e)
		}
	}
	for _, pass := range [][]string{{"*"}, want} {
		for _, r := range ix.registry {
			if r.host == h && slices.Contains(pass, r.scope) {
				return r, true
			}
		}
	}
	for _, r := range ix.registry {
		suffix, ok := strings.CutPrefix(r.host, "*")
		if ok && (r.scope == "*" || r.scope == ns) && strings.HasSuffix(strings.TrimPrefix(h, "*"), suffix) {
			return r, true
		}
	}
	return registered{}, false
}

// namespaceExists reports whether a namespace pattern of an
// AuthorizationPolicy ("prod", "prod-*", "*-prod", "*") names a namespace
// known to exist, as Istio matches them (case-insensitive).
func (ix *index) namespaceExists(pattern string) bool {
	for ns := range ix.namespaces {
		if namespaceMatches(pattern, ns) {
			return true
		}
	}
	return false
}

func namespaceMatches(pattern, ns string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(ns, pattern[1:])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(ns, pattern[:len(pattern)-1])
	}
	return strings.EqualFold(pattern, ns)
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

// definedBy names the Service or ServiceEntry that has host (an FQDN),
// for messages: "Service ns/name", or "ServiceEntry ns/name (host
// \"*.example.com\")" when only a wildcard entry covers it (the most
// specific); "" if none does.
func (ix *index) definedBy(host string) string {
	if svc, ok := ix.byHost[host]; ok {
		return "Service " + svc.Namespace + "/" + svc.Name
	}
	for _, se := range ix.ses {
		if slices.Contains(se.Obj.Spec.GetHosts(), host) {
			return "ServiceEntry " + se.Namespace + "/" + se.Name
		}
	}
	// The most specific wildcard: "*.example.org" before "*".
	best, bestHost := "", ""
	for _, se := range ix.ses {
		for _, h := range se.Obj.Spec.GetHosts() {
			if hostMatches(h, host) && len(h) > len(bestHost) {
				best, bestHost = fmt.Sprintf("ServiceEntry %s/%s (host %q)", se.Namespace, se.Name, h), h
			}
		}
	}
	return best
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
