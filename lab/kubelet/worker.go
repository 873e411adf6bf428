package kubelet

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/lab"
)

// probeSettle is how long a container with a readiness probe may stay
// not ready before the lab stops waiting for it (up returns; status
// shows it not ready).
const probeSettle = 20 * time.Second

// defaultGrace is the pod's terminationGracePeriodSeconds when it sets
// none, as in Kubernetes.
const defaultGrace = 30 * time.Second

// podWorker owns one pod: its network namespace, its containers, its
// enrolment. Its goroutine (run) is the only one that builds or tears
// down; the daemon talks to it through update and stop.
type podWorker struct {
	d      *daemon
	key    string
	node   *lab.Node
	labPod *lab.Pod

	updates chan *corev1.Pod // the latest spec; buffered 1
	// recheck asks the enrolment loop to decide again whether the pod
	// is captured (its labels, or its namespace's, may have changed);
	// buffered 1.
	recheck chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}

	mu       sync.Mutex
	pod      *corev1.Pod
	specHash string
	procs    []*proc
	noCmd    map[string]ProcStatus // containers that cannot run, by name
	netnsErr string
	netnsUp  bool
	started  bool // the containers of the current spec were started
	stopping bool
	enrolled string
	// outside is why the pod is not captured (model.CaptureOff), ""
	// while it is (or is being) enrolled.
	outside string
}

// specHash identifies what, changed, restarts a pod's containers.
func hashSpec(p *corev1.Pod) string {
	b, _ := json.Marshal(p.Spec)
	h := sha256.Sum256(b)
	return fmt.Sprintf("%x", h[:8])
}

func (d *daemon) newWorker(p *corev1.Pod, n *lab.Node, ip string) *podWorker {
	lp := lab.NewPod(d.o.Prefix, n, p.Namespace, p.Name, mustAddr(ip), maps.Clone(p.Labels))
	w := &podWorker{d: d, key: p.Namespace + "/" + p.Name, node: n, labPod: lp,
		updates: make(chan *corev1.Pod, 1), recheck: make(chan struct{}, 1), done: make(chan struct{}),
		pod: p, specHash: hashSpec(p)}
	return w
}

// update hands the worker a new version of its pod. Labels apply at
// once; a changed spec restarts the containers.
func (w *podWorker) update(p *corev1.Pod) {
	w.mu.Lock()
	w.labPod.Labels = maps.Clone(p.Labels)
	same := hashSpec(p) == w.specHash
	w.pod = p
	w.mu.Unlock()
	select { // the capture labels may have changed, or the namespace's
	case w.recheck <- struct{}{}:
	default:
	}
	if same {
		return
	}
	select {
	case <-w.updates: // drop an older one not yet taken
	default:
	}
	w.updates <- p
}

func (w *podWorker) stop() {
	w.mu.Lock()
	w.stopping = true
	w.mu.Unlock()
	w.cancel()
}

func (w *podWorker) isStopping() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopping
}

// run builds the pod, runs its containers until ctx is done, then tears
// the pod down.
func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	defer w.d.workerDone(w)
	log := w.d.log.With("pod", w.key)
	for delay := 200 * time.Millisecond; ; delay = min(delay*2, 10*time.Second) {
		err := lab.BuildPod(ctx, w.node, w.labPod)
		if err == nil {
			break
		}
		log.Error("build pod network", "err", err)
		w.set(func() { w.netnsErr = err.Error() })
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = lab.RemovePod(rctx, w.labPod)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	w.set(func() { w.netnsErr, w.netnsUp = "", true })
	log.Info("pod network up", "netns", w.labPod.Netns, "ip", w.labPod.IP, "node", w.node.Name)
	if w.d.o.Mesh {
		go w.enrol(ctx)
	}
	w.mu.Lock()
	pod := w.pod
	w.mu.Unlock()
	for {
		cctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		w.startContainers(cctx, &wg, pod)
		select {
		case pod = <-w.updates:
			log.Info("pod spec changed: restarting its containers")
			cancel()
			wg.Wait()
			w.mu.Lock()
			w.specHash, w.started = hashSpec(pod), false
			w.mu.Unlock()
			continue
		case <-ctx.Done():
			cancel()
			wg.Wait()
		}
		break
	}
	w.teardown()
	log.Info("pod removed")
}

