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
	"strings"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/demo"
)

const usage = `fibmesh-lab: a fibmesh test bed made of network namespaces on this machine.

It builds a small cluster: a fabric bridge, N nodes (each a network
namespace with a NIC on the fabric and kernel forwarding on), and M pods
per node (each a namespace wired to its node with a veth pair). Pods on
different nodes reach each other through the nodes. The cluster is
described as Kubernetes Node and Pod objects in STATE_DIR/cluster.yaml.

Usage:
  fibmesh-lab COMMAND [FLAGS] [ARGS]

Commands:
  up       build the lab (removing leftovers first) and print it
  down     remove the lab: namespaces, pinned BPF state, state file
  status   print the lab from its state file, marking missing namespaces
  exec     run a command inside a node's or pod's network namespace
  demo     up, then start the agents and show traffic crossing nodes in XDP

Examples:
  sudo fibmesh-lab up --nodes 2 --pods 2
  sudo fibmesh-lab exec node1-pod1 -- ping -c1 10.200.2.12
  sudo fibmesh-lab down

Run "fibmesh-lab COMMAND --help" for a command's flags. Every command
needs root. Exit status: 0 done, 1 failed, 2 bad usage; exec exits with
the command's status.
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
		usage: `fibmesh-lab up [--nodes N] [--pods M] [--prefix P] [--state-dir DIR]

Removes whatever a previous lab with the same prefix left behind, builds a
fresh one, writes DIR/cluster.yaml and prints a table of nodes and pods.
On failure it removes what it built and names the command that failed.

Example:
  sudo fibmesh-lab up --nodes 3 --pods 2`,
		run: runUp,
	},
	"down": {
		summary: "remove the lab",
		usage: `fibmesh-lab down [--prefix P] [--state-dir DIR]

Stops the agents "demo" started, then deletes every network namespace
whose name starts with P, links in the root namespace starting with P,
pinned BPF state under /sys/fs/bpf/fibmesh/P*, and the state file. Works
without a state file (for example after a crash) and when nothing is
left. Matching is by plain prefix: "--prefix fm-" also removes a lab
built with "--prefix fm-x-".

Example:
  sudo fibmesh-lab down`,
		run: runDown,
	},
	"status": {
		summary: "print the lab from its state file",
		usage: `fibmesh-lab status [--state-dir DIR]

Prints the nodes and pods recorded in DIR/cluster.yaml and whether each
network namespace still exists. Exits 1 if no lab is up or a namespace
is missing.

Example:
  sudo fibmesh-lab status`,
		run: runStatus,
	},
	"exec": {
		summary: "run a command in a node's or pod's network namespace",
		usage: `fibmesh-lab exec [--state-dir DIR] NAME -- COMMAND [ARGS...]

Runs COMMAND inside the network namespace of NAME: a node ("node1"), a pod
("node1-pod2") or "fabric". Only the network namespace changes (nsenter
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
		return usageError{fmt.Errorf("unknown command %q (want up, down, status, exec or demo; see fibmesh-lab --help)", name)}
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
	if os.Geteuid() != 0 {
		return errors.New("fibmesh-lab must run as root: it creates network namespaces and veths (CAP_SYS_ADMIN, CAP_NET_ADMIN); try sudo")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd.run(ctx, fs, fs.Args(), stdout, log)
}

// flags shared by the subcommands; each registers the ones it uses.
var (
	flagNodes    int
	flagPods     int
	flagPrefix   string
	flagStateDir string
)

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
		fs.StringVar(&flagBin, "bin", "bin", "`DIR` holding fibmesh-agent and fibctl")
		fallthrough
	case "up":
		fs.IntVar(&flagNodes, "nodes", lab.DefaultNodes, "number of nodes, 1..9")
		fs.IntVar(&flagPods, "pods", lab.DefaultPodsPerNode, "number of pods per node, 1..9")
		prefix()
		stateDir()
	case "down":
		prefix()
		stateDir()
	case "status", "exec":
		stateDir()
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
	cfg := lab.Config{Nodes: flagNodes, PodsPerNode: flagPods, Prefix: flagPrefix, StateDir: flagStateDir}
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("up: %w", err)}
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
	if err := (lab.Config{Nodes: 1, PodsPerNode: 1, Prefix: flagPrefix, StateDir: flagStateDir}).Validate(); err != nil {
		return usageError{fmt.Errorf("down: %w", err)}
	}
	var errs []error
	// Agents the demo left running go first: they run inside the lab.
	if err := demo.StopAgents(flagStateDir); err != nil {
		errs = append(errs, fmt.Errorf("stop demo agents: %w", err))
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
