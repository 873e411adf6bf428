package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fibmesh/fibmesh/internal/output"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/echo"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

func init() {
	commands["kubelet"] = &command{
		summary: "the lab's background kubelet (started by up -f; not for direct use)",
		usage: `fibmesh-lab kubelet [--state-dir DIR]

Runs the manifests of the lab in DIR (DIR/lab.json, written by up -f)
until SIGTERM, then stops every container and process it started. up -f
starts it detached; down stops it. Its status is on DIR/kubelet.sock
(/readyz, /status).`,
		run: runKubelet,
	}
	commands["logs"] = &command{
		summary: "print a container's log",
		usage: `fibmesh-lab logs [--state-dir DIR] [-c NAME] [-f] POD

Prints the log (standard output and error) of a container of POD
(NAMESPACE/NAME, or NAME where only one namespace has it). -c picks the
container when the pod has several; -f keeps printing what is appended
until interrupted.

Example:
  sudo fibmesh-lab logs -f production/reviews-v1-6d5c9b7f8-k2x4p`,
		run: runLogs,
	}
	commands["app"] = &command{
		summary: "run a built-in demo app",
		usage: `fibmesh-lab app echo [--port P] [--name SERVICE] [--version V] [--addr IP]
       [--status CODE] [--delay D] [--fail-rate P] [--grpc-health STATUS]
  fibmesh-lab app udp-echo [--port P] [--name SERVICE] [--version V] [--addr IP]
       (a UDP echo: see fibmesh-lab app udp-echo --help)

echo listens on one TCP port and answers HTTP/1.1, HTTP/2 over cleartext
(h2c: prior knowledge or Upgrade) and raw TCP: the first bytes decide (an
HTTP method or the HTTP/2 preface: HTTP; anything else is echoed back).
HTTP requests get JSON: service, version, pod, namespace, node, the peer
address, proto, method, host, path, every request header, the status
answered and the attempt count (below). Pod, namespace and node come from
the environment (POD_NAME, POD_NAMESPACE, NODE_NAME: set them with the
Downward API), service and version from the flags or SERVICE_NAME and
SERVICE_VERSION. Needs no root.

Request headers drive one answer (bad values get 400 naming the header):
  x-echo-status: 503        answer with this status (200..599)
  x-echo-delay: 250ms       sleep this long first (0..30s)
  x-echo-attempt-key: ID    count the requests carrying ID (in the reply's
                            "attempt" and the x-echo-attempt header; the
                            4,096 newest keys are kept)
  x-echo-fail-first: 2      with x-echo-attempt-key: the first 2 requests
                            carrying that ID get 503, later ones 200
  x-echo-fail-status: 502   the status of those failures (default 503)
  x-echo-body-bytes: 1048576  answer with that many bytes of a checkable
                            pattern instead of JSON
Every answer (101 included) carries x-echo-service, x-echo-version and
x-echo-pod; the JSON reply also has the request body's length and
SHA-256. An Upgrade request (WebSocket) gets 101, then its bytes echoed.
--status and --delay set the same for every request (headers override
them); --fail-rate answers 503 to that share of all requests.

HTTP/2 requests of content type application/grpc go to a gRPC server on
the same port serving grpc.health.v1.Health: SERVING for "" and for the
service name, or what --grpc-health says.

Examples (a container of a Pod):
  command: ["fibmesh-lab", "app", "echo", "--port", "9080", "--name", "reviews", "--version", "v1"]
  command: ["fibmesh-lab", "app", "echo", "--port", "9080", "--name", "reviews", "--fail-rate", "0.5"]
A request that fails twice, then succeeds:
  curl -H 'x-echo-fail-first: 2' -H 'x-echo-attempt-key: req-1' http://reviews:9080/`,
		run: runApp,
	}
}

// appFlags are the flags every lab app takes: where it listens and the
// service and version it reports.
type appFlags struct {
	port                int
	addr, name, version string
}

// register adds --port (default port), --addr, --name and --version to fs.
func (f *appFlags) register(fs *flag.FlagSet, proto string, port int) {
	fs.IntVar(&f.port, "port", port, proto+" `PORT` to listen on")
	fs.StringVar(&f.addr, "addr", "", "`IP` to listen on (default: every address)")
	fs.StringVar(&f.name, "name", os.Getenv("SERVICE_NAME"), "`SERVICE` name to report (default $SERVICE_NAME)")
	fs.StringVar(&f.version, "version", os.Getenv("SERVICE_VERSION"), "`VERSION` to report (default $SERVICE_VERSION)")
}

