package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fibmesh/fibmesh/lab/demo"
)

func init() {
	commands["demo"] = &command{
		summary: "the mesh demo: run examples/ with the controller and agents, and show what they do",
		usage: `fibmesh-lab demo [-f DIR] [--bin DIR] [--prefix P] [--state-dir DIR]

Copies DIR (default examples/) to STATE_DIR/manifests and brings the lab
up on the copy with the mesh (up -f STATE_DIR/manifests --mesh): the
examples' pods running the echo app, fibmesh-controller in the fabric
namespace, fibmesh-agent in every node. Then it shows the routes each
agent got from the controller (fibctl fib), removes a Pod from the copy
and shows both nodes' FIBs follow, and sends traffic from a pod on one
node to a pod on the other through the XDP FIB (redirect counters up,
the kernel's forwarding counters flat). The lab stays up; "fibmesh-lab
down" (make demo-down) removes it.

Example:
  make build && sudo bin/fibmesh-lab demo`,
		run: runDemo,
	}
}

func runDemo(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("demo: unexpected arguments %q", args)}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := flagBin
	if bin == "" {
		bin = filepath.Dir(self)
	}
	return demo.Run(ctx, demo.Options{BinDir: bin, Manifests: flagFile, Prefix: flagPrefix, StateDir: flagStateDir, Self: self, Out: stdout})
}
