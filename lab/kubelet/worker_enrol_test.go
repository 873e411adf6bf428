package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/cluster"
)

// fakeAgent answers the enrolment socket of one node and records the
// operations it was asked for.
type fakeAgent struct {
	mu  sync.Mutex
	ops []string
}

func (a *fakeAgent) serve(t *testing.T, sock string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var req enrol.Request
			if json.NewDecoder(c).Decode(&req) == nil {
				a.mu.Lock()
				a.ops = append(a.ops, req.Op)
				a.mu.Unlock()
				resp := enrol.Response{OK: true}
				if req.Op == enrol.OpAdd {
					resp.Identity = "spiffe://cluster.local/ns/" + req.Namespace + "/sa/default"
				}
				_ = json.NewEncoder(c).Encode(resp)
			}
			c.Close()
		}
	}()
}

func (a *fakeAgent) opsSoFar() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.ops, ",")
}

// TestEnrolCapture: a pod is enrolled unless a label on it or its
// namespace takes it out of the mesh (then status says so, and it is not
// waited for); a pod that leaves the mesh is removed from its agent, one
// that joins it is enrolled, as the labels change.
func TestEnrolCapture(t *testing.T) {
	dir := t.TempDir()
	d := &daemon{o: Options{StateDir: dir, Prefix: "fm-ke-", Mesh: true}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		stKick: make(chan struct{}, 1), workers: map[string]*podWorker{}}
	setNamespaceLabels := func(labels map[string]string) {
		b, err := json.Marshal(&corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: "legacy", Labels: labels}})
		if err != nil {
			t.Fatal(err)
		}
		d.mu.Lock()
		d.last = &cluster.Manifests{Others: []cluster.Doc{{Kind: "Namespace", Name: "legacy", YAML: b}}}
		d.mu.Unlock()
	}
	setNamespaceLabels(nil)
	agent := &fakeAgent{}
	node := &lab.Node{Name: "node1"}
	agent.serve(t, d.enrolSocket(node.Name))

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "legacy", Name: "old", Labels: map[string]string{"app": "old"}}}
	w := d.newWorker(pod, node, "10.200.1.11")
	w.netnsUp, w.started = true, true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.enrol(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	withLabels := func(labels map[string]string, annotations map[string]string) {
		p := pod.DeepCopy()
		p.Labels, p.Annotations = labels, annotations
		w.update(p)
	}
	for _, step := range []struct {
		name      string
		do        func()
		ops       string // what the agent was asked, in all
		enrolment string // status().Enrolment's start
	}{
		{"captured", func() {}, "add", "enrolled as spiffe://cluster.local/ns/legacy/sa/default"},
		{"pod label fibmesh.io/capture=disabled", func() {
			withLabels(map[string]string{"app": "old", model.LabelCapture: model.CaptureDisabled}, nil)
		}, "add,remove", "not enrolled: capture disabled (pod label fibmesh.io/capture=disabled)"},
		{"label removed", func() { withLabels(map[string]string{"app": "old"}, nil) }, "add,remove,add", "enrolled as "},
		{"namespace label istio.io/dataplane-mode=none", func() {
			setNamespaceLabels(map[string]string{model.LabelDataplaneMode: model.DataplaneModeNone})
			withLabels(map[string]string{"app": "old"}, nil) // a reload updates every pod
		}, "add,remove,add,remove", "not enrolled: capture disabled (namespace label istio.io/dataplane-mode=none)"},
		{"namespace label removed, pod annotation sidecar.istio.io/inject=false", func() {
			setNamespaceLabels(nil)
			withLabels(map[string]string{"app": "old"}, map[string]string{model.LabelSidecarInject: "false"})
		}, "add,remove,add,remove", "not enrolled: capture disabled (pod annotation sidecar.istio.io/inject=false)"},
		{"annotation removed", func() { withLabels(map[string]string{"app": "old"}, nil) }, "add,remove,add,remove,add", "enrolled as "},
	} {
		step.do()
		testenv.Eventually(t, 10*time.Second, step.name, func() error {
			st := w.status()
			if got := agent.opsSoFar(); got != step.ops || !strings.HasPrefix(st.Enrolment, step.enrolment) {
				return fmt.Errorf("agent asked %q, status %q; want %q, %q", got, st.Enrolment, step.ops, step.enrolment)
			}
			if !st.Started {
				return fmt.Errorf("not started: waits for %s", st.Waiting)
			}
			return nil
		})
	}
}

// TestEnrolCaptureOffAtStart: a pod created outside the mesh is never
// enrolled, and it does not hold up the lab (status: started).
func TestEnrolCaptureOffAtStart(t *testing.T) {
	dir := t.TempDir()
	d := &daemon{o: Options{StateDir: dir, Prefix: "fm-ke-", Mesh: true}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		stKick: make(chan struct{}, 1), workers: map[string]*podWorker{}, last: &cluster.Manifests{}}
	agent := &fakeAgent{}
	node := &lab.Node{Name: "node1"}
	agent.serve(t, d.enrolSocket(node.Name))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "plain",
		Labels: map[string]string{model.LabelDataplaneMode: model.DataplaneModeNone}}}
	w := d.newWorker(pod, node, netip.MustParseAddr("10.200.1.12").String())
	w.netnsUp, w.started = true, true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.enrol(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	testenv.Until(t, 10*time.Second, "status says capture disabled", func() bool {
		st := w.status()
		return st.Started && st.Enrolment == "not enrolled: capture disabled (pod label istio.io/dataplane-mode=none)"
	})
	if ops := agent.opsSoFar(); ops != "" {
		t.Errorf("the agent was asked %q; want nothing", ops)
	}
}
