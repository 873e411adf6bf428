package model

import "strconv"

// Labels and annotations that take a pod out of the mesh. A pod that
// carries one (or whose namespace carries one of the namespace labels)
// is not captured: nothing is enrolled for it, and it talks plaintext as
// a workload outside the mesh would.
const (
	// LabelCapture set to CaptureDisabled, on a pod or its namespace, is
	// fibmesh's own switch.
	LabelCapture    = "fibmesh.io/capture"
	CaptureDisabled = "disabled"
	// LabelDataplaneMode set to DataplaneModeNone, on a pod or its
	// namespace, is Istio ambient's (accepted as Istio users write it).
	LabelDataplaneMode = "istio.io/dataplane-mode"
	DataplaneModeNone  = "none"
	// LabelSidecarInject "false", as a pod label or annotation, is
	// Istio's sidecar opt-out (accepted too). As in Istio, it applies
	// to pods only: a namespace opts out with one of the labels above.
	LabelSidecarInject = "sidecar.istio.io/inject"
)

// CaptureOff says whether a pod is outside the mesh, by its labels and
// annotations and its namespace's labels, and why: the label that says
// so, as "pod label fibmesh.io/capture=disabled" or "namespace label
// istio.io/dataplane-mode=none". Values are compared as written, but for
// sidecar.istio.io/inject, which Istio parses as a boolean ("false",
// "False", "0", ...: strconv.ParseBool). The model (Workload.OutsideMesh) and whoever
// enrols pods (the lab's kubelet, a CNI) decide with this one function.
func CaptureOff(podLabels, podAnnotations, namespaceLabels map[string]string) (why string, off bool) {
	if podLabels[LabelCapture] == CaptureDisabled {
		return "pod label " + LabelCapture + "=" + CaptureDisabled, true
	}
	if podLabels[LabelDataplaneMode] == DataplaneModeNone {
		return "pod label " + LabelDataplaneMode + "=" + DataplaneModeNone, true
	}
	if v, ok := podLabels[LabelSidecarInject]; ok && isFalse(v) {
		return "pod label " + LabelSidecarInject + "=" + v, true
	}
	if v, ok := podAnnotations[LabelSidecarInject]; ok && isFalse(v) {
		return "pod annotation " + LabelSidecarInject + "=" + v, true
	}
	if namespaceLabels[LabelCapture] == CaptureDisabled {
		return "namespace label " + LabelCapture + "=" + CaptureDisabled, true
	}
	if namespaceLabels[LabelDataplaneMode] == DataplaneModeNone {
		return "namespace label " + LabelDataplaneMode + "=" + DataplaneModeNone, true
	}
	return "", false
}

// isFalse is strconv.ParseBool's false, as Istio reads the inject label.
func isFalse(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && !b
}
