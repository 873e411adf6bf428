package fds

import (
	"strings"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// localPod is w's entry in its node's table: the pod, its identity id,
// its workload's name and the labels Istio's metrics read.
func localPod(w *model.Workload, id uint32) *fibv1.LocalPod {
	lp := &fibv1.LocalPod{Namespace: w.Namespace, Name: w.Name, Ip: w.IP, IdentityId: id, Workload: workloadName(w)}
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

// workloadName is the workload w belongs to as Istio names it: its
// service.istio.io/workload-name label; else, for a Deployment's pod
// (a pod-template-hash label, and a name "<deployment>-<hash>-<suffix>"),
// the Deployment's name. Otherwise "": the model keeps no owner
// references, and the agent names the workload from the pod's name.
func workloadName(w *model.Workload) string {
	if n := w.Labels[fibv1.LabelWorkloadName]; n != "" {
		return n
	}
	if h := w.Labels["pod-template-hash"]; h != "" {
		if i := strings.LastIndex(w.Name, "-"+h+"-"); i > 0 {
			return w.Name[:i]
		}
	}
	return ""
}
