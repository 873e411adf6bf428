package benchlab

import (
	"encoding/json"
	"fmt"
	"time"
)

// AgentConn is the part of one entry of an agent's /connections (package
// agent/admin, Connection) that the benches read.
type AgentConn struct {
	ID            uint64 `json:"id"`
	Direction     string `json:"direction"`
	Pod           string `json:"pod"`
	Source        string `json:"source"`
	Destination   string `json:"destination"`
	Upstream      string `json:"upstream"`
	LocalIdentity string `json:"localIdentity"`
	PeerIdentity  string `json:"peerIdentity"`
	// Mode is how the agent reached the upstream: "tunnel" (mTLS to the
	// peer's agent), "plaintext", "passthrough", "app" (inbound).
	Mode       string    `json:"mode"`
	TLSVersion string    `json:"tlsVersion"`
	TLSCipher  string    `json:"tlsCipher"`
	State      string    `json:"state"`
	BytesOut   uint64    `json:"bytesOut"`
	BytesIn    uint64    `json:"bytesIn"`
	Start      time.Time `json:"start"`
}

// ParseConnections reads an agent's /connections response (a JSON array).
func ParseConnections(b []byte) ([]AgentConn, error) {
	var cs []AgentConn
	if err := json.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("the agent's /connections: %w (body: %q)", err, Clip(string(b), 200))
	}
	return cs, nil
}

// ConnLog merges snapshots of one agent's /connections taken during a
// run: an entry keeps its highest byte counts, so a connection that is
// gone from a later snapshot still counts.
type ConnLog map[uint64]AgentConn

// Add merges one snapshot.
func (l ConnLog) Add(cs []AgentConn) {
	for _, c := range cs {
		if old, ok := l[c.ID]; ok {
			c.BytesIn, c.BytesOut = max(c.BytesIn, old.BytesIn), max(c.BytesOut, old.BytesOut)
		}
		l[c.ID] = c
	}
}

// Since returns the connections in l of pod started since t (less a
// second: the agents' clocks are this host's; allow rounding).
func (l ConnLog) Since(pod string, t time.Time) []AgentConn {
	var out []AgentConn
	for _, c := range l {
		if c.Pod == pod && !c.Start.Before(t.Add(-time.Second)) {
			out = append(out, c)
		}
	}
	return out
}
