// Package deploy holds fibmesh's Kubernetes manifests: a kustomization
// (`kubectl apply -k deploy/`) of the Istio CRDs (crds/) and fibmesh
// (base/), with components/ and overlays/ for its variants; see
// README.md and docs/install.md. Its Go code is only its tests, which
// install the manifests on a real kube-apiserver (internal/kubetest).
package deploy
