// Command fibmesh-lab builds, inspects and removes the fibmesh lab: a
// cluster of nodes and pods made of network namespaces on this machine
// (see package lab).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/internal/output"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

const usage = `fibmesh-lab: a fibmesh test bed made of network namespaces on this machine.

It builds a small cluster: a fabric bridge, nodes (each a network
namespace with a NIC on the fabric and kernel forwarding on) and pods
(each a namespace wired to its node with a veth pair). Pods on different
nodes reach each other through the nodes.

With -f DIR it runs a directory of ordinary Kubernetes manifests (Pods,
Deployments, ReplicaSets, Services, and Istio's kinds): a tiny kubelet,
running in the background, schedules the pods, gives them IPs, runs their
containers' commands as processes in their namespaces, reports the cluster
as an apiserver would in STATE_DIR/cluster/, and follows DIR as it
changes. With --mesh it also runs fibmesh-controller and one
fibmesh-agent per node. Without -f it builds numbered pods (node1-pod1,
...) and runs nothing in them.

Usage:
  fibmesh-lab COMMAND [FLAGS] [ARGS]

Commands:
  up       build the lab (removing leftovers first): -f DIR [--mesh], or numbered pods
  down     stop everything the lab runs and remove it
  status   nodes, pods (IP, phase, restarts), controller and agents
  logs     a container's log: logs POD [-c NAME] [-f]
  exec     run a command inside a pod's, node's or the fabric's network namespace
  app      the built-in demo app: app echo --port P
  demo     the mesh demo: up -f examples/ --mesh, then a walk-through
  kubelet  the background daemon "up -f" starts (not for direct use)

Examples:
  sudo fibmesh-lab up -f examples/ --mesh
  sudo fibmesh-lab status
  sudo fibmesh-lab exec production/frontend-7c9d5b6f4-x2b4q -- curl -s reviews-ip:9080
  sudo fibmesh-lab up --nodes 2 --pods 2
  sudo fibmesh-lab exec node1-pod1 -- ping -c1 10.200.2.12
  sudo fibmesh-lab down

Run "fibmesh-lab COMMAND --help" for a command's flags. Every command
needs root. Exit status: 0 done, 1 failed, 2 bad usage; exec exits with
the command's status. "app" does not need root.
`

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ error }

// exitError carries the exit status of a command run by exec.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := run(os.Args[1:], os.Stdout, os.Stderr, logger)
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "fibmesh-lab: %v\n", err)
		os.Exit(2)
	default:
		logger.Error("fibmesh-lab failed", "err", err)
		os.Exit(1)
	}
}