// startContainers starts a supervisor for every container of pod.
func (w *podWorker) startContainers(ctx context.Context, wg *sync.WaitGroup, pod *corev1.Pod) {
	grace := defaultGrace
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	policy := pod.Spec.RestartPolicy
	if policy == "" {
		policy = corev1.RestartPolicyAlways
	}
	var procs []*proc
	noCmd := map[string]ProcStatus{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		logPath := ContainerLog(w.d.o.StateDir, pod.Namespace, pod.Name, c.Name)
		env, err := containerEnv(pod, c, filepath.Dir(w.d.o.Self))
		if err != nil {
			noCmd[c.Name] = ProcStatus{Name: c.Name, State: StateWaiting, Reason: "CreateContainerConfigError", Message: err.Error(), Log: logPath}
			continue
		}
		args, ok := argv(c, env)
		if !ok {
			noCmd[c.Name] = ProcStatus{Name: c.Name, State: StateWaiting, Reason: "NoCommand", Log: logPath,
				Message: "no command: the lab ignores images and runs a container's command and args; add command to run something (the pod's network is up)"}
			continue
		}
		pr := newProc(procSpec{
			name: c.Name, netns: w.labPod.Netns, argv: args, env: env, dir: c.WorkingDir,
			log: logPath, policy: policy, grace: grace,
		}, w.d.backoff(), w.d.statusChanged)
		prober, why := newProber(c, w.labPod.Netns, w.labPod.IP)
		if why != "" {
			w.d.log.Warn("probe", "pod", w.key, "container", c.Name, "err", why)
		}
		if prober != nil {
			pr.st.Probed = true
			prober.started = func() time.Time { return pr.status().Started }
			wg.Add(1)
			go func() {
				defer wg.Done()
				prober.run(ctx, func() bool { return pr.status().State == StateRunning }, func(ready bool, msg string) {
					pr.set(func(s *ProcStatus) { s.Ready, s.Decided = ready, true })
					if msg != "" {
						w.d.log.Info("readiness", "pod", w.key, "container", c.Name, "msg", msg)
					}
				})
			}()
		}
		procs = append(procs, pr)
	}
	w.set(func() { w.procs, w.noCmd, w.started = procs, noCmd, true })
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx)
		}()
	}
}

// teardown removes what run built: enrolment, network namespace, logs.
func (w *podWorker) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w.mu.Lock()
	outside := w.outside != ""
	w.mu.Unlock()
	if w.d.o.Mesh && !outside {
		ectx, ecancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := enrol.Call(ectx, w.d.enrolSocket(w.node.Name), enrol.Request{Op: enrol.OpRemove, Namespace: w.labPod.Namespace, Name: w.labPod.Name})
		ecancel()
		if err != nil {
			w.d.log.Warn("unenrol pod", "pod", w.key, "err", err)
		}
	}
	if err := lab.RemovePod(ctx, w.labPod); err != nil {
		w.d.log.Error("remove pod network", "pod", w.key, "err", err)
	}
	_ = os.RemoveAll(PodLogDir(w.d.o.StateDir, w.labPod.Namespace, w.labPod.Name))
}

// enrol hands the pod to its node's agent, retrying with back-off while
// the agent is not there, and again whenever the agent restarts. A pod
// outside the mesh (model.CaptureOff: a label on it or its namespace, as
// the controller decides) is not enrolled; one that leaves the mesh
// while enrolled is removed from its agent, and one that joins it is
// enrolled, as its labels change.
func (w *podWorker) enrol(ctx context.Context) {
	req := enrol.Request{Op: enrol.OpAdd, Namespace: w.labPod.Namespace, Name: w.labPod.Name, Netns: lab.NetnsPath(w.labPod.Netns)}
	sock := w.d.enrolSocket(w.node.Name)
	delay := 100 * time.Millisecond
	enrolled := false // the agent may hold the pod
	backOff := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		case <-w.recheck:
		}
		delay = min(delay*2, 5*time.Second)
		return true
	}
	for {
		if why, off := w.captureOff(); off {
			if enrolled {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := enrol.Call(cctx, sock, enrol.Request{Op: enrol.OpRemove, Namespace: req.Namespace, Name: req.Name})
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					w.set(func() {
						w.enrolled = "capture disabled (" + why + "), but the agent did not release the pod: " + err.Error()
					})
					if !backOff() {
						return
					}
					continue
				}
				enrolled = false
				w.d.log.Info("pod left the mesh: enrolment removed", "pod", w.key, "by", why)
			}
			delay = 100 * time.Millisecond
			w.set(func() { w.outside, w.enrolled = why, "not enrolled: capture disabled ("+why+")" })
			select {
			case <-ctx.Done():
				return
			case <-w.recheck:
				continue
			}
		}
		w.set(func() { w.outside = "" })
		restarted := w.d.agentStarted(w.node.Name)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := enrol.Call(cctx, sock, req)
		cancel()
		if ctx.Err() != nil {
			return
		}
		enrolled = true // even a failed call may have reached the agent
		if err != nil {
			w.set(func() { w.enrolled = "not enrolled: " + err.Error() })
			if !backOff() {
				return
			}
			continue
		}
		msg := "enrolled"
		if resp.Identity != "" {
			msg += " as " + resp.Identity
		}
		w.set(func() { w.enrolled = msg })
		delay = 100 * time.Millisecond
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-restarted: // a new agent knows nothing: enrol again
				break wait
			case <-w.recheck:
				if _, off := w.captureOff(); off {
					break wait
				}
			}
		}
	}
}

