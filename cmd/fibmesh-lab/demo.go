package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/demo"
)

// flagBin is the demo's --bin.
var flagBin string

func init() {
	commands["demo"] = &command{
		summary: "bring the lab up, start the agents, show traffic crossing nodes in XDP",
		usage: `fibmesh-lab demo [--bin DIR] [--nodes N] [--pods M] [--prefix P] [--state-dir DIR]

Builds the lab as "up" does, starts fibmesh-agent (from --bin) in every
node, sends ICMP, TCP and UDP between pods on different nodes and prints,
per node, how many packets XDP redirected and how many the kernel
forwarded. The lab and the agents stay up; "fibmesh-lab down" stops the
agents and removes the lab.

Example:
  make build && sudo bin/fibmesh-lab demo --bin bin`,
		run: runDemo,
	}
}

func runDemo(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("demo: unexpected arguments %q", args)}
	}
	cfg := lab.Config{Nodes: flagNodes, PodsPerNode: flagPods, Prefix: flagPrefix, StateDir: flagStateDir}
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("demo: %w", err)}
	}
	return demo.Run(ctx, demo.Options{BinDir: flagBin, Lab: cfg, Out: stdout})
}
