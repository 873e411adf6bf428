package fds

import (
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// localPod is w's entry in its node's table: the pod, its identity id,
// its workload's name (fibv1.WorkloadName, from the pod's name and all
// its labels, which the agent does not get) and the labels Istio's
// metrics read.
func localPod(w *model.Workload, id uint32) *fibv1.LocalPod {
	lp := &fibv1.LocalPod{Namespace: w.Namespace, Name: w.Name, Ip: w.IP, IdentityId: id, Workload: fibv1.WorkloadName(w.Name, w.Labels)}
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
