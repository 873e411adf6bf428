package fds

import (
	"slices"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// localPod is w's entry in its node's table: the pod, its identity id,
// its workload's name (fibv1.WorkloadName, from the pod's name and all
// its labels, which the agent does not get) and the labels Istio's
// metrics read. A pod that has no other labels shares its map (read-only,
// as every map of the model): the last flow table keeps an entry per pod,
// and a copy each was 3 MB of the controller's heap at 10,000 pods.
func localPod(w *model.Workload, id uint32) *fibv1.LocalPod {
	lp := &fibv1.LocalPod{Namespace: w.Namespace, Name: w.Name, Ip: w.IP, IdentityId: id, Workload: fibv1.WorkloadName(w.Name, w.Labels)}
	if onlyWorkloadLabels(w.Labels) {
		if len(w.Labels) > 0 {
			lp.Labels = w.Labels
		}
		return lp
	}
	for _, k := range fibv1.WorkloadLabels {
		if v, ok := w.Labels[k]; ok {
			if lp.Labels == nil {
				lp.Labels = make(map[string]string, len(fibv1.WorkloadLabels))
			}
			lp.Labels[k] = v
		}
	}
	return lp
}

// onlyWorkloadLabels says whether every key of labels is one of
// fibv1.WorkloadLabels.
func onlyWorkloadLabels(labels map[string]string) bool {
	for k := range labels {
		if !slices.Contains(fibv1.WorkloadLabels, k) {
			return false
		}
	}
	return true
}