// command is one subcommand.
type command struct {
	summary string
	usage   string // after "Usage:", with examples
	run     func(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error
	flags   func(fs *flag.FlagSet) // registers the command's flags
}

var commands = map[string]*command{
	"up": {
		summary: "build the lab and print its nodes and pods",
		usage: `fibmesh-lab up -f DIR [--mesh [--agent-arg [NODE:]ARG]...] [--bin DIR] [--nodes N] [--prefix P] [--state-dir DIR]
  fibmesh-lab up [--nodes N] [--pods M] [--prefix P] [--state-dir DIR]

Removes whatever a previous lab with the same prefix left behind, builds a
fresh one and prints it. On failure it removes what it built and names
the command that failed.

With -f DIR: nodes are DIR's kind: Node objects, or node1..nodeN and any
spec.nodeName the pods use; pods are DIR's Pods and the pods of its
Deployments and ReplicaSets. A background kubelet (fibmesh-lab kubelet,
pid in STATE_DIR/kubelet.pid) runs them and follows DIR; up returns once
every pod runs (and, with --mesh, the controller and every agent are
ready). Objects DIR gets wrong are reported with file and field and left
out; the rest runs. The controller's view of the cluster is written to
STATE_DIR/cluster/ (fibmesh-controller --config-dir reads it).

Without -f: N nodes with M numbered pods each, state in
STATE_DIR/cluster.yaml.

Examples:
  sudo fibmesh-lab up -f examples/ --mesh
  sudo fibmesh-lab up --nodes 3 --pods 2`,
		run: runUp,
	},
	"down": {
		summary: "remove the lab",
		usage: `fibmesh-lab down [--prefix P] [--state-dir DIR]

Stops the lab's kubelet (and with it every container, the controller and
the agents), then kills whatever still runs in the lab's namespaces and
deletes every network namespace
whose name starts with P, links in the root namespace starting with P,
pinned BPF state under /sys/fs/bpf/fibmesh/P*, and the state file. Works
without a state file (for example after a crash) and when nothing is
left. Without --prefix, P is the prefix of the lab in --state-dir (the
one "up --prefix" built there), else fm-. Matching is by plain prefix:
"--prefix fm-" also removes a lab built with "--prefix fm-x-" (every
lab on the machine, the tests' included).

Example:
  sudo fibmesh-lab down`,
		run: runDown,
	},
	"status": {
		summary: "print the lab's nodes, pods, controller and agents",
		usage: `fibmesh-lab status [--state-dir DIR] [-o table|json|yaml]

Prints the nodes and pods and whether each network namespace still
exists. For a lab of manifests (up -f) it asks the lab's kubelet: pods
with namespace, node, IP, phase, readiness and restarts, pods that no node
can take, objects of the directory left out, and with --mesh the
controller and the agents (ready or not) and each pod's enrolment. Exits
1 if no lab is up, a namespace is missing or the kubelet does not answer.

Example:
  sudo fibmesh-lab status`,
		run: runStatus,
	},
	"exec": {
		summary: "run a command in a node's or pod's network namespace",
		usage: `fibmesh-lab exec [--state-dir DIR] NAME -- COMMAND [ARGS...]

Runs COMMAND inside the network namespace of NAME: a pod (NAMESPACE/NAME,
or NAME where only one namespace has it, "node1-pod2" in the numbered
layout, or NAMESPACE/deploy/NAME: the first pod of a Deployment), a node
("node1") or "fabric". Only the network namespace changes (nsenter
--net), so /sys/fs/bpf stays visible. Standard input, output and error are
passed through, and fibmesh-lab exits with COMMAND's status.

Examples:
  sudo fibmesh-lab exec node1-pod1 -- ping -c1 10.200.2.12
  sudo fibmesh-lab exec node1 -- ip route
  sudo fibmesh-lab exec fabric -- bridge fdb show br br0`,
		run: runExec,
	},
}

// run dispatches args to a subcommand.
func run(args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	name := args[0]
	if name == "-h" || name == "-help" || name == "--help" || name == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := commands[name]
	if !ok {
		return usageError{fmt.Errorf("unknown command %q (want up, down, status, logs, exec, app or demo; see fibmesh-lab --help)", name)}
	}
	fs := newFlagSet(name, cmd)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			printUsage(fs, name, cmd)
			return err
		}
		return usageError{fmt.Errorf("%s: %w (see fibmesh-lab %s --help)", name, err, name)}
	}
	if os.Geteuid() != 0 && name != "app" {
		return errors.New("fibmesh-lab must run as root: it creates network namespaces and veths (CAP_SYS_ADMIN, CAP_NET_ADMIN); try sudo")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd.run(ctx, fs, fs.Args(), stdout, log)
}

// flags shared by the subcommands; each registers the ones it uses.
var (
	flagNodes     int
	flagPods      int
	flagPrefix    string
	flagStateDir  string
	flagFile      string
	flagMesh      bool
	flagBin       string
	flagBackoff   time.Duration
	flagTimeout   time.Duration
	flagContainer string
	flagFollow    bool
	flagOutput    string
	flagAgentArgs agentArgs
)

// agentArgs is up's repeatable --agent-arg [NODE:]ARG: an extra
// fibmesh-agent argument for NODE's agent, or every agent's without
// NODE: (kubelet.Options.AgentArgs).
type agentArgs map[string][]string

