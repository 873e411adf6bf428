// Package benchlab drives the fibmesh lab for the side-by-side
// benchmarks (perf/l4bench, perf/l7bench, perf/offloadbench): it writes
// the manifests they share (Namespaces, Pod), brings a lab up from a
// manifest directory with "fibmesh-lab up" and takes it down, finds the
// pods' and nodes' network namespaces and the proxies' processes, runs
// programs inside a pod's namespace, waits for the pods' listeners, and
// reads what the benches measure from /proc (CPU time, resident memory)
// and from the agents' admin API (/connections).
package benchlab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

// Lab is one bench's lab: the fibmesh-lab binary, the prefix of its
// namespaces and its state directory, and, once Inspect has run, the
// network namespaces of its pods and nodes.
type Lab struct {
	// Bin is the fibmesh-lab binary; the pods find the lab's other
	// binaries beside it (PATH).
	Bin string
	// Prefix and StateDir are the lab's (fibmesh-lab --prefix,
	// --state-dir).
	Prefix, StateDir string
	// PodNetns maps "namespace/name" to the pod's network namespace,
	// NodeNetns a node's name to its own (Inspect fills both).
	PodNetns, NodeNetns map[string]string
	// Pods are the pods as the lab's kubelet reported them to Inspect.
	Pods []kubelet.PodStatus
}

// Run runs fibmesh-lab with args, the lab's prefix and state directory.
func (l *Lab) Run(ctx context.Context, args ...string) error {
	args = append(args, "--prefix", l.Prefix, "--state-dir", l.StateDir)
	cmd := exec.CommandContext(ctx, l.Bin, args...)
	// Pods run fibmesh-lab (and the agents) from PATH: the lab's binaries first.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(l.Bin)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("fibmesh-lab %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Up brings the lab up from the manifest directory dir, with the
// controller and an agent per node when mesh is set, waiting at most
// timeout.
func (l *Lab) Up(ctx context.Context, dir string, mesh bool, timeout time.Duration) error {
	args := []string{"up", "-f", dir, "--bin", filepath.Dir(l.Bin), "--timeout", timeout.String()}
	if mesh {
		args = append(args, "--mesh")
	}
	return l.Run(ctx, args...)
}

// Down takes the lab down. It uses its own deadline, not a context: a
// cancelled run still takes its lab down.
func (l *Lab) Down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return l.Run(ctx, "down")
}

// Inspect reads the lab's pods and nodes (PodNetns, NodeNetns, Pods).
func (l *Lab) Inspect(ctx context.Context) error {
	st, err := kubelet.Get(ctx, l.StateDir)
	if err != nil {
		return err
	}
	ls, err := lab.Load(l.StateDir)
	if err != nil {
		return err
	}
	l.NodeNetns = map[string]string{}
	for _, n := range ls.Nodes {
		l.NodeNetns[n.Name] = n.Netns
	}
	l.PodNetns = map[string]string{}
	for _, p := range st.Pods {
		l.PodNetns[p.Namespace+"/"+p.Name] = p.Netns
	}
	l.Pods = st.Pods
	return nil
}

// Netns returns the network namespace of pod ("namespace/name"), or an
// error that points at the lab's log.
func (l *Lab) Netns(pod string) (string, error) {
	ns, ok := l.PodNetns[pod]
	if !ok {
		return "", fmt.Errorf("pod %s is not in the lab's status (see %s)", pod, filepath.Join(l.StateDir, kubelet.LogFile))
	}
	return ns, nil
}

// Exec runs argv in the network namespace netns, as "fibmesh-lab exec"
// does (nsenter --net, /sys left alone), and returns its standard output;
// the error quotes its standard error.
func Exec(ctx context.Context, netns string, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + lab.NetnsPath(netns), "--"}, argv...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, Clip(stderr.String(), 500))
	}
	return out, nil
}

