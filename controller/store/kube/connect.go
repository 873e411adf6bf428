package kube

import (
	"errors"
	"fmt"
	"os"

	istio "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrNoCluster is Connect's error when it is given no kubeconfig and does
// not run in a pod (KUBERNETES_SERVICE_HOST is not set).
var ErrNoCluster = errors.New("no Kubernetes cluster: no kubeconfig given and not running in a pod")

// Clients are the API clients a Store reads through.
type Clients struct {
	Kube  kubernetes.Interface
	Istio istio.Interface
}

// Connect returns clients for the cluster that kubeconfig names or, when
// kubeconfig is "", for the cluster the process runs in (in-cluster
// config), or ErrNoCluster when it runs in none. Nothing is contacted
// yet.
func Connect(kubeconfig string) (*Clients, error) {
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
		}
	default:
		return nil, ErrNoCluster
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ic, err := istio.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("istio client: %w", err)
	}
	return &Clients{Kube: kc, Istio: ic}, nil
}
