// Command fibmesh-agent is the fibmesh node daemon. It loads the XDP FIB
// on the node's NIC and on every local pod's veth, programs the node's
// routes, and serves the packets the FIB punts for a decision.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/fibmesh/fibmesh/agent"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/ktls"
)

const usage = `fibmesh-agent: the fibmesh node daemon.

It attaches the XDP FIB to the node's NIC and to the host side of every
local pod's veth, installs the node's routes (local pods via their veth,
other nodes' pod CIDRs via those nodes), and answers punted packets: the
first packet of a flow to a --punt destination goes to the agent, which
decides, installs a flow entry and re-injects the packet.

The FIB's program, links and maps are pinned in --pin-dir: they keep
forwarding while the agent is stopped or restarting. Use --cleanup to
remove them.

Run it in the node's network namespace. In the lab:

  fibmesh-lab exec node1 -- fibmesh-agent --node node1

(not 'ip netns exec', which remounts /sys and hides /sys/fs/bpf).

Signals: SIGHUP re-reads the cluster state; SIGINT/SIGTERM stop the agent
(the FIB stays).

Flags:
`

type prefixList []netip.Prefix

func (p *prefixList) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		pf, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("want an IPv4 CIDR like 10.200.2.0/24: %w", err)
		}
		if !pf.Addr().Is4() {
			return fmt.Errorf("%s: the FIB routes IPv4 only", pf)
		}
		*p = append(*p, pf.Masked())
	}
	return nil
}

func main() {
	fs := flag.NewFlagSet("fibmesh-agent", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	node := fs.String("node", "", "this node's name in the cluster state (required)")
	state := fs.String("cluster-state", "/run/fibmesh/lab/cluster.yaml", "Kubernetes-shaped Node/Pod YAML the routes are computed from")
	nic := fs.String("nic", "eth0", "the node's fabric interface")
	pinDir := fs.String("pin-dir", "", "bpffs directory for the FIB (default "+fib.DefaultPinRoot+"/<node>)")
	maxFlows := fs.Uint("max-flows", 0, "flow table size (default 262144)")
	cleanup := fs.Bool("cleanup", false, "detach the FIB and remove everything pinned in --pin-dir, then exit")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	var punts prefixList
	fs.Var(&punts, "punt", "destination CIDR whose new flows are punted to the agent for a decision (repeatable, comma-separated)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fibmesh-agent: unexpected argument %q (see --help)\n", fs.Arg(0))
		os.Exit(2)
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	switch *logFormat {
	case "text":
	case "json":
		h = slog.NewJSONHandler(os.Stderr, nil)
	default:
		fmt.Fprintf(os.Stderr, "fibmesh-agent: --log-format %q: want text or json\n", *logFormat)
		os.Exit(2)
	}
	log := slog.New(h)
	if *node == "" {
		fmt.Fprintln(os.Stderr, "fibmesh-agent: --node is required (the node's name in the cluster state)")
		os.Exit(2)
	}
	if *pinDir == "" {
		*pinDir = filepath.Join(fib.DefaultPinRoot, *node)
	}
	if *cleanup {
		if err := fib.Remove(*pinDir); err != nil {
			log.Error("cleanup failed", "err", err)
			os.Exit(1)
		}
		log.Info("FIB removed", "pin_dir", *pinDir)
		return
	}
	if err := run(log, agent.Config{
		Node: *node, ClusterState: *state, NIC: *nic, PinDir: *pinDir,
		Punt: punts, MaxFlows: uint32(*maxFlows), Log: log,
	}); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, cfg agent.Config) error {
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.Sync(); err != nil {
		log.Warn("sync incomplete", "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := a.Sync(); err != nil {
				log.Warn("sync incomplete", "err", err)
			}
		}
	}()
	logKTLS(log)
	log.Info("ready", "node", cfg.Node, "pin_dir", cfg.PinDir)
	err = a.Run(ctx)
	log.Info("stopping; the XDP FIB stays attached and keeps forwarding", "pin_dir", cfg.PinDir)
	return err
}

// logKTLS says once at start-up what the kernel offers for mTLS offload:
// without kTLS, mesh connections stay in userspace (correct, slower).
func logKTLS(log *slog.Logger) {
	caps, err := ktls.Probe()
	switch {
	case err != nil:
		log.Warn("kTLS probe failed; mTLS stays in userspace", "err", err)
	case !caps.ULP:
		log.Warn("kernel has no kTLS; mTLS stays in userspace", "kernel", caps.Kernel, "reason", caps.ULPError)
	default:
		log.Info("kTLS available", "ktls", caps.String())
	}
}
