package main

import (
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/internal/output"
)

const offloadFlowsUsage = `fibctl flows --offload: the XDP flow entries of the connections a node's
agent offloaded, one line per connection, read from its admin API
(/offload/flows). Without --offload, fibctl flows lists the FIB's flow
map itself, entry by entry.

Usage:
  fibctl flows --offload [--node NETNS] [--admin ADDR] [--pod NS/NAME] [--conn ID] [-o table|json|yaml]

For each offloaded connection (its id and pod as in fibctl conns): the
tunnel's 5-tuple as this side sees it (local pod IP:port <-> remote), the
actions of its two entries (out: local -> remote, in: remote -> local),
the packets and bytes XDP counted (both directions), both SPIFFE IDs with
their identity ids in the node's flow tables, the state (offloaded;
revoked: the entry toward the pod drops; draining: revoked and closed,
the drop entry kept a few seconds for the peer's retransmissions) and,
once revoked, the revocation latency: from the push of the change that
revoked it to the first packet the drop entry dropped ("<=" marks an
upper bound, see docs/agent.md). -o json|yaml gives every field, both
entries' counters included.

Flags:
`

// offloadFlowsCommand is fibctl flows --offload: it returns the exit
// status.
func offloadFlowsCommand(args []string, stdout, stderr io.Writer) int {
	var pod, conn string
	args = dropFlag(args, "offload")
	args, pod = takeFlag(args, "pod")
	args, conn = takeFlag(args, "conn")
	f, code, ok := parseAdminFlags("fibctl flows --offload", offloadFlowsUsage, args, 0, stderr)
	if !ok {
		return code
	}
	q := url.Values{}
	if pod != "" {
		q.Set("pod", pod)
	}
	if conn != "" {
		if _, err := strconv.ParseUint(conn, 10, 64); err != nil {
			fmt.Fprintf(stderr, "fibctl flows --offload: --conn %q: want a connection id (a number, as fibctl conns lists)\n", conn)
			return 2
		}
		q.Set("conn", conn)
	}
	var flows []admin.OffloadFlow
	if err := adminGet(f, "/offload/flows", q, &flows); err != nil {
		fmt.Fprintf(stderr, "fibctl flows --offload: %v\n", err)
		return 1
	}
	if flows == nil {
		flows = []admin.OffloadFlow{}
	}
	err := output.Write(stdout, f.format, flows, func(w io.Writer) {
		fmt.Fprintln(w, "CONN\tPOD\tTUNNEL\tOUT\tIN\tPACKETS\tBYTES\tLOCAL ID\tPEER ID\tSTATE\tREVOKED IN")
		for _, fl := range flows {
			out, in := "-", "-"
			if len(fl.Entries) == 2 {
				out, in = fl.Entries[0].Action, fl.Entries[1].Action
			}
			fmt.Fprintf(w, "%d\t%s\t%s <-> %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", fl.ConnID, fl.Pod, addr(fl.Local), addr(fl.Remote),
				out, in, fl.Packets, humanBytes(fl.Bytes), identity(fl.LocalIdentity, fl.LocalIdentityID),
				identity(fl.PeerIdentity, fl.PeerIdentityID), fl.State, revokedIn(fl.Revocation))
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "fibctl flows --offload: %v\n", err)
		return 1
	}
	return 0
}

// identity prints a SPIFFE ID with its identity id.
func identity(spiffeID string, id uint32) string {
	if spiffeID == "" {
		spiffeID = "-"
	}
	return fmt.Sprintf("%s (%d)", spiffeID, id)
}

// revokedIn prints a revocation's latency, or where its measure is.
func revokedIn(r *admin.Revocation) string {
	switch {
	case r == nil:
		return "-"
	case r.State != "dropped":
		return r.State
	case r.FirstDropErrorMs > 0:
		return fmt.Sprintf("<=%.3fms (first drop within %.3fms before)", r.FirstDropMs, r.FirstDropErrorMs)
	}
	return fmt.Sprintf("%.3fms", r.FirstDropMs)
}

// hasFlag reports whether args hold --name or -name (a boolean flag).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--"+name || a == "-"+name || a == "--"+name+"=true" || a == "-"+name+"=true" {
			return true
		}
	}
	return false
}

// dropFlag removes the boolean flag --name (or -name) from args.
func dropFlag(args []string, name string) []string {
	var rest []string
	for _, a := range args {
		if a == "--"+name || a == "-"+name || a == "--"+name+"=true" || a == "-"+name+"=true" {
			continue
		}
		rest = append(rest, a)
	}
	return rest
}