// listen checks the flags (app names the app in errors) and returns the
// address to listen on and what the app reports: the flags, and the pod,
// namespace and node from the environment the kubelet sets.
func (f *appFlags) listen(app string) (string, echo.Info, error) {
	if f.port < 1 || f.port > 65535 {
		return "", echo.Info{}, usageError{fmt.Errorf("%s: --port %d: want 1..65535", app, f.port)}
	}
	if f.addr != "" && net.ParseIP(f.addr) == nil {
		return "", echo.Info{}, usageError{fmt.Errorf("%s: --addr %q: want an IP address", app, f.addr)}
	}
	info := echo.Info{Service: f.name, Version: f.version, Pod: cmp.Or(os.Getenv("POD_NAME"), os.Getenv("HOSTNAME")),
		Namespace: os.Getenv("POD_NAMESPACE"), Node: os.Getenv("NODE_NAME")}
	return net.JoinHostPort(f.addr, strconv.Itoa(f.port)), info, nil
}

func upManifests(ctx context.Context, stdout io.Writer, log *slog.Logger) error {
	dir, err := filepath.Abs(flagFile)
	if err != nil {
		return err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usageError{fmt.Errorf("up: -f %s: not a directory of manifests", flagFile)}
	}
	if err := (lab.Config{Nodes: 1, PodsPerNode: 1, Prefix: flagPrefix, StateDir: flagStateDir}).Validate(); err != nil {
		return usageError{fmt.Errorf("up: %w", err)}
	}
	if flagNodes < 1 {
		return usageError{fmt.Errorf("up: --nodes %d: want 1 or more", flagNodes)}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := flagBin
	if bin == "" {
		bin = filepath.Dir(self)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if flagMesh {
		for _, b := range []string{"fibmesh-controller", "fibmesh-agent"} {
			if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
				return fmt.Errorf("up --mesh: %w (build the binaries with make build, or point --bin at them)", err)
			}
		}
	}
	stateDir, err := filepath.Abs(flagStateDir)
	if err != nil {
		return err
	}
	o := kubelet.Options{StateDir: stateDir, Dir: dir, Prefix: flagPrefix, Mesh: flagMesh, BinDir: bin,
		BackoffBase: flagBackoff, Self: self, AgentArgs: flagAgentArgs}
	ctx, cancel := context.WithTimeout(ctx, flagTimeout)
	defer cancel()
	start := time.Now()
	st, err := kubelet.Up(ctx, o, flagNodes)
	if err != nil {
		return err
	}
	for _, e := range st.Errors {
		log.Warn("left out", "err", e)
	}
	log.Info("lab up", "dir", dir, "pods", len(st.Pods), "mesh", flagMesh, "prefix", flagPrefix,
		"state", stateDir, "took", time.Since(start).Round(time.Millisecond))
	l, err := lab.Load(stateDir)
	if err != nil {
		return err
	}
	return printStatus(stdout, l, st)
}

// statusView is status -o json|yaml: the lab's nodes and what its
// kubelet says.
type statusView struct {
	Nodes []nodeView `json:"nodes"`
	*kubelet.Status
}

type nodeView struct {
	Name    string `json:"name"`
	Netns   string `json:"netns"`
	IP      string `json:"ip"`
	PodCIDR string `json:"podCIDR"`
}

func manifestStatus(ctx context.Context, stdout io.Writer, l *lab.Lab) error {
	format, err := output.Parse(flagOutput)
	if err != nil {
		return usageError{fmt.Errorf("status: %w", err)}
	}
	st, err := kubelet.Get(ctx, l.Config.StateDir)
	if err != nil {
		printTable(stdout, l, true)
		return fmt.Errorf("%w (bring the lab up again with fibmesh-lab up -f %s)", err, l.Manifests)
	}
	if format == output.Table {
		err = printStatus(stdout, l, st)
	} else {
		v := statusView{Nodes: []nodeView{}, Status: st}
		for _, n := range l.Nodes {
			v.Nodes = append(v.Nodes, nodeView{Name: n.Name, Netns: n.Netns, IP: n.IP.String(), PodCIDR: n.PodCIDR.String()})
		}
		err = output.Write(stdout, format, v, nil)
	}
	if err != nil {
		return err
	}
	var missing []string
	for _, ns := range l.Namespaces() {
		if !lab.NetnsExists(ns) {
			missing = append(missing, ns)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("network namespaces missing: %s", strings.Join(missing, ", "))
	}
	return nil
}

// printStatus writes a lab of manifests: nodes, pods, mesh processes,
// pending pods and the objects left out.
func printStatus(w io.Writer, l *lab.Lab, st *kubelet.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "manifests: %s (read %d times); ready: %v\n\n", st.Dir, st.Reloads, st.Ready)
	fmt.Fprintln(tw, "NODE\tNETNS\tIP\tPOD CIDR\tPODS")
	for _, n := range l.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", n.Name, n.Netns, n.IP, n.PodCIDR, len(n.Pods))
	}
	fmt.Fprintln(tw)
	header := "POD\tNODE\tIP\tPHASE\tREADY\tRESTARTS\tNETNS"
	if st.Mesh {
		header += "\tENROLMENT"
	}
	fmt.Fprintln(tw, header)
	var details []string
	for _, p := range st.Pods {
		ready := 0
		for _, c := range p.Containers {
			if (c.State == kubelet.StateRunning && (!c.Probed || c.Ready)) || c.Reason == "NoCommand" {
				ready++
			}
		}
		line := fmt.Sprintf("%s/%s\t%s\t%s\t%s\t%d/%d\t%d\t%s", p.Namespace, p.Name, p.Node, p.IP, p.Phase, ready, len(p.Containers), p.Restarts, p.Netns)
		if st.Mesh {
			line += "\t" + p.Enrolment
		}
		fmt.Fprintln(tw, line)
		for _, c := range p.Containers {
			if c.State != kubelet.StateRunning {
				details = append(details, fmt.Sprintf("%s/%s container %s: %s %s: %s", p.Namespace, p.Name, c.Name, c.State, c.Reason, c.Message))
			}
		}
		if p.Error != "" {
			details = append(details, fmt.Sprintf("%s/%s network: %s", p.Namespace, p.Name, p.Error))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range details {
		fmt.Fprintln(w, "  "+d)
	}
	if len(st.Processes) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "PROCESS\tSTATE\tREADY\tRESTARTS\tPID\tLOG")
		for _, p := range st.Processes {
			state := p.State
			if p.Reason != "" {
				state += " " + p.Reason
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%s\n", p.Name, state, p.Ready, p.Restarts, p.PID, p.Log)
		}
	}
	for _, p := range st.Pending {
		fmt.Fprintf(tw, "\npending %s/%s: %s", p.Namespace, p.Name, p.Reason)
	}
	if len(st.Pending) > 0 {
		fmt.Fprintln(tw)
	}
	if len(st.Errors) > 0 {
		fmt.Fprintln(tw, "\nleft out of the manifests:")
		for _, e := range st.Errors {
			fmt.Fprintf(tw, "  %s\n", e)
		}
	}
	if !st.Ready && len(st.NotReady) > 0 {
		fmt.Fprintf(tw, "\nnot ready: %s\n", strings.Join(st.NotReady, "; "))
	}
	return tw.Flush()
}

func runKubelet(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("kubelet: unexpected arguments %q", args)}
	}
	// SIGINT from a terminal the daemon no longer has is not for it;
	// SIGTERM (down) is.
	signal.Ignore(syscall.SIGHUP)
	return kubelet.Run(ctx, flagStateDir, log)
}

