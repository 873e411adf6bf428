package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"

	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/cluster"
)

// Status is what the daemon reports on /status.
type Status struct {
	// Ready is what /readyz says: the directory was read, every pod
	// scheduled has its network and its containers were started, and
	// (Mesh) the controller and every agent answer /readyz.
	Ready    bool     `json:"ready"`
	NotReady []string `json:"notReady,omitempty"`
	Dir      string   `json:"dir"`
	Mesh     bool     `json:"mesh"`
	// Reloads counts the times the directory was read.
	Reloads int         `json:"reloads"`
	Pods    []PodStatus `json:"pods"`
	// Pending are pods no node could take, with the reason.
	Pending []PendingPod `json:"pending,omitempty"`
	// Processes are the mesh's: the controller and the agents.
	Processes []ProcStatus `json:"processes,omitempty"`
	// Errors are the objects of the directory left out, with file,
	// object and field.
	Errors []string `json:"errors,omitempty"`
}

// PodStatus is one pod.
type PodStatus struct {
	Namespace  string       `json:"namespace"`
	Name       string       `json:"name"`
	Node       string       `json:"node"`
	IP         string       `json:"ip"`
	Netns      string       `json:"netns"`
	HostVeth   string       `json:"hostVeth"`
	Phase      string       `json:"phase"`
	Ready      bool         `json:"ready"`
	Restarts   int          `json:"restarts"`
	Containers []ProcStatus `json:"containers"`
	// Started is true once the network is up, the containers were
	// started, their readiness probes passed (or had 20 s), and (Mesh)
	// the pod is enrolled; else Waiting says what it waits for.
	Started bool   `json:"started"`
	Waiting string `json:"waiting,omitempty"`
	// Enrolment is what the node's agent answered (Mesh).
	Enrolment string `json:"enrolment,omitempty"`
	// Error is the last failure to build the pod's network.
	Error string `json:"error,omitempty"`
}

// PendingPod is a pod no node can take.
type PendingPod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
}

// daemon is the running kubelet.
type daemon struct {
	o   Options
	log *slog.Logger
	lab *lab.Lab

	nodes  map[string]*lab.Node
	fsKick chan struct{} // the directory changed (debounced)
	stKick chan struct{} // a pod's or process's status changed

	mu       sync.Mutex
	workers  map[string]*podWorker
	alloc    *cluster.Allocations
	last     *cluster.Manifests
	pending  []PendingPod
	errs     []string
	reloads  int
	rendered bool
	mesh     *mesh
}

// Run is the daemon: it runs the lab in stateDir (its Options in
// lab.json, its nodes in cluster.yaml) until ctx is done, then stops
// every pod and process it started and returns.
func Run(ctx context.Context, stateDir string, log *slog.Logger) error {
	o, err := LoadOptions(stateDir)
	if err != nil {
		return err
	}
	l, err := lab.Load(stateDir)
	if err != nil {
		return err
	}
	d := &daemon{o: o, log: log, lab: l, nodes: map[string]*lab.Node{},
		fsKick: make(chan struct{}, 1), stKick: make(chan struct{}, 1),
		workers: map[string]*podWorker{}, alloc: cluster.NewAllocations()}
	for _, n := range l.Nodes {
		n.Pods = nil
		d.nodes[n.Name] = n
	}
	if b, err := os.ReadFile(filepath.Join(stateDir, AllocationsFile)); err == nil {
		if err := json.Unmarshal(b, d.alloc); err != nil {
			log.Warn("allocations unreadable: starting afresh", "file", AllocationsFile, "err", err)
			d.alloc = cluster.NewAllocations()
		}
	}
	if err := os.WriteFile(filepath.Join(stateDir, PidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	sock := filepath.Join(stateDir, SocketFile)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		srv.Close()
		os.Remove(sock)
	}()

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", o.Dir, err)
	}
	defer w.Close()
	if err := watchTree(w, o.Dir); err != nil {
		return err
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go d.watch(wctx, w)

	podsCtx, stopPods := context.WithCancel(context.Background())
	log.Info("kubelet starting", "dir", o.Dir, "nodes", len(l.Nodes), "mesh", o.Mesh)
	d.reconcile(podsCtx, true)
	if o.Mesh {
		// Published once start has set its processes up: /status reads
		// them from other goroutines.
		m := d.newMesh()
		if err := m.start(podsCtx); err != nil {
			log.Error("mesh", "err", err)
		}
		d.mu.Lock()
		d.mesh = m
		d.mu.Unlock()
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-d.fsKick:
			_ = watchTree(w, o.Dir)
			d.reconcile(podsCtx, true)
		case <-d.stKick:
			d.reconcile(podsCtx, false)
		}
	}
	log.Info("kubelet stopping: pods and processes")
	stopPods()
	d.mu.Lock()
	workers := make([]*podWorker, 0, len(d.workers))
	for _, w := range d.workers {
		workers = append(workers, w)
	}
	m := d.mesh
	d.mu.Unlock()
	for _, w := range workers {
		<-w.done
	}
	if m != nil {
		m.wait()
	}
	os.Remove(filepath.Join(stateDir, PidFile))
	log.Info("kubelet stopped")
	return nil
}

