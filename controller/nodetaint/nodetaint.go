// Package nodetaint lifts fibmesh's startup taint from a node once the
// node's agent serves it. Until the agent's DaemonSet pod runs on a new
// node, the node's CNI configuration has no fibmesh-cni entry, so pods
// scheduled there would start uncaptured. A node that registers with the
// taint (the kubelet's --register-with-taints, or the node pool's
// settings) gets no pods but those that tolerate it (the agent's
// DaemonSet tolerates every taint) until this package removes it: when
// the node's agent is connected and has accepted its flow table. The
// agent pod's CNI installer is a native sidecar, which the kubelet starts
// before the agent, so by then the entry is in place.
//
// The taint is lifted once; an agent that goes away later does not bring
// it back (new pods then fail their CNI ADD until an agent answers: fail
// closed).
package nodetaint

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// DefaultTaint is the taint's key (any value, any effect).
const DefaultTaint = "fibmesh.io/agent-not-ready"

// DefaultPoll is how often tainted nodes are checked against their
// agents' state.
const DefaultPoll = time.Second

// Options configure Run.
type Options struct {
	Client kubernetes.Interface
	// Taint is the key of the taint to lift; "": DefaultTaint.
	Taint string
	// Ready returns the nodes whose agents serve them (connected, flow
	// table accepted). It is called once per poll, and only while some
	// node has the taint. Required.
	Ready func() map[string]bool
	// Poll: 0 means DefaultPoll.
	Poll time.Duration
	// OnLift is called after the taint left a node (err nil) or a try
	// failed (it is tried again at the next poll). Optional.
	OnLift func(node string, err error)
}

// Run watches the nodes and lifts the taint from each whose agent is
// ready, until ctx is done.
func Run(ctx context.Context, opts Options) error {
	if opts.Client == nil || opts.Ready == nil {
		return fmt.Errorf("nodetaint: Client and Ready are required")
	}
	if opts.Taint == "" {
		opts.Taint = DefaultTaint
	}
	if opts.Poll <= 0 {
		opts.Poll = DefaultPoll
	}
	f := informers.NewSharedInformerFactory(opts.Client, 0)
	nodes := f.Core().V1().Nodes()
	lister := nodes.Lister()
	nodes.Informer() // registered before Start
	f.Start(ctx.Done())
	defer f.Shutdown()
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("nodetaint: %v cache not synced: %w", typ, context.Cause(ctx))
		}
	}
	t := time.NewTicker(opts.Poll)
	defer t.Stop()
	for {
		all, err := lister.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("nodetaint: list nodes: %w", err)
		}
		var ready map[string]bool
		for _, n := range all {
			if !hasTaint(n, opts.Taint) {
				continue
			}
			if ready == nil {
				ready = opts.Ready()
			}
			if ready[n.Name] {
				err := lift(ctx, opts.Client, n.Name, opts.Taint)
				if opts.OnLift != nil {
					opts.OnLift(n.Name, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

// lift removes every taint with key from the node, leaving its other
// taints, with the node's resourceVersion (a conflicting write is read
// again and retried).
func lift(ctx context.Context, c kubernetes.Interface, name, key string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get node %s: %w", name, err)
		}
		if !hasTaint(n, key) {
			return nil
		}
		n = n.DeepCopy()
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
		if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{FieldManager: "fibmesh-controller"}); err != nil {
			return fmt.Errorf("remove taint %s from node %s: %w", key, name, err)
		}
		return nil
	})
}
