package fibv1

// The pod labels a LocalPod carries (LocalPod.labels): those Istio reads
// for the app, version, canonical service and canonical revision of its
// metrics (istio/proxy's peer metadata; Istio's injector for the
// canonical ones).
const (
	LabelApp               = "app"
	LabelVersion           = "version"
	LabelAppName           = "app.kubernetes.io/name"
	LabelAppVersion        = "app.kubernetes.io/version"
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
)

// LabelWorkloadName is the pod label that names its workload, before its
// owner (LocalPod.workload), as in Istio.
const LabelWorkloadName = "service.istio.io/workload-name"

// WorkloadLabels are the label keys the controller copies into
// LocalPod.labels, and the only ones it copies.
var WorkloadLabels = []string{LabelApp, LabelVersion, LabelAppName, LabelAppVersion, LabelCanonicalName, LabelCanonicalRevision}