func (d *daemon) backoff() backoff { return backoff{base: d.o.BackoffBase, max: d.o.BackoffMax} }

// statusChanged asks for a reconcile without reading the directory: the
// cluster view carries the pods' phase and readiness.
func (d *daemon) statusChanged() {
	select {
	case d.stKick <- struct{}{}:
	default:
	}
}

func (d *daemon) workerDone(w *podWorker) {
	d.mu.Lock()
	if d.workers[w.key] == w {
		delete(d.workers, w.key)
	}
	d.mu.Unlock()
	// A pod replaced (new node or IP) waits for the old one to go.
	select {
	case d.fsKick <- struct{}{}:
	default:
	}
}

// reconcile makes the cluster view and the running pods match the
// manifests (read again when reload), in that order: the controller
// learns of a new pod, with its IP, before its network is built.
func (d *daemon) reconcile(ctx context.Context, reload bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if reload || d.last == nil {
		m, err := cluster.Load(d.o.Dir)
		if err != nil {
			d.log.Error("read manifests: keeping the pods that run", "dir", d.o.Dir, "err", err)
			d.errs = []string{err.Error()}
			return
		}
		d.last = m
		d.reloads++
	}
	m := d.last
	s := cluster.Schedule(m, d.o.Nodes, d.alloc)
	var errs []string
	for _, e := range append(slices.Clone(m.Errors), s.Errors...) {
		errs = append(errs, e.Error())
	}
	for _, e := range errs {
		if !slices.Contains(d.errs, e) {
			d.log.Warn("manifest left out", "err", e)
		}
	}
	d.errs = errs
	d.pending = nil
	for _, p := range s.Pending {
		msg := ""
		if len(p.Status.Conditions) > 0 {
			msg = p.Status.Conditions[0].Message
		}
		d.pending = append(d.pending, PendingPod{Namespace: p.Namespace, Name: p.Name, Reason: msg})
	}
	if b, err := json.MarshalIndent(d.alloc, "", "  "); err == nil {
		if err := cluster.WriteFile(filepath.Join(d.o.StateDir, AllocationsFile), b); err != nil {
			d.log.Error("save allocations", "err", err)
		}
	}

	// The pods' phase and readiness, from the workers that run them.
	// A pod not started yet is ready unless a readiness probe has to say
	// so first (one flip, false to true, rather than true, false, true).
	for _, p := range s.Pods {
		ready := !hasProbe(p)
		w := d.workers[cluster.PodKey(p)]
		if w != nil && !w.isStopping() && w.node.Name == p.Spec.NodeName && w.labPod.IP.String() == p.Status.PodIP {
			st := w.status()
			p.Status.Phase = corev1.PodPhase(st.Phase)
			ready = st.Ready
		}
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.PodReady && !ready {
				p.Status.Conditions[i].Status = corev1.ConditionFalse
			}
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[lab.AnnotationNetns] = lab.PodNetns(d.o.Prefix, p.Namespace, p.Name)
	}
	view := &cluster.View{
		Pods:           append(slices.Clone(s.Pods), s.Pending...),
		Services:       s.Services,
		EndpointSlices: cluster.EndpointSlices(s.Services, s.Pods),
		Others:         m.Others,
	}
	for _, np := range d.o.Nodes {
		view.Nodes = append(view.Nodes, cluster.NodeObject(np, lab.NodeAnnotations(d.lab, d.nodes[np.Name])))
	}
	files, err := cluster.Render(view)
	if err == nil {
		var n int
		n, err = cluster.WriteDir(filepath.Join(d.o.StateDir, ClusterDir), files)
		if n > 0 {
			d.log.Info("cluster view written", "files_changed", n, "reload", reload)
		}
	}
	if err != nil {
		d.log.Error("cluster view", "err", err)
	}
	d.rendered = true

	// Then the pods themselves.
	want := map[string]*corev1.Pod{}
	for _, p := range s.Pods {
		want[cluster.PodKey(p)] = p
	}
	for k, w := range d.workers {
		p := want[k]
		if !w.isStopping() && (p == nil || w.node.Name != p.Spec.NodeName || w.labPod.IP.String() != p.Status.PodIP) {
			d.log.Info("stopping pod", "pod", k)
			w.stop()
		}
	}
	for _, p := range s.Pods {
		k := cluster.PodKey(p)
		if w := d.workers[k]; w != nil {
			if !w.isStopping() {
				w.update(p)
			}
			continue // a stopping one is replaced once it is gone
		}
		n := d.nodes[p.Spec.NodeName]
		if n == nil {
			continue // Schedule only uses the lab's nodes
		}
		w := d.newWorker(p, n, p.Status.PodIP)
		wctx, cancel := context.WithCancel(ctx)
		w.cancel = cancel
		d.workers[k] = w
		d.log.Info("starting pod", "pod", k, "node", n.Name, "ip", p.Status.PodIP)
		go w.run(wctx)
	}
	d.writeLabState()
}

