package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/cluster"
)

// ErrNotRunning is wrapped by the errors of Get and Stop when no daemon
// runs for the state directory.
var ErrNotRunning = errors.New("the lab's kubelet is not running")

// Start writes o to <StateDir>/lab.json and starts the daemon
// ("<o.Self> kubelet --state-dir DIR") detached: a session of its own,
// output to kubelet.log, so that it outlives the command that started
// it. It then waits until the daemon's /readyz answers 200, the daemon
// exits (the error quotes the end of its log) or ctx is done (the error
// says what is not ready). The lab's nodes must be up (lab.UpNodes).
func Start(ctx context.Context, o Options) (*Status, error) {
	o = o.withDefaults()
	if err := SaveOptions(o); err != nil {
		return nil, err
	}
	logPath := filepath.Join(o.StateDir, LogFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(o.Self, "kubelet", "--state-dir", o.StateDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the lab's kubelet: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.StateDir, PidFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := socketClient(o.StateDir)
	var last string
	for {
		if st, ok, msg := ready(ctx, c); ok {
			return st, nil
		} else if msg != "" {
			last = msg
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("the lab's kubelet exited (%v); the end of %s:\n%s", err, logPath, tail(logPath, 20))
		case <-ctx.Done():
			return nil, fmt.Errorf("the lab is not ready (%w): %s; see %s", ctx.Err(), strings.TrimSpace(last), logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ready asks /readyz once; on 200 it also fetches /status.
func ready(ctx context.Context, c *http.Client) (*Status, bool, string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://kubelet/readyz", nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil, false, ""
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, string(body)
	}
	st, err := get(ctx, c)
	if err != nil {
		return nil, false, err.Error()
	}
	return st, true, ""
}

// Get returns the status of the daemon of stateDir. The error wraps
// ErrNotRunning when no daemon answers.
func Get(ctx context.Context, stateDir string) (*Status, error) {
	return get(ctx, socketClient(stateDir))
}

func get(ctx context.Context, c *http.Client) (*Status, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://kubelet/status", nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("the lab's kubelet status: %w", err)
	}
	return &st, nil
}

// socketClient talks to the daemon of stateDir over its unix socket. The
// caller's context bounds a call; the client's own timeout only catches
// a daemon that accepts and never answers. It is generous: /status waits
// for a reconcile in progress (it writes the cluster view), which took
// over 5 s in the VM under TCG on a loaded machine (make bench: the
// offload bench's first status after the lab came up).
func socketClient(stateDir string) *http.Client {
	sock := filepath.Join(stateDir, SocketFile)
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

// Stop stops the daemon of stateDir (SIGTERM: it stops its pods'
// containers, the controller and the agents, then exits) and waits for it
// to go, up to timeout, after which it is killed. No daemon is not an
// error.
func Stop(stateDir string, timeout time.Duration) error {
	pidPath := filepath.Join(stateDir, PidFile)
	b, err := os.ReadFile(pidPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return os.Remove(pidPath)
	}
	if isKubelet(pid) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(timeout)
		for isKubelet(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // not our child: no wait(2)
		}
		if isKubelet(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := os.Remove(pidPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// isKubelet says whether pid is a live "... kubelet" daemon (not a zombie,
// not a recycled pid).
func isKubelet(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		if f := strings.Fields(s[i+1:]); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	return len(args) > 1 && args[1] == "kubelet"
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Up brings a lab up for the manifests in o.Dir: it stops an earlier
// daemon of o.StateDir, reads the manifests, plans the nodes (the kind:
// Node objects, else node1..node<nodes> and the nodeNames the pods use),
// builds them with lab.UpNodes (removing a lab with the same prefix
// first), and starts the daemon, which runs the pods (Start). On failure
// it takes down what it built. Allocations (alloc.json) of an earlier
// run in o.StateDir are kept, so pods keep their IPs.
func Up(ctx context.Context, o Options, nodes int) (*Status, error) {
	if err := Stop(o.StateDir, time.Minute); err != nil {
		return nil, err
	}
	m, err := cluster.Load(o.Dir)
	if err != nil {
		return nil, err
	}
	plans, err := cluster.PlanNodes(m, nodes)
	if err != nil {
		return nil, fmt.Errorf("nodes of %s: %w", o.Dir, err)
	}
	o.Nodes = plans
	names := make([]string, len(plans))
	for i, p := range plans {
		names[i] = p.Name
	}
	for node := range o.AgentArgs {
		if node != "*" && !slices.Contains(names, node) {
			return nil, fmt.Errorf("--agent-arg %s:...: the lab has no node %s (its nodes: %s)", node, node, strings.Join(names, ", "))
		}
	}
	l, err := lab.UpNodes(ctx, lab.Config{Prefix: o.Prefix, StateDir: o.StateDir}, o.Dir, plans)
	if err != nil {
		return nil, err
	}
	st, err := Start(ctx, o)
	if err != nil {
		_ = Stop(o.StateDir, time.Minute)
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return st, nil
}