func (a *agentArgs) String() string {
	if a == nil {
		return ""
	}
	var out []string
	for node, args := range *a {
		for _, arg := range args {
			out = append(out, node+":"+arg)
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func (a *agentArgs) Set(v string) error {
	node, arg := "*", v
	if !strings.HasPrefix(v, "-") {
		var ok bool
		if node, arg, ok = strings.Cut(v, ":"); !ok || node == "" {
			return fmt.Errorf("%q: want [NODE:]ARG, e.g. node1:--nic-ktls-offload=on", v)
		}
	}
	if !strings.HasPrefix(arg, "-") {
		return fmt.Errorf("%q: the argument %q is no flag: want [NODE:]--FLAG=VALUE, e.g. node1:--nic-ktls-offload=on", v, arg)
	}
	if *a == nil {
		*a = agentArgs{}
	}
	(*a)[node] = append((*a)[node], arg)
	return nil
}

// newFlagSet returns the flag set of a subcommand. It prints nothing
// itself: run reports flag errors in one line and prints the usage for
// --help.
func newFlagSet(name string, cmd *command) *flag.FlagSet {
	fs := flag.NewFlagSet("fibmesh-lab "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	stateDir := func() {
		fs.StringVar(&flagStateDir, "state-dir", lab.DefaultStateDir, "`DIR` holding the lab's state file, cluster.yaml")
	}
	prefix := func() {
		fs.StringVar(&flagPrefix, "prefix", lab.DefaultPrefix, "`PREFIX` of every network namespace name (must start with fm-)")
	}
	switch name {
	case "demo":
		fs.StringVar(&flagBin, "bin", "", "`DIR` holding fibmesh-controller, fibmesh-agent and fibctl (default: beside fibmesh-lab)")
		fs.StringVar(&flagFile, "f", "examples", "`DIR` of manifests; the demo runs on a copy in STATE_DIR/manifests")
		prefix()
		stateDir()
	case "up":
		fs.IntVar(&flagNodes, "nodes", lab.DefaultNodes, "number of nodes, 1..9 (with -f: node1..nodeN where DIR has no kind: Node)")
		fs.IntVar(&flagPods, "pods", lab.DefaultPodsPerNode, "number of pods per node, 1..9 (without -f)")
		fs.StringVar(&flagFile, "f", "", "`DIR` of Kubernetes manifests to run (Pods, Deployments, ReplicaSets, Services, Istio kinds)")
		fs.BoolVar(&flagMesh, "mesh", false, "with -f: also run fibmesh-controller and one fibmesh-agent per node")
		fs.StringVar(&flagBin, "bin", "", "`DIR` holding fibmesh-controller and fibmesh-agent (default: beside fibmesh-lab)")
		fs.Var(&flagAgentArgs, "agent-arg", "with --mesh: `[NODE:]ARG`, an extra fibmesh-agent argument for NODE's agent (every node's without NODE:), repeatable; e.g. node1:--nic-ktls-offload=on")
		fs.DurationVar(&flagBackoff, "backoff-base", kubelet.DefaultBackoffBase, "with -f: first restart back-off of a failing container (kubelet's 10s), doubling to 5m")
		fs.DurationVar(&flagTimeout, "timeout", 3*time.Minute, "how long up waits for the lab to be ready")
		prefix()
		stateDir()
	case "down":
		prefix()
		stateDir()
	case "status":
		stateDir()
		fs.StringVar(&flagOutput, "o", string(output.Table), "with -f labs: "+output.FlagUsage)
	case "exec", "kubelet":
		stateDir()
	case "logs":
		stateDir()
		fs.StringVar(&flagContainer, "c", "", "`NAME` of the container (default: the pod's only, or first, container)")
		fs.BoolVar(&flagFollow, "f", false, "keep printing what is appended")
	}
	return fs
}

// printUsage writes a subcommand's help to the flag set's output.
func printUsage(fs *flag.FlagSet, name string, cmd *command) {
	fmt.Fprintf(fs.Output(), "fibmesh-lab %s: %s.\n\nUsage:\n  %s\n", name, cmd.summary, cmd.usage)
	if hasFlags(fs) {
		fmt.Fprint(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func runUp(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("up: unexpected arguments %q", args)}
	}
	if len(flagAgentArgs) > 0 && !flagMesh {
		return usageError{errors.New("up: --agent-arg needs --mesh (and -f DIR): it passes arguments to the mesh's agents")}
	}
	if flagFile != "" {
		return upManifests(ctx, stdout, log)
	}
	if flagMesh {
		return usageError{errors.New("up: --mesh needs -f DIR (the manifests the controller and agents run)")}
	}
	cfg := lab.Config{Nodes: flagNodes, PodsPerNode: flagPods, Prefix: flagPrefix, StateDir: flagStateDir}
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("up: %w", err)}
	}
	// A lab of manifests in the same state directory goes first: its
	// kubelet would rebuild its pods in the new lab.
	if err := kubelet.Stop(flagStateDir, 2*time.Minute); err != nil {
		return err
	}
	start := time.Now()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("lab up", "nodes", cfg.Nodes, "pods_per_node", cfg.PodsPerNode, "prefix", cfg.Prefix,
		"state", l.StatePath(), "took", time.Since(start).Round(time.Millisecond))
	return printTable(stdout, l, false)
}

func runDown(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("down: unexpected arguments %q", args)}
	}
	// A lab's state names its prefix: "down --state-dir DIR" removes that
	// lab, not every lab under the default prefix.
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "prefix" })
	if l, err := lab.Load(flagStateDir); err == nil && !explicit && l.Config.Prefix != "" {
		flagPrefix = l.Config.Prefix
	}
	if err := (lab.Config{Nodes: 1, PodsPerNode: 1, Prefix: flagPrefix, StateDir: flagStateDir}).Validate(); err != nil {
		return usageError{fmt.Errorf("down: %w", err)}
	}
	var errs []error
	// What runs inside the lab goes first: the kubelet of a lab of
	// manifests stops its containers, controller and agents.
	if err := kubelet.Stop(flagStateDir, 2*time.Minute); err != nil {
		errs = append(errs, fmt.Errorf("stop the lab's kubelet: %w", err))
	}
	// The state in --state-dir goes too when its lab falls under --prefix.
	if l, err := lab.Load(flagStateDir); err == nil && strings.HasPrefix(l.Config.Prefix, flagPrefix) {
		if err := l.Down(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := lab.Cleanup(flagPrefix); err != nil {
		errs = append(errs, err)
	}
	if err := kubelet.RemoveState(flagStateDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("lab down", "prefix", flagPrefix)
	return nil
}

func runStatus(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("status: unexpected arguments %q", args)}
	}
	l, err := lab.Load(flagStateDir)
	if err != nil {
		return err
	}
	if l.Manifests != "" {
		return manifestStatus(ctx, stdout, l)
	}
	if err := printTable(stdout, l, true); err != nil {
		return err
	}
	var missing []string
	for _, ns := range l.Namespaces() {
		if !lab.NetnsExists(ns) {
			missing = append(missing, ns)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d network namespaces are missing (%s); rebuild with fibmesh-lab up",
			len(missing), len(l.Namespaces()), strings.Join(missing, ", "))
	}
	return nil
}

func runExec(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return usageError{errors.New("exec: want NAME -- COMMAND [ARGS...]")}
	}
	name, argv := args[0], args[1:]
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return usageError{fmt.Errorf("exec %s: no command given (want NAME -- COMMAND [ARGS...])", name)}
	}
	l, err := lab.Load(flagStateDir)
	if err != nil {
		return err
	}
	netns, err := l.Netns(name)
	if err != nil {
		return usageError{fmt.Errorf("exec: %w", err)}
	}
	if !lab.NetnsExists(netns) {
		return fmt.Errorf("exec %s: network namespace %s is missing; rebuild with fibmesh-lab up", name, netns)
	}
	// Not tied to ctx: a Ctrl-C reaches the command through the terminal,
	// and the command decides how to exit.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	cmd := l.Command(context.Background(), netns, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, os.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return exitError{code}
	}
	if err != nil {
		return fmt.Errorf("exec %s in %s: %w", argv[0], netns, err)
	}
	return nil
}
