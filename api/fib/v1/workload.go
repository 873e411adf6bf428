package fibv1

import "strings"

// LabelPodTemplateHash is the label a Deployment's ReplicaSet puts on
// its pods: the hash in the middle of their names.
const LabelPodTemplateHash = "pod-template-hash"

// WorkloadName is the workload a pod belongs to, as Istio names it in
// its metrics and as fibmesh's agents, controller and live page all name
// it (one rule: LocalPod.workload, the agents' source_workload and
// destination_workload labels, and the live page's nodes must agree):
//   - the pod's LabelWorkloadName label, when set;
//   - else, for a pod with a LabelPodTemplateHash label whose name is
//     "<deployment>-<hash>-<suffix>", the Deployment's name;
//   - else, from the name alone, as Kubernetes names the pods its
//     controllers make: "<deployment>-<hash>-<suffix>" (a hash of 6 to 10
//     and a suffix of 5 characters of Kubernetes' safe alphabet, which
//     has no vowels and no 0, 1 or 3) without the hash and suffix, and
//     a DaemonSet's or Job's "<name>-<suffix>" without the suffix;
//   - else the pod's own name (a bare Pod, a StatefulSet member).
//
// labels may be nil (an agent knows a pod's name and only the labels
// LocalPod carries). Istio reads the owner references; the model keeps
// none, and the names give the same answer for the pods controllers
// make.
func WorkloadName(pod string, labels map[string]string) string {
	if n := labels[LabelWorkloadName]; n != "" {
		return n
	}
	if h := labels[LabelPodTemplateHash]; h != "" {
		if i := strings.LastIndex(pod, "-"+h+"-"); i > 0 {
			return pod[:i]
		}
	}
	parts := strings.Split(pod, "-")
	n := len(parts)
	switch {
	case n >= 3 && isSafe(parts[n-1], 5, 5) && isSafe(parts[n-2], 6, 10):
		return strings.Join(parts[:n-2], "-")
	case n >= 2 && isSafe(parts[n-1], 5, 5):
		return strings.Join(parts[:n-1], "-")
	}
	return pod
}

// safeAlphabet is Kubernetes' rand.SafeEncodeString alphabet, the
// characters of generated name suffixes and pod-template hashes.
const safeAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// isSafe reports whether s is min to max characters of safeAlphabet.
func isSafe(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(safeAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