func runLogs(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) != 1 {
		return usageError{errors.New("logs: want one POD (NAMESPACE/NAME or NAME)")}
	}
	l, err := lab.Load(flagStateDir)
	if err != nil {
		return err
	}
	p, err := l.Pod(args[0])
	if err != nil {
		return usageError{fmt.Errorf("logs: %w", err)}
	}
	names, err := containerLogs(flagStateDir, p)
	if err != nil {
		return err
	}
	name := flagContainer
	switch {
	case name == "" && len(names) == 0:
		return fmt.Errorf("logs %s/%s: no container logs (is it a pod of a lab of manifests, up -f?)", p.Namespace, p.Name)
	case name == "":
		name = names[0]
	}
	path := kubelet.ContainerLog(flagStateDir, p.Namespace, p.Name, name)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("logs %s/%s -c %s: %w (containers: %s)", p.Namespace, p.Name, name, err, strings.Join(names, ", "))
	}
	defer f.Close()
	if _, err := io.Copy(stdout, f); err != nil {
		return err
	}
	for flagFollow {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond): // tail -f polls too
		}
		if _, err := io.Copy(stdout, f); err != nil {
			return err
		}
	}
	return nil
}

// containerLogs lists the container log names of a pod, in the pod's
// container order where cluster.yaml has none: by file name.
func containerLogs(stateDir string, p *lab.Pod) ([]string, error) {
	ents, err := os.ReadDir(kubelet.PodLogDir(stateDir, p.Namespace, p.Name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".log"); ok {
			names = append(names, n)
		}
	}
	return names, nil
}

