// Command fibmesh-cni is fibmesh's chained CNI plugin and its installer.
//
// Run by the container runtime (CNI_COMMAND set), it is a plugin chained
// after the cluster's primary one: ADD hands the pod's network namespace
// to the node's fibmesh agent (the enrolment socket, api/enrol) and fails
// the pod's network setup unless the agent acknowledges, so that no pod
// starts uncaptured; DEL releases the pod; CHECK asks the agent and looks
// for the capture rules. `fibmesh-cni install` (the agent DaemonSet's
// init container, restartPolicy Always) puts the binary and its conflist
// entry on the node and keeps them there; `fibmesh-cni uninstall` takes
// them away. See docs/cni.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `fibmesh-cni: fibmesh's chained CNI plugin and its installer.

Usage:
  fibmesh-cni install [flags]    put the plugin on this node and keep it there (DaemonSet init container)
  fibmesh-cni uninstall [flags]  take it away
  fibmesh-cni help [install]     this text, or install's flags

Run by a container runtime (CNI_COMMAND=ADD|DEL|CHECK|VERSION, the network
configuration on stdin) it is the plugin: chained last in the primary
conflist, ADD enrols the pod with the node's fibmesh agent through
/run/fibmesh/<node>/enrol.sock and fails the pod's network setup if the
agent does not acknowledge (no pod starts uncaptured); pods in excluded
namespaces or labelled fibmesh.io/capture=disabled pass through. DEL
releases the pod (and succeeds when the agent is down); CHECK verifies the
agent holds the pod and its capture rules are in place.

See docs/cni.md.
`

const installUsage = `Usage: fibmesh-cni install [flags]

Copies this binary to --bin-dir (atomically), writes a kubeconfig for the
plugin from this pod's ServiceAccount into --conf-dir, and inserts the
fibmesh-cni entry last into the primary network configuration of --conf-dir
(the lexically first *.conf, *.conflist or *.json, as containerd and CRI-O
choose it; a single-plugin .conf becomes a .conflist). Then it watches
--conf-dir and inserts the entry again whenever the primary plugin rewrites
its file, until SIGTERM. At SIGTERM it removes the entry only when the
DaemonSet --namespace/--daemonset is gone or being deleted (or with
--uninstall-on-exit): an upgrade keeps it, and pods wait for the new agent.

Flags:
`

func main() {
	if os.Getenv("CNI_COMMAND") != "" {
		runPlugin()
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "install":
		err = runInstall(args[1:], stderr)
	case "uninstall":
		err = runUninstall(args[1:], stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && args[1] == "install" {
			return run([]string{"install", "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "fibmesh-cni: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "fibmesh-cni:", err)
		return 1
	}
	return 0
}
