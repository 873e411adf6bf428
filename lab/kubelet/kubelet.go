// Package kubelet is the lab's tiny, process-based kubelet: a daemon
// that runs a directory of manifests on a lab built by lab.UpNodes.
//
// It reads the directory (package cluster: Pods, Deployments, Services,
// ...), schedules the pods and allocates their IPs and the Services'
// ClusterIPs (kept in the state directory, never written into the
// user's files), renders the cluster as an apiserver would report it into
// <stateDir>/cluster/ for fibmesh-controller, builds each pod's network
// namespace (lab.BuildPod) and runs its containers' command and args as
// processes there, with the pod's environment, per-container log files
// and kubelet's restart policy and back-off. It watches the directory
// and creates, restarts or removes pods as it changes. With Mesh it also
// runs fibmesh-controller in the fabric namespace and fibmesh-agent in
// every node, and enrols each running pod with its node's agent
// (api/enrol).
//
// Up starts the daemon (the fibmesh-lab binary's "kubelet" command,
// detached in a session of its own) and waits until it says it is ready
// on its status socket; Stop stops it and everything it runs; Get reads
// its status.
package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fibmesh/fibmesh/lab/cluster"
)

// Defaults of Options.
const (
	// DefaultBackoffBase and DefaultBackoffMax are kubelet's restart
	// back-off: 10 s doubling to 5 minutes.
	DefaultBackoffBase = 10 * time.Second
	DefaultBackoffMax  = 300 * time.Second
	// DefaultDebounce is how long the manifest directory must be quiet
	// before it is read again: the controller's --config-debounce in the
	// lab, long enough for an editor's save (write, rename).
	DefaultDebounce = 10 * time.Millisecond
	// backoffReset is how long a container must run for its back-off to
	// start again from zero (kubelet: twice the maximum back-off).
	backoffReset = 10 * time.Minute
)

// Options configure the daemon. Up writes them to <StateDir>/lab.json,
// where the daemon reads them.
type Options struct {
	// StateDir is the lab's state directory.
	StateDir string `json:"stateDir"`
	// Dir is the manifest directory, absolute.
	Dir string `json:"dir"`
	// Prefix is the lab's network namespace prefix.
	Prefix string `json:"prefix"`
	// Nodes are the lab's nodes, as cluster.PlanNodes made them at up.
	Nodes []cluster.NodePlan `json:"nodes"`
	// Mesh runs fibmesh-controller and one fibmesh-agent per node.
	Mesh bool `json:"mesh"`
	// BinDir holds fibmesh-controller and fibmesh-agent (Mesh).
	BinDir string `json:"binDir,omitempty"`
	// AgentArgs are extra fibmesh-agent arguments by node name (Mesh),
	// "*" for every node's, which come first: fibmesh-lab up --agent-arg
	// (say node1:--nic-ktls-offload=on).
	AgentArgs map[string][]string `json:"agentArgs,omitempty"`
	// BackoffBase and BackoffMax shape the restart back-off: no delay
	// for the first restart, then Base, doubling up to Max.
	BackoffBase time.Duration `json:"backoffBase"`
	BackoffMax  time.Duration `json:"backoffMax"`
	// Debounce is the quiet time after a change of Dir before it is
	// read again.
	Debounce time.Duration `json:"debounce"`
	// Self is the fibmesh-lab binary, whose "kubelet" command is the
	// daemon.
	Self string `json:"self"`
}

// withDefaults fills the zero durations.
func (o Options) withDefaults() Options {
	if o.BackoffBase <= 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffBase {
		o.BackoffMax = o.BackoffBase
	}
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	return o
}

// Names of the files and directories in the state directory that the
// daemon owns (beside lab.StateFile, which package lab owns).
const (
	OptionsFile     = "lab.json"     // Options
	AllocationsFile = "alloc.json"   // cluster.Allocations
	ClusterDir      = "cluster"      // the apiserver's view, for the controller
	PidFile         = "kubelet.pid"  // the daemon's pid
	LogFile         = "kubelet.log"  // the daemon's own log
	SocketFile      = "kubelet.sock" // status socket: /readyz, /status
	PodsDir         = "pods"         // pods/<namespace>_<name>/<container>.log
	CADir           = "ca"           // the controller's CA (Mesh)
	TokensFile      = "tokens"       // bootstrap tokens, "<node> <token>" lines (Mesh)
	RunSubdir       = "run"          // agents' --run-dir for a prefix other than lab.DefaultPrefix
	ManifestsDir    = "manifests"    // where the demo copies examples/
)

// stateEntries are what RemoveState removes.
var stateEntries = []string{OptionsFile, AllocationsFile, ClusterDir, PidFile, LogFile, SocketFile, PodsDir,
	CADir, TokensFile, RunSubdir, ManifestsDir, "controller.log"}

// SaveOptions writes o to <o.StateDir>/lab.json.
func SaveOptions(o Options) error {
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	return cluster.WriteFile(filepath.Join(o.StateDir, OptionsFile), append(b, '\n'))
}

// LoadOptions reads <stateDir>/lab.json.
func LoadOptions(stateDir string) (Options, error) {
	var o Options
	b, err := os.ReadFile(filepath.Join(stateDir, OptionsFile))
	if err != nil {
		return o, fmt.Errorf("lab options: %w (is a lab with -f up? fibmesh-lab up -f DIR)", err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("lab options %s: %w", filepath.Join(stateDir, OptionsFile), err)
	}
	return o.withDefaults(), nil
}

// RemoveState removes what the daemon wrote in stateDir (logs too), and
// stateDir itself if that leaves it empty. Call it once the daemon is
// stopped.
func RemoveState(stateDir string) error {
	var errs []error
	for _, e := range stateEntries {
		if err := os.RemoveAll(filepath.Join(stateDir, e)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pat := range []string{"token-*", "agent-*.log"} {
		m, _ := filepath.Glob(filepath.Join(stateDir, pat))
		for _, f := range m {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	_ = os.Remove(stateDir) // only when empty
	return errors.Join(errs...)
}

// PodLogDir returns the directory of a pod's container logs.
func PodLogDir(stateDir, namespace, name string) string {
	return filepath.Join(stateDir, PodsDir, namespace+"_"+name)
}

// ContainerLog returns the log file of one container of a pod.
func ContainerLog(stateDir, namespace, name, container string) string {
	return filepath.Join(PodLogDir(stateDir, namespace, name), container+".log")
}
