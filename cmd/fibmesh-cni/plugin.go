package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/internal/cniconf"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// supportedVersions are the CNI spec versions fibmesh-cni speaks: those
// whose results carry prevResult (chaining came with 0.3.0); CHECK needs
// 0.4.0 and up, which skel enforces.
var supportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// runPlugin is main for CNI_COMMAND invocations.
func runPlugin() {
	switch os.Getenv("CNI_COMMAND") {
	case "ADD", "DEL", "CHECK":
		// Check the configuration before skel does, so that garbage gets
		// an error saying what fibmesh-cni wants (skel's says only that
		// the JSON did not decode); skel then reads the same bytes.
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(types.NewError(types.ErrIOFailure, "cannot read the network configuration on stdin", err.Error()))
		}
		if _, err := cniconf.Parse(b); err != nil {
			code := uint(types.ErrInvalidNetworkConfig)
			if !json.Valid(b) {
				code = types.ErrDecodingFailure
			}
			fail(types.NewError(code, "invalid fibmesh-cni network configuration on stdin", err.Error()))
		}
		r, w, err := os.Pipe()
		if err != nil {
			fail(types.NewError(types.ErrInternal, "stdin pipe", err.Error()))
		}
		go func() {
			w.Write(b)
			w.Close()
		}()
		os.Stdin = r
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck}, supportedVersions,
		"fibmesh-cni: chained CNI plugin that hands each pod to the node's fibmesh agent (see fibmesh-cni --help)")
}

// fail prints e as the CNI spec wants errors (JSON on stdout) and exits 1.
func fail(e *types.Error) {
	_ = e.Print()
	os.Exit(1)
}

// invocation is one call's parsed input.
type invocation struct {
	conf *cniconf.Config
	pod  cniconf.PodArgs
	log  *slog.Logger
}

func parse(args *skel.CmdArgs, cmd string) (*invocation, error) {
	conf, err := cniconf.Parse(args.StdinData)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid fibmesh-cni configuration", err.Error())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: conf.Level})).With(
		"plugin", cniconf.PluginType, "cmd", cmd, "container", args.ContainerID)
	pod, err := cniconf.ParseArgs(args.Args)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err.Error())
	}
	if pod.Namespace != "" {
		log = log.With("pod", pod.Namespace+"/"+pod.Name)
	}
	return &invocation{conf: conf, pod: pod, log: log}, nil
}

// prevResult parses the primary plugin's result, which a chained plugin
// must have.
func (in *invocation) prevResult() (types.Result, error) {
	if in.conf.Common.RawPrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "fibmesh-cni has no prevResult",
			"fibmesh-cni is a chained plugin: put it after the primary plugin in a conflist (fibmesh-cni install does)")
	}
	if err := version.ParsePrevResult(&in.conf.Common); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "invalid prevResult", err.Error())
	}
	return in.conf.Common.PrevResult, nil
}

// passThrough says why a pod is not captured ("" when it is): not a
// Kubernetes pod, an excluded namespace, or labels that take it out of the
// mesh. Label lookup failures are errors: fail closed.
func (in *invocation) passThrough(ctx context.Context) (string, error) {
	if in.pod.Namespace == "" || in.pod.Name == "" {
		return "not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS)", nil
	}
	if in.conf.Excluded(in.pod.Namespace) {
		return "namespace " + in.pod.Namespace + " is excluded", nil
	}
	if in.conf.Kubeconfig == "" {
		return "", nil
	}
	m, err := podMeta(ctx, in.conf.Kubeconfig, in.pod.Namespace, in.pod.Name)
	if err != nil {
		return "", types.NewError(types.ErrTryAgainLater, "fibmesh-cni cannot read the pod's labels from the API server",
			fmt.Sprintf("pod %s/%s: %v (fail closed: a pod is not started uncaptured; check the kubeconfig %s, written by fibmesh-cni install)", in.pod.Namespace, in.pod.Name, err, in.conf.Kubeconfig))
	}
	if why, off := model.CaptureOff(m.podLabels, m.podAnnotations, m.nsLabels); off {
		return why, nil
	}
	return "", nil
}

func (in *invocation) socket() string { return enrol.SocketPath(in.conf.RunDir, in.conf.Node) }

