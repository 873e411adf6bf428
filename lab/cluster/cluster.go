// Package cluster turns a directory of ordinary Kubernetes and Istio
// manifests into the cluster they describe, as a kube-apiserver would
// report it once the cluster's controllers had done their work: workloads
// (Deployments, ReplicaSets) expanded into Pods, Pods scheduled onto nodes
// with IPs from their node's pod CIDR, Services given ClusterIPs, and
// EndpointSlices derived from each selector Service and its pods, as the
// endpoint-slice controller derives them.
//
// It is the lab's model of a control plane: package kubelet (the lab's
// process-based kubelet) runs what it describes and renders it (Render,
// WriteDir) into a directory that fibmesh-controller reads the way a real
// controller reads the apiserver. Nothing here touches the system beyond
// reading the manifests and writing that directory; the user's files are
// never written.
//
// Decoding is controller/config's: strict, and an error names the file,
// the document, the kind, the object and the field. A broken object is
// reported in Manifests.Errors and left out; the rest of the directory
// still describes a cluster.
package cluster

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Well-known labels and values the package writes, as Kubernetes names
// them.
const (
	LabelServiceName     = discoveryv1.LabelServiceName // kubernetes.io/service-name
	LabelManagedBy       = discoveryv1.LabelManagedBy   // endpointslice.kubernetes.io/managed-by
	ManagedByController  = "endpointslice-controller.k8s.io"
	LabelPodTemplateHash = "pod-template-hash"
	LabelHostname        = corev1.LabelHostname // kubernetes.io/hostname
	LabelOS              = corev1.LabelOSStable // kubernetes.io/os
)

// ServiceCIDR is the range ClusterIPs are allocated from when a Service
// sets none (kubeadm's default service CIDR).
var ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")

// firstServiceHost is the first host number of ServiceCIDR the allocator
// hands out: .1 is the kubernetes Service and .10 kube-dns in a kubeadm
// cluster, which users know; ours start past them.
const firstServiceHost = 100

// firstPodHost is the first host number of a node's pod CIDR the
// allocator hands out: 10.200.<i>.<11..> as in the lab's numbered layout
// (pod j of node i is .10+j).
const firstPodHost = 11

// Key returns "namespace/name", the identity of a namespaced object in
// Allocations and messages.
func Key(namespace, name string) string { return namespace + "/" + name }

// PodKey returns the Key of a pod.
func PodKey(p *corev1.Pod) string { return Key(p.Namespace, p.Name) }

// ObjectError is a problem with one object that is not a decoding error:
// a Deployment whose selector does not match its template, a Pod pinned
// to a node that does not exist. It names the source, the object and the
// field.
type ObjectError struct {
	Source string // "file (document n)", as config.Source prints it
	Kind   string
	Key    string // namespace/name
	Field  string
	Err    error
}

func (e *ObjectError) Error() string {
	msg := fmt.Sprintf("%s %s", e.Kind, e.Key)
	if e.Source != "" {
		msg = e.Source + ": " + msg
	}
	if e.Field != "" {
		msg += ": field " + e.Field
	}
	return msg + ": " + e.Err.Error()
}

func (e *ObjectError) Unwrap() error { return e.Err }
