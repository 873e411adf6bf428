package analyze

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	typev1beta1 "istio.io/api/type/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
)

// peerAuthenticationConflicts reports PeerAuthentications that share one
// scope: more than one mesh-wide (root namespace, no selector), more than
// one namespace-wide in a namespace, or more than one with the same
// selector in a namespace (FM0002). Istio, and fibmesh's model, apply the
// oldest (then the first by name) and ignore the others; istioctl has no
// analyzer for it, hence a Warning.
func peerAuthenticationConflicts(ix *index) []Finding {
	type scope struct{ ns, sel string }
	groups := map[scope][]config.Resource{}
	for _, pa := range ix.pas {
		sc := scope{pa.Namespace, labelString(pa.Obj.Spec.GetSelector().GetMatchLabels())}
		groups[sc] = append(groups[sc], pa.Resource)
	}
	var fs []Finding
	for sc, rs := range groups {
		if len(rs) < 2 {
			continue
		}
		names := make([]string, len(rs))
		for i, r := range rs {
			names[i] = r.Namespace + "/" + r.Name
		}
		var what string
		switch {
		case sc.sel != "":
			what = fmt.Sprintf("select the same workloads (%s) in namespace %s", sc.sel, sc.ns)
		case sc.ns == RootNamespace:
			what = fmt.Sprintf("are all mesh-wide (namespace %s, no selector)", sc.ns)
		default:
			what = fmt.Sprintf("are all namespace-wide in namespace %s (no selector)", sc.ns)
		}
		for _, r := range rs {
			fs = append(fs, finding(ConflictingPeerAuthentications, r,
				"PeerAuthentications %s %s; only the oldest applies (then the first by name), the others are ignored: merge them into one",
				strings.Join(names, ", "), what))
		}
	}
	return fs
}

// inMesh reports whether fibmesh captures a pod: not taken out by a
// label (model.CaptureOff) and not on the host network. Istio's analyzer
// counts only pods in the mesh (util.PodInMesh) as workloads.
func (ix *index) inMesh(p typed[*corev1.Pod]) bool {
	_, off := model.CaptureOff(p.Obj.Labels, p.Obj.Annotations, ix.nsLabels[p.Namespace])
	return !off && !p.Obj.Spec.HostNetwork
}

// selectorsWithoutWorkloads reports AuthorizationPolicies (and, in
// fibmesh, PeerAuthentications) that apply to no pod in the mesh
// (IST0127), as Istio's AuthorizationPoliciesAnalyzer decides it, whether
// or not the input has pods at all:
//   - in the root namespace, an AuthorizationPolicy with a selector must
//     match a pod in any namespace (a PeerAuthentication: in the root
//     namespace, where fibmesh applies it); one without a selector
//     (mesh-wide) is not checked;
//   - elsewhere, a policy without a selector (namespace-wide) needs a pod
//     in its namespace, and one with a selector a pod in its namespace
//     that the selector matches (an empty matchLabels matches any).
func selectorsWithoutWorkloads(ix *index) []Finding {
	var fs []Finding
	// anyNamespace: a selector in the root namespace selects pods in
	// every namespace (AuthorizationPolicy), or only in the root
	// namespace (PeerAuthentication, as the model applies it).
	check := func(r config.Resource, sel *typev1beta1.WorkloadSelector, anyNamespace bool) {
		matches := labels.SelectorFromSet(sel.GetMatchLabels())
		anyNamespace = anyNamespace && r.Namespace == RootNamespace
		found := slices.ContainsFunc(ix.pods, func(p typed[*corev1.Pod]) bool {
			return (anyNamespace || p.Namespace == r.Namespace) && ix.inMesh(p) && matches.Matches(labels.Set(p.Obj.Labels))
		})
		switch {
		case found, sel == nil && r.Namespace == RootNamespace:
		case sel == nil:
			fs = append(fs, finding(NoMatchingWorkloadsFound, r,
				"No matching workloads for this resource with the following labels: (none: the policy has no selector and applies to the whole namespace, where no pod in the mesh runs); deploy the workloads, or remove the policy"))
		default:
			where := "namespace " + r.Namespace
			if anyNamespace {
				where = "any namespace"
			}
			fs = append(fs, finding(NoMatchingWorkloadsFound, r,
				"No matching workloads for this resource with the following labels: %s (no pod in the mesh in %s has them); fix the selector or deploy the workload",
				labelString(sel.GetMatchLabels()), where))
		}
	}
	for _, pa := range ix.pas {
		check(pa.Resource, pa.Obj.Spec.GetSelector(), false)
	}
	for _, ap := range ix.aps {
		check(ap.Resource, ap.Obj.Spec.GetSelector(), true)
	}
	return fs
}

