package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fibmesh/fibmesh/lab"
)

// Container states, as kubectl shows them.
const (
	StateWaiting    = "Waiting"
	StateRunning    = "Running"
	StateTerminated = "Terminated"
)

// ProcStatus is the state of one supervised process: a container, the
// controller or an agent.
type ProcStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`            // Waiting, Running, Terminated
	Reason   string    `json:"reason,omitempty"` // CrashLoopBackOff, Completed, Error, NoCommand, ...
	Message  string    `json:"message,omitempty"`
	PID      int       `json:"pid,omitempty"`
	ExitCode int       `json:"exitCode,omitempty"` // of the last run
	Restarts int       `json:"restarts"`
	Started  time.Time `json:"started,omitzero"`
	Log      string    `json:"log,omitempty"`
	// Ready is, for a container with a readiness probe and for the
	// mesh's processes, what the last probe decided (mesh: /readyz
	// answers 200).
	Ready bool `json:"ready,omitempty"`
	// Probed says the container has a readiness probe; Decided that it
	// has made a decision since the container last started.
	Probed  bool `json:"probed,omitempty"`
	Decided bool `json:"decided,omitempty"`
}

// procSpec is what to run.
type procSpec struct {
	name   string
	netns  string   // network namespace, entered with nsenter --net
	argv   []string // program first
	env    []string
	dir    string
	log    string
	policy corev1.RestartPolicy
	grace  time.Duration // SIGTERM to SIGKILL
}

// backoff is kubelet's restart back-off.
type backoff struct{ base, max time.Duration }

// delay returns the wait before restart number n (from 1) of a run of
// crashes: none for the first, then base, doubling up to max.
func (b backoff) delay(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := b.base
	for i := 2; i < n && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// proc supervises one process.
type proc struct {
	spec    procSpec
	bo      backoff
	changed func() // called after every state change

	mu sync.Mutex
	st ProcStatus
	// gen is closed and replaced every time the process starts: a
	// watcher (the enroller, for an agent) learns of restarts.
	gen chan struct{}
}

func newProc(spec procSpec, bo backoff, changed func()) *proc {
	if changed == nil {
		changed = func() {}
	}
	return &proc{spec: spec, bo: bo, changed: changed, gen: make(chan struct{}),
		st: ProcStatus{Name: spec.name, State: StateWaiting, Reason: "ContainerCreating", Log: spec.log}}
}

func (p *proc) status() ProcStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// started returns a channel closed at the process's next start.
func (p *proc) started() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

func (p *proc) set(f func(*ProcStatus)) {
	p.mu.Lock()
	f(&p.st)
	p.mu.Unlock()
	p.changed()
}

// shouldRestart applies the restart policy to an exit code.
func shouldRestart(policy corev1.RestartPolicy, code int) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return true
	}
}

// run starts the process and restarts it as its policy says until ctx
// is done; then it stops it (SIGTERM to the process group, SIGKILL after
// the grace period) and returns.
func (p *proc) run(ctx context.Context) {
	crashes := 0
	for {
		start := time.Now()
		code, err := p.once(ctx)
		if ctx.Err() != nil {
			p.set(func(s *ProcStatus) {
				s.State, s.Reason, s.PID, s.ExitCode = StateTerminated, "Killed", 0, code
			})
			return
		}
		reason := "Completed"
		if code != 0 {
			reason = "Error"
		}
		msg := ""
		if err != nil {
			reason, msg = "StartError", err.Error()
		}
		if !shouldRestart(p.spec.policy, code) {
			p.set(func(s *ProcStatus) {
				s.State, s.Reason, s.Message, s.PID, s.ExitCode = StateTerminated, reason, msg, 0, code
			})
			return
		}
		if time.Since(start) >= backoffReset {
			crashes = 0
		}
		crashes++
		d := p.bo.delay(crashes)
		p.set(func(s *ProcStatus) {
			s.State, s.Reason, s.Message, s.PID, s.ExitCode = StateWaiting, "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting (last exit: %s %d)", d, reason, code), 0, code
			if msg != "" {
				s.Message += ": " + msg
			}
		})
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		p.set(func(s *ProcStatus) { s.Restarts++ })
	}
}

// once runs the process one time and returns its exit code (128+signal
// for a signal; 128 when it could not start, with the error).
func (p *proc) once(ctx context.Context) (int, error) {
	if err := os.MkdirAll(filepath.Dir(p.spec.log), 0o755); err != nil {
		return 128, err
	}
	logf, err := os.OpenFile(p.spec.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 128, err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + lab.NetnsPath(p.spec.netns), "--"}, p.spec.argv...)...)
	cmd.Env, cmd.Dir = p.spec.env, p.spec.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that stopping it stops what it forked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 128, err
	}
	p.mu.Lock()
	close(p.gen)
	p.gen = make(chan struct{})
	p.mu.Unlock()
	p.set(func(s *ProcStatus) {
		s.State, s.Reason, s.Message, s.PID, s.Started = StateRunning, "", "", cmd.Process.Pid, time.Now()
		if s.Probed {
			s.Ready, s.Decided = false, false
		}
	})
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pgid := cmd.Process.Pid
	select {
	case err = <-exited:
		// A container is its main process: what it left behind in its
		// group (sh -c "helper & server") goes with it, as when kubelet
		// restarts a container, so a restart does not find the port
		// held or pile up orphans.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(p.spec.grace)
		select {
		case err = <-exited:
			t.Stop()
		case <-t.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			err = <-exited
		}
		// Whatever it left in its group goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	return exitCode(err), nil
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 128
}