// writeLabState records the running pods in cluster.yaml (lab.Load, for
// exec and status). Called with d.mu held.
func (d *daemon) writeLabState() {
	for _, n := range d.lab.Nodes {
		n.Pods = nil
	}
	keys := make([]string, 0, len(d.workers))
	for k := range d.workers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w := d.workers[k]
		if w.isStopping() {
			continue
		}
		w.node.Pods = append(w.node.Pods, w.labPod)
	}
	if err := lab.WriteState(d.lab); err != nil {
		d.log.Error("lab state", "err", err)
	}
}

// status reports the daemon.
func (d *daemon) status() *Status {
	d.mu.Lock()
	st := &Status{Dir: d.o.Dir, Mesh: d.o.Mesh, Reloads: d.reloads, Pending: slices.Clone(d.pending), Errors: slices.Clone(d.errs)}
	workers := make([]*podWorker, 0, len(d.workers))
	for _, w := range d.workers {
		workers = append(workers, w)
	}
	m, rendered := d.mesh, d.rendered
	d.mu.Unlock()
	for _, w := range workers {
		st.Pods = append(st.Pods, w.status())
	}
	slices.SortFunc(st.Pods, func(a, b PodStatus) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	if !rendered {
		st.NotReady = append(st.NotReady, "the manifests were not read yet")
	}
	for _, p := range st.Pods {
		if !p.Started && p.Phase != "Terminating" {
			st.NotReady = append(st.NotReady, fmt.Sprintf("pod %s/%s waits for %s", p.Namespace, p.Name, p.Waiting))
		}
	}
	if d.o.Mesh {
		if m == nil {
			st.NotReady = append(st.NotReady, "the mesh is not started")
		} else {
			st.Processes = m.status()
			for _, p := range st.Processes {
				if !p.Ready {
					st.NotReady = append(st.NotReady, p.Name+" is not ready")
				}
			}
		}
	}
	st.Ready = len(st.NotReady) == 0
	return st
}

func (d *daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		st := d.status()
		if !st.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(st.NotReady, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d.status())
	})
	return mux
}

// watch turns changes under the manifest directory into fsKick, once the
// tree has been quiet for Debounce (at most 10 × Debounce after the first
// change), as controller/store/file does: editors that write a temporary
// file and rename it, or remove and recreate, end in one reload of the
// final content.
func (d *daemon) watch(ctx context.Context, w *fsnotify.Watcher) {
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	deadline := time.NewTimer(time.Hour)
	deadline.Stop()
	pending := false
	// A directory removed (or renamed away) loses its watch: look for it
	// again every second, as controller/store/file does.
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	fire := func() {
		pending = false
		quiet.Stop()
		deadline.Stop()
		select {
		case d.fsKick <- struct{}{}:
		default:
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					_ = watchTree(w, ev.Name)
				}
			}
			quiet.Reset(d.o.Debounce)
			if !pending {
				pending = true
				deadline.Reset(10 * d.o.Debounce)
			}
		case _, ok := <-w.Errors:
			if !ok {
				return
			}
			fire() // events may be lost: read the truth
		case <-quiet.C:
			fire()
		case <-deadline.C:
			fire()
		case <-retry.C:
			if !slices.Contains(w.WatchList(), d.o.Dir) {
				if err := watchTree(w, d.o.Dir); err == nil {
					fire()
				}
			}
		}
	}
}

// watchTree watches every directory under root that is not watched yet.
func watchTree(w *fsnotify.Watcher, root string) error {
	watched := map[string]bool{}
	for _, p := range w.WatchList() {
		watched[p] = true
	}
	return filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != root {
				return nil
			}
			return fmt.Errorf("watch %s: %w", p, err)
		}
		if !e.IsDir() || watched[p] {
			return nil
		}
		if p != root && strings.HasPrefix(e.Name(), ".") {
			return filepath.SkipDir
		}
		if err := w.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watch %s: %w", p, err)
		}
		return nil
	})
}

func mustAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

// hasProbe says whether a container of p has a readiness probe.
func hasProbe(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.ReadinessProbe != nil {
			return true
		}
	}
	return false
}
