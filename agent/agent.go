// Package agent is the fibmesh node daemon: it loads the XDP FIB on the
// node's NIC and on the host side of every local pod's veth, computes and
// resolves the node's routes, keeps the FIB's maps in step with them, and
// serves the packets the FIB punts.
//
// Until the controller serves FDS, routes come from a Kubernetes-shaped
// cluster state file (Node and Pod objects, as `fibmesh-lab up` writes).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/punt"
)

// Config configures an Agent.
type Config struct {
	// Node is this node's name in the cluster state.
	Node string
	// ClusterState is the path of the Node/Pod YAML.
	ClusterState string
	// NIC is the node's fabric interface.
	NIC string
	// PinDir is the bpffs directory of this node's FIB.
	PinDir string
	// Punt lists destinations whose new flows need the agent's decision.
	Punt []netip.Prefix
	// Decide decides punted flows; nil allows every flow (and logs it).
	Decide punt.DecideFunc
	// MaxFlows overrides the flow table size.
	MaxFlows uint32
	Log      *slog.Logger
}

// Agent runs one node's fast path.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	fib    *fib.FIB
	punter *punt.Punter

	mu       sync.Mutex
	attached map[string]bool
}

// New opens (or re-opens, after a restart) the node's FIB.
func New(cfg Config) (*Agent, error) {
	if cfg.Node == "" {
		return nil, errors.New("agent: node name is required")
	}
	if cfg.NIC == "" {
		return nil, errors.New("agent: NIC is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	f, err := fib.Open(fib.Options{PinDir: cfg.PinDir, MaxFlows: cfg.MaxFlows})
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Log, fib: f, attached: map[string]bool{}}
	decide := cfg.Decide
	if decide == nil {
		decide = func(p punt.Packet) punt.Verdict {
			a.log.Info("punt decision", "flow", p.Key.String(), "verdict", "allow", "ifindex", p.Ifindex)
			return punt.Allow
		}
	}
	a.punter = punt.New(f, decide)
	return a, nil
}

// FIB returns the agent's FIB.
func (a *Agent) FIB() *fib.FIB { return a.fib }

// Punter returns the agent's punt server.
func (a *Agent) Punter() *punt.Punter { return a.punter }

// Sync reads the cluster state, attaches the FIB to the NIC and to every
// local pod's veth, and makes the route table match. Routes that cannot
// be resolved are reported in the returned error (joined) and left to the
// kernel; the others are installed.
func (a *Agent) Sync() error {
	c, err := LoadCluster(a.cfg.ClusterState)
	if err != nil {
		return err
	}
	intents, err := c.Routes(a.cfg.Node, a.cfg.NIC)
	if err != nil {
		return err
	}
	devs := []string{a.cfg.NIC}
	for _, ri := range intents {
		if ri.Pod != "" {
			devs = append(devs, ri.Dev)
		}
	}
	var errs []error
	for _, d := range devs {
		if err := a.attach(d); err != nil {
			errs = append(errs, err)
		}
	}
	var routes []fib.Route
	for _, ri := range intents {
		rt, err := Resolve(ri)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rt.NextHop.PuntNew = a.punts(ri.Prefix)
		routes = append(routes, rt)
	}
	if err := a.fib.Routes.Replace(routes); err != nil {
		errs = append(errs, err)
	}
	a.log.Info("routes synced", "node", a.cfg.Node, "routes", len(routes), "interfaces", len(devs), "errors", len(errs))
	return errors.Join(errs...)
}

func (a *Agent) punts(p netip.Prefix) bool {
	return slices.ContainsFunc(a.cfg.Punt, func(q netip.Prefix) bool {
		return q.Bits() <= p.Bits() && q.Contains(p.Addr())
	})
}

func (a *Agent) attach(dev string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.attached[dev] {
		return nil
	}
	mode, d, err := a.fib.Attach(dev)
	if err != nil {
		return err
	}
	ifindex, err := ifindexOf(dev)
	if err != nil {
		return err
	}
	if err := a.punter.AddInterface(ifindex); err != nil {
		return fmt.Errorf("punt socket on %s: %w", dev, err)
	}
	a.attached[dev] = true
	a.log.Info("XDP FIB attached", "interface", dev, "mode", string(mode),
		"nic_profile", d.Profile.Name, "nic_reason", d.Reason, "bpf_constants", fib.NICFor(d).String())
	return nil
}

// Run serves punts until ctx is done. The FIB keeps forwarding after Run
// returns and after the process exits: its program and maps are pinned.
func (a *Agent) Run(ctx context.Context) error {
	return a.punter.Run(ctx)
}

// Close closes the punt sockets and releases the agent's file
// descriptors; pinned state stays (and without pins, the FIB goes away).
func (a *Agent) Close() error { return errors.Join(a.punter.Close(), a.fib.Close()) }