func cmdAdd(args *skel.CmdArgs) error {
	in, err := parse(args, "ADD")
	if err != nil {
		return err
	}
	prev, err := in.prevResult()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.conf.TimeoutValue)
	defer cancel()
	why, err := in.passThrough(ctx)
	if err != nil {
		return err
	}
	if why != "" {
		in.log.Info("pod passes through uncaptured", "why", why)
		return types.PrintResult(prev, in.conf.Common.CNIVersion)
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidNetNS, "no CNI_NETNS", "ADD needs the pod's network namespace path")
	}
	resp, err := enrol.Call(ctx, in.socket(), enrol.Request{Op: enrol.OpAdd, Namespace: in.pod.Namespace, Name: in.pod.Name, Netns: args.Netns, Sandbox: args.ContainerID})
	if err != nil {
		return in.agentError("enrol", err)
	}
	in.log.Info("pod enrolled", "identity", resp.Identity, "netns", args.Netns)
	return types.PrintResult(prev, in.conf.Common.CNIVersion)
}

// agentError makes a CNI error of a failed call to the agent.
func (in *invocation) agentError(what string, err error) error {
	sock := in.socket()
	switch {
	case errors.Is(err, enrol.ErrRefused):
		return types.NewError(types.ErrInternal, "the fibmesh agent refused to "+what+" the pod", err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater, "the fibmesh agent did not answer in time",
			fmt.Sprintf("%v (timeout %s; the agent's log says why: kubectl -n fibmesh-system logs ds/fibmesh-agent)", err, in.conf.TimeoutValue))
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return types.NewError(types.ErrTryAgainLater, "the fibmesh agent is not running on node "+in.conf.Node,
			fmt.Sprintf("%v (no agent listens on %s: the pod is not started uncaptured; the kubelet retries once the fibmesh-agent pod runs)", err, sock))
	}
	return types.NewError(types.ErrTryAgainLater, "the fibmesh agent did not "+what+" the pod", fmt.Sprintf("%v (socket %s)", err, sock))
}

func cmdDel(args *skel.CmdArgs) error {
	in, err := parse(args, "DEL")
	if err != nil {
		return err
	}
	if in.pod.Namespace == "" || in.pod.Name == "" || in.conf.Excluded(in.pod.Namespace) {
		return nil
	}
	// No label lookup: the pod may be gone from the API server, and
	// removing a pod the agent does not hold is a no-op.
	ctx, cancel := context.WithTimeout(context.Background(), in.conf.TimeoutValue)
	defer cancel()
	_, err = enrol.Call(ctx, in.socket(), enrol.Request{Op: enrol.OpRemove, Namespace: in.pod.Namespace, Name: in.pod.Name, Sandbox: args.ContainerID})
	if err != nil && (errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
		// Agent down: nothing holds the pod (a restarted agent forgets
		// pods whose network namespace is gone). DEL is idempotent.
		in.log.Info("agent not running: nothing to release", "socket", in.socket(), "err", err)
		return nil
	}
	if err != nil {
		return in.agentError("release", err)
	}
	in.log.Info("pod released")
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	in, err := parse(args, "CHECK")
	if err != nil {
		return err
	}
	if _, err := in.prevResult(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.conf.TimeoutValue)
	defer cancel()
	why, err := in.passThrough(ctx)
	if err != nil || why != "" {
		return err
	}
	if _, err := enrol.Call(ctx, in.socket(), enrol.Request{Op: enrol.OpCheck, Namespace: in.pod.Namespace, Name: in.pod.Name, Netns: args.Netns}); err != nil {
		return in.agentError("check", err)
	}
	// The agent holds the pod; its capture rules are in the pod's
	// network namespace.
	f, err := os.Open(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "cannot open the pod's network namespace", err.Error())
	}
	defer f.Close()
	ok, err := capture.Installed(int(f.Fd()))
	if err != nil {
		return types.NewError(types.ErrInternal, "cannot read the pod's capture rules", err.Error())
	}
	if !ok {
		return types.NewError(types.ErrInternal, "the pod's traffic is not captured",
			fmt.Sprintf("pod %s/%s is enrolled but its network namespace %s has no nftables table inet %s with both chains: the agent installs it; see its log", in.pod.Namespace, in.pod.Name, args.Netns, capture.TableName))
	}
	return nil
}