// captureOff decides whether the pod is outside the mesh, by its labels
// and annotations and its namespace's labels.
func (w *podWorker) captureOff() (string, bool) {
	w.mu.Lock()
	p := w.pod
	w.mu.Unlock()
	return model.CaptureOff(p.Labels, p.Annotations, w.d.namespaceLabels(p.Namespace))
}

// namespaceLabels are the labels of namespace ns as the manifests
// declare it: the lab's cluster view has the Namespaces the directory
// holds, as written (nil when it declares none of that name, or it does
// not parse: the cluster view reports that).
func (d *daemon) namespaceLabels(ns string) map[string]string {
	d.mu.Lock()
	m := d.last
	d.mu.Unlock()
	if m == nil {
		return nil
	}
	for _, o := range m.Others {
		if o.Group != "" || o.Kind != "Namespace" || o.Name != ns {
			continue
		}
		var n corev1.Namespace
		if err := yaml.Unmarshal(o.YAML, &n); err != nil {
			return nil
		}
		return n.Labels
	}
	return nil
}

func (w *podWorker) set(f func()) {
	w.mu.Lock()
	f()
	w.mu.Unlock()
	w.d.statusChanged()
}

// status reports the pod.
func (w *podWorker) status() PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := PodStatus{
		Namespace: w.labPod.Namespace, Name: w.labPod.Name, Node: w.node.Name, IP: w.labPod.IP.String(),
		Netns: w.labPod.Netns, HostVeth: w.labPod.HostVeth, Enrolment: w.enrolled, Error: w.netnsErr,
	}
	byName := map[string]ProcStatus{}
	for _, p := range w.procs {
		byName[p.spec.name] = p.status()
	}
	maps.Copy(byName, w.noCmd)
	for _, c := range w.pod.Spec.Containers {
		st, ok := byName[c.Name]
		if !ok || !w.started {
			st = ProcStatus{Name: c.Name, State: StateWaiting, Reason: "ContainerCreating", Probed: c.ReadinessProbe != nil}
		}
		s.Containers = append(s.Containers, st)
		s.Restarts += st.Restarts
	}
	s.Phase, s.Ready = phase(s.Containers)
	if w.stopping {
		s.Phase = "Terminating"
	}
	// Started: the network is up, the containers were started, those
	// with a readiness probe are ready (or have had probeSettle to get
	// there: a pod that never gets ready must not hold up the lab), and
	// (Mesh) the pod is enrolled with its node's agent.
	s.Started = w.netnsUp && w.started
	switch {
	case !w.netnsUp:
		s.Waiting = "its network"
	case !w.started:
		s.Waiting = "its containers"
	}
	for _, c := range s.Containers {
		if c.Probed && c.State == StateRunning && !c.Ready && time.Since(c.Started) < probeSettle {
			s.Started, s.Waiting = false, "the readiness probe of "+c.Name
		}
	}
	if s.Started && w.d.o.Mesh && w.outside == "" && !strings.HasPrefix(w.enrolled, "enrolled") {
		s.Started, s.Waiting = false, "enrolment ("+cmp.Or(w.enrolled, "not tried yet")+")"
	}
	return s
}

// phase derives the pod's phase and readiness from its containers as
// kubelet does: Running while any container runs or will run again;
// Succeeded when all ended with 0 for good; Failed when all ended and one
// did not succeed. Ready when every container runs (one that cannot run,
// NoCommand, does not hold the pod back: its network is up).
func phase(cs []ProcStatus) (string, bool) {
	terminated, failed, ready := 0, 0, true
	for _, c := range cs {
		switch {
		case c.State == StateTerminated:
			terminated++
			if c.ExitCode != 0 {
				failed++
			}
			ready = false
		case c.State == StateRunning:
			if c.Probed && !c.Ready {
				ready = false
			}
		case c.Reason == "ContainerCreating":
			if c.Probed {
				ready = false
			}
		case c.Reason == "NoCommand":
		default:
			ready = false
		}
	}
	switch {
	case len(cs) > 0 && terminated == len(cs) && failed == 0:
		return string(corev1.PodSucceeded), false
	case len(cs) > 0 && terminated == len(cs):
		return string(corev1.PodFailed), false
	}
	return string(corev1.PodRunning), ready
}
