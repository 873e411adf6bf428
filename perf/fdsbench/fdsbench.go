// Package fdsbench measures FDS propagation end to end, as a user would
// see it: a Pod written into the manifest directory that a lab runs with
// its mesh (fibmesh-lab up -f DIR --mesh) → the lab renders the cluster
// view → the controller's file store reloads it → the model → an FDS
// push → the remote node's agent writes the pod's /32 route into its XDP
// FIB. The clock starts just before the manifest is renamed into the
// directory and stops when the route is in the other node's pinned route
// map (read through fastpath/fib, polled every PollInterval); the same
// for the Pod's file removed and the route gone.
package fdsbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

// PollInterval is how often the remote FIB's route map is read: the
// resolution of each sample.
const PollInterval = 500 * time.Microsecond

// Options configure Run.
type Options struct {
	// Bin is the directory holding fibmesh-lab, fibmesh-controller,
	// fibmesh-agent and fibctl (make build).
	Bin string
	// Prefix and StateDir are the lab's (default fm-fds-, a temporary
	// directory).
	Prefix, StateDir string
	// Rounds of add + remove (default 50).
	Rounds int
	// Timeout bounds one sample (default 10 s).
	Timeout time.Duration
	// Out receives progress and the summary.
	Out io.Writer
}

// Result holds the samples in milliseconds.
type Result struct {
	Add, Remove []float64
	// AgentRSS is each agent's resident set size in bytes at the end.
	AgentRSS map[string]int64
}

// Summary is the p50/p99 of samples as the contract line prints them.
func Summary(name string, ms []float64) string {
	return fmt.Sprintf("%s: p50_ms=%.1f p99_ms=%.1f rounds=%d", name, quantile.Of(ms, 0.5), quantile.Of(ms, 0.99), len(ms))
}

// The lab's manifests: two nodes, one echo pod on each.
const baseManifests = `apiVersion: v1
kind: Namespace
metadata:
  name: bench
---
apiVersion: v1
kind: Pod
metadata:
  name: anchor-1
  namespace: bench
  labels: {app: anchor}
spec:
  nodeName: node1
  containers:
  - name: echo
    command: [fibmesh-lab, app, echo, --port, "8080"]
---
apiVersion: v1
kind: Pod
metadata:
  name: anchor-2
  namespace: bench
  labels: {app: anchor}
spec:
  nodeName: node2
  containers:
  - name: echo
    command: [fibmesh-lab, app, echo, --port, "8080"]
`

func benchPod(i int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: probe-%d
  namespace: bench
  labels: {app: probe}
spec:
  nodeName: node2
  containers:
  - name: echo
    command: [fibmesh-lab, app, echo, --port, "8080"]
`, i)
}

// Run brings the lab up, takes the samples and takes the lab down.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	if o.Rounds <= 0 {
		o.Rounds = 50
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Prefix == "" {
		o.Prefix = "fm-fds-"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.StateDir == "" {
		d, err := os.MkdirTemp("", "fibmesh-bench-fds-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.StateDir = filepath.Join(d, "state")
	}
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	labBin := filepath.Join(bin, "fibmesh-lab")
	if _, err := os.Stat(labBin); err != nil {
		return nil, fmt.Errorf("%w (run make build first)", err)
	}
	dir, err := os.MkdirTemp("", "fibmesh-bench-fds-manifests-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Pods run fibmesh-lab from PATH: the lab's binaries first.
	if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(baseManifests), 0o644); err != nil {
		return nil, err
	}
	lab := func(args ...string) error {
		args = append(args, "--prefix", o.Prefix, "--state-dir", o.StateDir)
		cmd := exec.CommandContext(ctx, labBin, args...)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("fibmesh-lab %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	fmt.Fprintf(o.Out, "lab: 2 nodes, controller and agents (fibmesh-lab up -f %s --mesh)\n", dir)
	if err := lab("up", "-f", dir, "--mesh", "--bin", bin); err != nil {
		return nil, err
	}
	defer func() {
		if derr := lab("down"); derr != nil {
			err = errors.Join(err, derr)
		}
	}()

	f, err := fib.OpenPinned(kubelet.AgentPinDir(o.Prefix, "node1"))
	if err != nil {
		return nil, fmt.Errorf("node1's FIB: %w", err)
	}
	defer f.Close()
	hostRoutes := func() (map[netip.Prefix]bool, error) {
		rs, err := f.Routes.List()
		if err != nil {
			return nil, err
		}
		m := make(map[netip.Prefix]bool, len(rs))
		for _, r := range rs {
			if r.Prefix.Bits() == 32 {
				m[r.Prefix] = true
			}
		}
		return m, nil
	}
	// wait polls until cond holds on node1's host routes.
	wait := func(what string, cond func(map[netip.Prefix]bool) bool) error {
		deadline := time.Now().Add(o.Timeout)
		for {
			rs, err := hostRoutes()
			if err != nil {
				return err
			}
			if cond(rs) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not seen in node1's FIB within %s", what, o.Timeout)
			}
			time.Sleep(PollInterval)
		}
	}
	// The anchors' routes show that FDS reached node1 at all.
	if err := wait("the first pods' routes", func(rs map[netip.Prefix]bool) bool { return len(rs) >= 2 }); err != nil {
		return nil, err
	}

	res = &Result{}
	for i := range o.Rounds {
		before, err := hostRoutes()
		if err != nil {
			return nil, err
		}
		tmp := filepath.Join(filepath.Dir(dir), fmt.Sprintf(".probe-%d.yaml", i))
		if err := os.WriteFile(tmp, []byte(benchPod(i)), 0o644); err != nil {
			return nil, err
		}
		file := filepath.Join(dir, "probe-"+strconv.Itoa(i)+".yaml")
		start := time.Now()
		if err := os.Rename(tmp, file); err != nil {
			return nil, err
		}
		var added netip.Prefix
		if err := wait(fmt.Sprintf("round %d: pod bench/probe-%d's route", i, i), func(rs map[netip.Prefix]bool) bool {
			for p := range rs {
				if !before[p] {
					added = p
					return true
				}
			}
			return false
		}); err != nil {
			return nil, err
		}
		res.Add = append(res.Add, ms(time.Since(start)))

		start = time.Now()
		if err := os.Remove(file); err != nil {
			return nil, err
		}
		if err := wait(fmt.Sprintf("round %d: route %s removed", i, added), func(rs map[netip.Prefix]bool) bool { return !rs[added] }); err != nil {
			return nil, err
		}
		res.Remove = append(res.Remove, ms(time.Since(start)))
		fmt.Fprintf(o.Out, "round %2d: %s added %.1f ms, removed %.1f ms\n", i+1, added, res.Add[i], res.Remove[i])
	}
	res.AgentRSS = agentRSS(ctx, o.StateDir)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// agentRSS reads each agent's VmRSS from /proc.
func agentRSS(ctx context.Context, stateDir string) map[string]int64 {
	st, err := kubelet.Get(ctx, stateDir)
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, p := range st.Processes {
		if !strings.HasPrefix(p.Name, "agent") || p.PID == 0 {
			continue
		}
		if rss, err := RSS(p.PID); err == nil {
			out[p.Name] = rss
		}
	}
	return out
}

// RSS returns the resident set size of pid in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// Names returns the keys of m in order.
func Names[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