func runApp(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) > 0 && args[0] == "udp-echo" { // udpecho.go
		return runUDPEcho(ctx, args[1:], stdout, log)
	}
	a, err := parseAppEcho(args, stdout)
	if err != nil {
		return err
	}
	srv, err := echo.NewWithOptions(a.info, a.opts)
	if err != nil {
		return usageError{fmt.Errorf("app echo: %w", err)}
	}
	ln, err := net.Listen("tcp", a.listen)
	if err != nil {
		return fmt.Errorf("app echo: %w", err)
	}
	log.Info("echo listening", "addr", ln.Addr().String(), "service", a.info.Service, "version", a.info.Version,
		"pod", a.info.Pod, "namespace", a.info.Namespace, "node", a.info.Node,
		"status", a.opts.Status, "delay", a.opts.Delay, "fail_rate", a.opts.FailRate, "grpc_health", cmp.Or(a.opts.GRPCHealth, "SERVING"))
	return srv.Serve(ctx, ln)
}

// appEcho is what app echo's flags and environment ask for.
type appEcho struct {
	listen string // host:port
	info   echo.Info
	opts   echo.Options
}

// parseAppEcho parses app echo's arguments (args[0] is "echo"); on
// --help it prints the flags to stdout and returns flag.ErrHelp.
func parseAppEcho(args []string, stdout io.Writer) (appEcho, error) {
	var a appEcho
	if len(args) < 1 || args[0] != "echo" {
		return a, usageError{errors.New("app: want echo or udp-echo (fibmesh-lab app echo --port P)")}
	}
	efs := flag.NewFlagSet("fibmesh-lab app echo", flag.ContinueOnError)
	efs.SetOutput(io.Discard)
	var af appFlags
	af.register(efs, "TCP", 8080)
	efs.IntVar(&a.opts.Status, "status", 200, "HTTP `STATUS` (200..599) of every answer; a request's x-echo-status overrides it")
	efs.DurationVar(&a.opts.Delay, "delay", 0, "`DURATION` (0..30s) to sleep before every answer; a request's x-echo-delay overrides it")
	efs.Float64Var(&a.opts.FailRate, "fail-rate", 0, "probability `P` (0..1) that a request gets 503, whatever it asks")
	efs.StringVar(&a.opts.GRPCHealth, "grpc-health", "SERVING", "`STATUS` the gRPC health service reports: SERVING, NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN")
	if err := efs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			app := commands["app"]
			fmt.Fprintf(stdout, "fibmesh-lab app echo: %s.\n\nUsage:\n  %s\n\nFlags:\n", app.summary, app.usage)
			efs.SetOutput(stdout)
			efs.PrintDefaults()
			return a, err
		}
		return a, usageError{fmt.Errorf("app echo: %w", err)}
	}
	if efs.NArg() > 0 {
		return a, usageError{fmt.Errorf("app echo: unexpected arguments %q", efs.Args())}
	}
	listen, info, err := af.listen("app echo")
	if err != nil {
		return a, err
	}
	for _, c := range []struct {
		flag string
		bad  bool
		want string
	}{
		{"status", a.opts.Status < 200 || a.opts.Status > 599, "an HTTP status 200..599"},
		{"delay", a.opts.Delay < 0 || a.opts.Delay > echo.MaxDelay, "a duration 0..30s such as 100ms"},
		{"fail-rate", !(a.opts.FailRate >= 0 && a.opts.FailRate <= 1), "a probability 0..1 such as 0.1"},
	} {
		if c.bad {
			return a, usageError{fmt.Errorf("app echo: --%s %s: want %s", c.flag, efs.Lookup(c.flag).Value, c.want)}
		}
	}
	if _, err := echo.ParseServingStatus(a.opts.GRPCHealth); err != nil {
		return a, usageError{fmt.Errorf("app echo: --grpc-health %q: want SERVING, NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN", a.opts.GRPCHealth)}
	}
	a.listen, a.info = listen, info
	return a, nil
}