// policyNamespaces reports namespaces and notNamespaces of an
// AuthorizationPolicy's sources that match no namespace known to exist
// (IST0101), as Istio's AuthorizationPoliciesAnalyzer does. A namespace
// exists when the input holds its Namespace object or any object in it,
// or when every cluster has it (default, kube-system, kube-public,
// kube-node-lease).
func policyNamespaces(ix *index) []Finding {
	var fs []Finding
	for _, ap := range ix.aps {
		for i, rule := range ap.Obj.Spec.GetRules() {
			for j, from := range rule.GetFrom() {
				check := func(field string, nss []string) {
					for k, ns := range nss {
						if !ix.namespaceExists(ns) {
							fs = append(fs, finding(ReferencedResourceNotFound, ap.Resource,
								"Referenced namespace not found: %q (spec.rules[%d].from[%d].source.%s[%d]); no such namespace exists: fix the name or create the namespace",
								ns, i, j, field, k))
						}
					}
				}
				check("namespaces", from.GetSource().GetNamespaces())
				check("notNamespaces", from.GetSource().GetNotNamespaces())
			}
		}
	}
	return fs
}

// topologyLabels are the node labels Istio adds to an endpoint's labels
// (pilot's AugmentLabels), so that a subset may select by them.
var topologyLabels = []string{"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}

// podLabels returns a pod's labels as a subset sees them: its own, plus
// kubernetes.io/hostname (its node) and its node's topology labels.
func (ix *index) podLabels(p typed[*corev1.Pod]) labels.Set {
	n := p.Obj.Spec.NodeName
	if n == "" {
		return p.Obj.Labels
	}
	out := labels.Set(maps.Clone(p.Obj.Labels))
	if out == nil {
		out = labels.Set{}
	}
	add := func(k, v string) {
		if _, ok := out[k]; !ok && v != "" {
			out[k] = v
		}
	}
	add("kubernetes.io/hostname", n)
	if node := ix.nodes[n]; node != nil {
		for _, k := range topologyLabels {
			add(k, node.Labels[k])
		}
	}
	return out
}

// destinationRuleHosts checks each DestinationRule as Istio's
// PodNotSelectedAnalyzer does, whether or not the input has pods:
//   - its host must be a Service or ServiceEntry host visible to its
//     namespace (exportTo), else IST0174, and its subsets are not checked;
//   - each subset's labels, with the workloadSelector of a ServiceEntry
//     host, must match some pod in any namespace, else IST0173 (Istio
//     does not add a Service's selector);
//   - fibmesh then also checks that, for a Service host with a selector,
//     some pod of the Service (its namespace, its selector) carries the
//     subset's labels, else FM0003: the subset has no endpoint.
func destinationRuleHosts(ix *index) []Finding {
	var fs []Finding
	for _, dr := range ix.drs {
		spec := &dr.Obj.Spec
		reg, ok := ix.lookup(dr.Namespace, spec.GetExportTo(), spec.GetHost())
		if !ok {
			fs = append(fs, finding(UnknownDestinationRuleHost, dr.Resource,
				"The host %s defined in the DestinationRule does not match any services in the mesh (no Service or ServiceEntry for %s is visible to namespace %s): fix spec.host, or add the Service",
				spec.GetHost(), fqdn(spec.GetHost(), dr.Namespace), dr.Namespace))
			continue
		}
		for i, s := range spec.GetSubsets() {
			want := labels.Merge(reg.selector, s.GetLabels())
			sel := want.AsSelector()
			if !slices.ContainsFunc(ix.pods, func(p typed[*corev1.Pod]) bool { return sel.Matches(ix.podLabels(p)) }) {
				fs = append(fs, finding(DestinationRuleSubsetNotSelectPods, dr.Resource,
					"The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream). (spec.subsets[%d]: no pod has the labels %s): fix the subset's labels, deploy the pods, or remove the subset",
					s.GetName(), i, labelString(want)))
				continue
			}
			svc := reg.svc
			if svc == nil || len(svc.Spec.Selector) == 0 {
				continue
			}
			conflict := !selectorsOverlap(svc.Spec.Selector, s.GetLabels())
			own := labels.Merge(svc.Spec.Selector, s.GetLabels()).AsSelector()
			if !conflict && slices.ContainsFunc(ix.pods, func(p typed[*corev1.Pod]) bool {
				return p.Namespace == svc.Namespace && own.Matches(ix.podLabels(p))
			}) {
				continue
			}
			fs = append(fs, finding(SubsetSelectsNoWorkload, dr.Resource,
				"spec.subsets[%d] (%q) selects no pod of Service %s/%s: no pod in namespace %s has the labels %s (the Service's selector plus the subset's labels), so the subset has no endpoint; fix the subset labels or deploy that version",
				i, s.GetName(), svc.Namespace, svc.Name, svc.Namespace, labelString(selectorUnion(svc.Spec.Selector, s.GetLabels()))))
		}
	}
	return fs
}

// selectorUnion lists both selectors' labels; on a key both set
// differently, it keeps both values ("k=a|b") so the message shows why
// nothing can match.
func selectorUnion(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range b {
		if old, ok := out[k]; ok && old != v {
			out[k] = old + "|" + v
			continue
		}
		out[k] = v
	}
	return out
}

// selectorsOverlap reports whether some pod could carry both label sets.
func selectorsOverlap(a, b map[string]string) bool {
	for k, v := range a {
		if bv, ok := b[k]; ok && bv != v {
			return false
		}
	}
	return true
}
