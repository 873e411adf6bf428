package nodetaint_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fibmesh/fibmesh/controller/nodetaint"
	"github.com/fibmesh/fibmesh/internal/kubetest"
)

// TestLift, against a real API server: the taint leaves a node once its
// agent is ready, and only then; the node's other taints stay; a node
// without an agent keeps it.
func TestLift(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodes := c.Clientset.CoreV1().Nodes()
	other := corev1.Taint{Key: "dedicated", Value: "smartnic", Effect: corev1.TaintEffectNoSchedule}
	for _, name := range []string{"n1", "n2"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: nodetaint.DefaultTaint, Effect: corev1.TaintEffectNoSchedule}, other,
		}}}
		if _, err := nodes.Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	ready := map[string]bool{}
	lifted := make(chan string, 4)
	done := make(chan error, 1)
	go func() {
		done <- nodetaint.Run(ctx, nodetaint.Options{Client: c.Clientset, Poll: 20 * time.Millisecond,
			Ready: func() map[string]bool { mu.Lock(); defer mu.Unlock(); return maps.Clone(ready) },
			OnLift: func(node string, err error) {
				if err != nil {
					t.Errorf("lift %s: %v", node, err)
				}
				lifted <- node
			}})
	}()

	w, err := nodes.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=n1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	mu.Lock()
	ready["n1"] = true // n1's agent has accepted its flow table
	mu.Unlock()
	for lifting := true; lifting; {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Modified {
				continue
			}
			n := ev.Object.(*corev1.Node)
			if !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == nodetaint.DefaultTaint }) {
				// (The API server's TaintNodesByCondition adds
				// node.kubernetes.io/not-ready to a new node.)
				if !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.MatchTaint(&other) }) {
					t.Errorf("n1's taints after the lift: %v, want %v kept", n.Spec.Taints, other)
				}
				lifting = false
			}
		case <-ctx.Done():
			t.Fatal("n1's taint was not lifted though its agent is ready")
		}
	}
	if got := <-lifted; got != "n1" {
		t.Errorf("lifted %s, want n1", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// n2's agent never became ready: its taint stays.
	n2, err := nodes.Get(context.Background(), "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(n2.Spec.Taints, func(t corev1.Taint) bool { return t.Key == nodetaint.DefaultTaint }) {
		t.Errorf("n2's taints %v: the taint left a node whose agent is not ready", n2.Spec.Taints)
	}
	select {
	case n := <-lifted:
		t.Errorf("also lifted %s", n)
	default:
	}
}
