package l4bench

import (
	"fmt"
	"strings"
	"time"

	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// TunnelWant is what a transfer through the mesh must have left in the
// two agents' connection tables.
type TunnelWant struct {
	// ClientPod and ServerPod are "namespace/name".
	ClientPod, ServerPod string
	// Destination is what the client dialled (the Service's VIP:port);
	// ServerPort the port the server's agent delivers to.
	Destination string
	ServerPort  int
	// ClientID and ServerID are the pods' SPIFFE IDs.
	ClientID, ServerID string
	// Bytes the receiver got; Since, when the transfer started.
	Bytes int64
	Since time.Time
}

// MinShare is the share of the bytes received that each agent must have
// relayed for a run to count as carried by the mesh. It is below 1 only
// for a snapshot taken before the last bytes were counted.
const MinShare = 0.9

// CheckTunnel says whether the client's agent (its table: client) and
// the server's (server) carried the transfer w describes: an outbound
// connection of w.ClientPod to w.Destination and an inbound one of
// w.ServerPod to port w.ServerPort, both started since w.Since, both over
// TLS with the peer's SPIFFE ID verified as the other pod's, each side
// relaying at least MinShare of w.Bytes. It returns the tunnel's TLS
// version and cipher suite as the client's agent reports them; the error
// says what was missing and what the tables held instead.
func CheckTunnel(client, server benchlab.ConnLog, w TunnelWant) (string, error) {
	since := w.Since.Add(-time.Second) // the agents' clocks are this host's; allow rounding
	var out, in uint64
	var outN, inN int
	var seen []string
	var tunnel string
	for _, c := range client {
		if c.Pod != w.ClientPod || !strings.EqualFold(c.Direction, "outbound") || c.Destination != w.Destination || c.Start.Before(since) {
			continue
		}
		if c.TLSVersion == "" || c.PeerIdentity != w.ServerID {
			seen = append(seen, fmt.Sprintf("client side %s -> %s mode %q upstream %s tls=%q peer=%q", c.Source, c.Destination, c.Mode, c.Upstream, c.TLSVersion, c.PeerIdentity))
			continue
		}
		tunnel = strings.TrimSpace(c.TLSVersion + " " + c.TLSCipher)
		out += c.BytesOut
		outN++
	}
	for _, c := range server {
		if c.Pod != w.ServerPod || !strings.EqualFold(c.Direction, "inbound") || benchlab.Port(c.Destination) != w.ServerPort || c.Start.Before(since) {
			continue
		}
		if c.TLSVersion == "" || c.PeerIdentity != w.ClientID {
			seen = append(seen, fmt.Sprintf("server side %s -> %s tls=%q peer=%q", c.Source, c.Destination, c.TLSVersion, c.PeerIdentity))
			continue
		}
		in += c.BytesIn
		inN++
	}
	want := uint64(float64(w.Bytes) * MinShare)
	var problems []string
	if outN == 0 {
		problems = append(problems, fmt.Sprintf("the client's agent lists no mTLS connection of %s to %s with peer %s (%d entries in its table)", w.ClientPod, w.Destination, w.ServerID, len(client)))
	} else if out < want {
		problems = append(problems, fmt.Sprintf("the client's agent relayed %d bytes of the %d received", out, w.Bytes))
	}
	if inN == 0 {
		problems = append(problems, fmt.Sprintf("the server's agent lists no mTLS connection to %s port %d with peer %s (%d entries in its table)", w.ServerPod, w.ServerPort, w.ClientID, len(server)))
	} else if in < want {
		problems = append(problems, fmt.Sprintf("the server's agent relayed %d bytes of the %d received", in, w.Bytes))
	}
	if len(problems) == 0 {
		return tunnel, nil
	}
	msg := "the transfer did not go through the agents' mTLS tunnel: " + strings.Join(problems, "; ")
	if len(seen) > 0 {
		msg += "; seen instead: " + strings.Join(seen, "; ")
	}
	return "", fmt.Errorf("%s", msg)
}

// Bypassed returns the connections in l of pod started since since: for
// a pod outside the mesh there must be none.
func Bypassed(l benchlab.ConnLog, pod string, since time.Time) []benchlab.AgentConn {
	return l.Since(pod, since)
}
