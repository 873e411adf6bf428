package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/internal/output"
)

const configStatusUsage = `fibctl config status: what the controller has pushed to each node's
agent, and what each agent accepted.

Usage:
  fibctl config status [--controller URL] [-o table|json|yaml] [NODE]

For each node: open xDS streams, then per type (CDS EDS LDS RDS SDS FDS)
SYNCED (the last version sent was ACKed), STALE (sent, not yet
answered), NACKED (refused: the agent keeps its last good config; the
reason is printed below the table) or NOT SENT; and the last change's
convergence time (change seen by the controller → ACKed by the node).

Exit status: 0 all connected nodes synced, 1 a node is stale or NACKed,
2 bad usage or the controller cannot be reached.

Flags:
`

// configStatus is fibctl config status: it asks the controller's
// monitoring endpoint for every node's status, prints it and returns the
// exit status.
func configStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fibctl config status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, configStatusUsage); fs.PrintDefaults() }
	ctl := fs.String("controller", "http://127.0.0.1:15014", "the controller's monitoring endpoint (--monitoring-listen)")
	formatName := fs.String("o", string(output.Table), output.FlagUsage)
	// Flags may follow NODE (fibctl config status node1 -o json): the
	// flag package stops at the first argument, so parse again after
	// each one, up to a "--".
	var nodes []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			nodes = append(nodes, rest...)
			break
		}
		nodes, args = append(nodes, rest[0]), rest[1:]
	}
	format, err := output.Parse(*formatName)
	if err != nil {
		fmt.Fprintf(stderr, "fibctl config status: %v\n", err)
		return 2
	}
	if len(nodes) > 1 {
		fmt.Fprintf(stderr, "fibctl config status: at most one NODE, got %q\n", nodes)
		return 2
	}
	url := strings.TrimSuffix(*ctl, "/") + xds.StatusPath
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "fibctl config status: %v (is fibmesh-controller running? --controller names its --monitoring-listen)\n", err)
		return 2
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(stderr, "fibctl config status: %s: %s: %s\n", url, resp.Status, strings.TrimSpace(string(b)))
		return 2
	}
	var all []xds.NodeStatus
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		fmt.Fprintf(stderr, "fibctl config status: %s: decoding the status: %v\n", url, err)
		return 2
	}
	if len(nodes) == 1 {
		var one []xds.NodeStatus
		for _, ns := range all {
			if ns.Node == nodes[0] {
				one = append(one, ns)
			}
		}
		if len(one) == 0 {
			fmt.Fprintf(stderr, "fibctl config status: node %q has never connected to this controller\n", nodes[0])
			return 1
		}
		all = one
	}
	if err := writeStatus(stdout, format, all); err != nil {
		fmt.Fprintln(stderr, "fibctl config status:", err)
		return 2
	}
	for _, ns := range all {
		if ns.Streams == 0 {
			continue
		}
		for _, ts := range ns.Types {
			if ts.State() != "SYNCED" {
				return 1
			}
		}
	}
	return 0
}

// writeStatus prints every node's status: per type its State, and each
// NACK's reason below the table.
func writeStatus(out io.Writer, format output.Format, all []xds.NodeStatus) error {
	if all == nil {
		all = []xds.NodeStatus{}
	}
	return output.Write(out, format, all, func(w io.Writer) {
		fmt.Fprint(w, "NODE\tSTREAMS")
		for _, t := range xds.Types {
			fmt.Fprint(w, "\t", xds.ShortType(t))
		}
		fmt.Fprintln(w, "\tCONVERGED")
		var nacks []string
		for _, ns := range all {
			name := ns.Node
			if !ns.InModel {
				name += " (not in model)"
			}
			fmt.Fprintf(w, "%s\t%d", name, ns.Streams)
			for _, t := range xds.Types {
				st := xds.TypeStatus{TypeURL: t}
				for _, ts := range ns.Types {
					if ts.TypeURL == t {
						st = ts
					}
				}
				fmt.Fprint(w, "\t", st.State())
				if st.NACK != nil {
					nacks = append(nacks, fmt.Sprintf("%s %s: version %s NACKed at %s: %s", ns.Node, xds.ShortType(t), st.NACK.Version, st.NACK.At.Format(time.RFC3339), st.NACK.Reason))
				}
			}
			conv := "-"
			if ns.LastConvergence > 0 {
				conv = ns.LastConvergence.Round(10 * time.Microsecond).String()
			}
			fmt.Fprintf(w, "\t%s\n", conv)
		}
		// Below the table: lines without tabs are not aligned.
		for _, n := range nacks {
			fmt.Fprintln(w, n)
		}
	})
}
