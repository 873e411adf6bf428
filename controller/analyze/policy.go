package analyze

import (
	"fmt"
	"maps"
	"strings"

	"github.com/fibmesh/fibmesh/controller/config"
)

// peerAuthenticationConflicts reports PeerAuthentications that share one
// scope: more than one mesh-wide (root namespace, no selector), more than
// one namespace-wide in a namespace, or more than one with the same
// selector in a namespace. Which of them applies would be undefined.
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
				"PeerAuthentications %s %s, so which mTLS mode applies is undefined: merge them into one",
				strings.Join(names, ", "), what))
		}
	}
	return fs
}

// selectorsWithoutWorkloads reports PeerAuthentications and
// AuthorizationPolicies whose selector matches no pod (IST0127). It runs
// only when the snapshot has pods at all: a directory of policies alone
// says nothing about which workloads exist.
func selectorsWithoutWorkloads(ix *index) []Finding {
	if len(ix.pods) == 0 {
		return nil
	}
	var fs []Finding
	check := func(r config.Resource, sel map[string]string) {
		if len(sel) == 0 || ix.podsMatching(r.Namespace, sel) > 0 {
			return
		}
		fs = append(fs, finding(NoMatchingWorkloadsFound, r,
			"No matching workloads for this resource with the following labels: %s; fix the selector or deploy the workload",
			labelString(sel)))
	}
	for _, pa := range ix.pas {
		check(pa.Resource, pa.Obj.Spec.GetSelector().GetMatchLabels())
	}
	for _, ap := range ix.aps {
		check(ap.Resource, ap.Obj.Spec.GetSelector().GetMatchLabels())
	}
	return fs
}

// subsetsWithoutWorkloads reports DestinationRule subsets whose labels,
// added to the selector of the Service the rule's host names, match no
// pod. Like selectorsWithoutWorkloads it runs only when there are pods,
// and it checks only hosts that are Services with a selector.
func subsetsWithoutWorkloads(ix *index) []Finding {
	if len(ix.pods) == 0 {
		return nil
	}
	var fs []Finding
	for _, dr := range ix.drs {
		svc, ok := ix.byHost[fqdn(dr.Obj.Spec.GetHost(), dr.Namespace)]
		if !ok || len(svc.Obj.Spec.Selector) == 0 {
			continue
		}
		for i, s := range dr.Obj.Spec.GetSubsets() {
			want := maps.Clone(svc.Obj.Spec.Selector)
			conflict := false
			for k, v := range s.GetLabels() {
				if old, ok := want[k]; ok && old != v {
					conflict = true
				}
				want[k] = v
			}
			if !conflict && ix.podsMatching(svc.Namespace, want) > 0 {
				continue
			}
			fs = append(fs, finding(SubsetSelectsNoWorkload, dr.Resource,
				"spec.subsets[%d] (%q) selects no pod: no pod in namespace %s has the labels %s (Service %s selector plus subset labels); fix the subset labels or deploy that version",
				i, s.GetName(), svc.Namespace, labelString(selectorUnion(svc.Obj.Spec.Selector, s.GetLabels())), svc.Name))
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