// WaitListening polls the pods' listening TCP sockets (ss) until every
// port of want (pod "namespace/name" -> ports) has a listener, failing
// early when a container of the lab has exited (Crashed) and after
// timeout.
func (l *Lab) WaitListening(ctx context.Context, want map[string][]int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for pod, ports := range want {
		netns, err := l.Netns(pod)
		if err != nil {
			return err
		}
		for {
			out, err := Exec(ctx, netns, "ss", "-Hltn")
			if err != nil {
				return err
			}
			missing := MissingPorts(string(out), ports)
			if len(missing) == 0 {
				break
			}
			if err := l.Crashed(ctx); err != nil {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("pod %s: nothing listens on port(s) %v after %s (see the pod's logs: fibmesh-lab logs %s --state-dir %s)", pod, missing, timeout, pod, l.StateDir)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// Crashed returns an error, with the end of its log, for a container of
// the lab that has exited or restarted: none of a bench's should.
func (l *Lab) Crashed(ctx context.Context) error {
	st, err := kubelet.Get(ctx, l.StateDir)
	if err != nil {
		return err
	}
	for _, p := range st.Pods {
		for _, c := range p.Containers {
			if c.Restarts == 0 && c.State != kubelet.StateTerminated {
				continue
			}
			log := filepath.Join(l.StateDir, "pods", p.Namespace+"_"+p.Name, c.Name+".log")
			return fmt.Errorf("pod %s/%s: container %s exited (%s %s, %d restarts); the end of its log:\n%s",
				p.Namespace, p.Name, c.Name, c.State, c.Reason, c.Restarts, Tail(log, 5))
		}
	}
	return nil
}

// PIDs finds processes in the lab's status by name: a mesh process
// ("agent-node1", "controller") or a container ("namespace/pod/container"),
// and checks that each runs the program comm (/proc/PID/comm).
func (l *Lab) PIDs(ctx context.Context, comm string, names ...string) ([]int, error) {
	st, err := kubelet.Get(ctx, l.StateDir)
	if err != nil {
		return nil, err
	}
	pids := map[string]int{}
	for _, p := range st.Processes {
		pids[p.Name] = p.PID
	}
	for _, p := range st.Pods {
		for _, c := range p.Containers {
			pids[p.Namespace+"/"+p.Name+"/"+c.Name] = c.PID
		}
	}
	var out []int
	for _, n := range names {
		pid := pids[n]
		if pid <= 0 {
			return nil, fmt.Errorf("%s is not running (fibmesh-lab status --state-dir %s)", n, l.StateDir)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if got := strings.TrimSpace(string(b)); err != nil || got != comm {
			return nil, fmt.Errorf("%s: pid %d is %q, not %s", n, pid, got, comm)
		}
		out = append(out, pid)
	}
	return out, nil
}

// Connections reads the /connections of node's agent for pod (and state,
// if not empty). An agent without the endpoint (404) is an error that
// says the proxy is not wired.
func (l *Lab) Connections(ctx context.Context, node, pod, state string) ([]AgentConn, error) {
	c := kubelet.NetnsHTTPClient(l.NodeNetns[node], 5*time.Second)
	q := url.Values{"pod": {pod}}
	if state != "" {
		q.Set("state", state)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+kubelet.AgentAdmin+"/connections?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s's agent admin API: %w", node, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s's agent serves no /connections (404): the slow path proxy is not wired into the agent, so nothing can carry or show the mesh's traffic", node)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s's agent /connections: %s: %s", node, resp.Status, Clip(string(body), 200))
	}
	return ParseConnections(body)
}

// AgentProfile records a CPU profile of node's agent for d (whole
// seconds, at least one) from its admin API (/debug/pprof/profile) and
// returns it (pprof's format: go tool pprof reads it).
func (l *Lab) AgentProfile(ctx context.Context, node string, d time.Duration) ([]byte, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	c := kubelet.NetnsHTTPClient(l.NodeNetns[node], time.Duration(secs)*time.Second+30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", kubelet.AgentAdmin, secs), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s's agent CPU profile: %w", node, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s's agent CPU profile: %w", node, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s's agent CPU profile: %s: %s", node, resp.Status, Clip(string(body), 200))
	}
	return body, nil
}

// Tail returns the last n lines of a file, or why it cannot.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Clip trims s and cuts it to n bytes, marking a cut with "...".
func Clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
