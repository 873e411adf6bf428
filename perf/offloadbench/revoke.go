package offloadbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// revocations runs the revocation rounds; a round that fails is recorded
// and the rest still run, unless the path does not reopen.
func (r *runner) revocations(ctx context.Context) {
	for round := 1; round <= r.o.RevokeRounds && ctx.Err() == nil; round++ {
		v, err := r.revoke(ctx, round)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.fail("revocation round %d: %v", round, err)
			// Whatever happened, the next round needs the policy gone
			// and the path open.
			os.Remove(filepath.Join(r.manifests, PolicyFile))
			if err := r.waitOpen(ctx, ModeUserspace); err != nil {
				r.fail("revocation rounds stopped: %v", err)
				return
			}
			continue
		}
		r.res.Revocations = append(r.res.Revocations, v)
		agent := v.AgentNote
		if v.AgentSource != "" {
			agent = fmt.Sprintf("%.2f ms (%s)", v.AgentMs, v.AgentSource)
			if v.AgentErrorMs > 0 {
				agent = fmt.Sprintf("<= %.2f ms (within %.2f ms; %s)", v.AgentMs, v.AgentErrorMs, v.AgentSource)
			}
		}
		fmt.Fprintf(r.o.Out, "revoke %2d offloaded=%-5v policy written -> stream dead %7.1f ms  agents' push -> first drop: %s\n",
			round, v.Offloaded, v.DeathMs, agent)
	}
}

// revoke runs one revocation round.
func (r *runner) revoke(ctx context.Context, round int) (Revocation, error) {
	v := Revocation{Round: round}
	netns, addr, s, err := r.path(ModeUserspace)
	if err != nil {
		return v, err
	}
	p, err := startPaced(ctx, netns, addr, s, r.o.RevokeChunk, r.o.RevokeInterval)
	if err != nil {
		return v, err
	}
	defer p.stop()

	// Wait until both agents carry it as they should: offloaded where
	// the agents offload, established otherwise.
	offload := r.mode == AgentAuto && r.o.Offload
	deadline := time.Now().Add(r.o.Timeout)
	conns := map[string]uint64{} // node -> the stream's connection id in its agent
	for {
		client, server, err := r.tunnelConns(ctx, p.local)
		if err != nil {
			return v, err
		}
		if len(client) == 1 && len(server) == 1 {
			c, sv := client[0], server[0]
			conns[r.t.ClientNode], conns[r.t.ServerNode] = c.ID, sv.ID
			if offload && c.offloaded() && sv.offloaded() {
				v.Offloaded = true
				break
			}
			if !offload && c.State == "established" && sv.State == "established" {
				break
			}
			if time.Now().After(deadline) {
				return v, fmt.Errorf("the stream is not %s on both agents after %s: %s; %s", map[bool]string{true: "offloaded", false: "established"}[offload],
					r.o.Timeout, c.describe(), sv.describe())
			}
		} else if time.Now().After(deadline) {
			return v, fmt.Errorf("the stream has %d connections on %s's agent and %d on %s's after %s, want one each", len(client), r.t.ClientNode, len(server), r.t.ServerNode, r.o.Timeout)
		}
		select {
		case <-p.done:
			return v, fmt.Errorf("the stream died before the policy was applied: %v", p.err)
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The agents' histogram before, where they have one.
	hist := map[string][2]float64{}
	for _, node := range []string{r.t.ClientNode, r.t.ServerNode} {
		if sum, cnt, err := histogram(ctx, r.lab.NodeNetns[node], revocationMetric); err == nil {
			hist[node] = [2]float64{sum, cnt}
		}
	}

	// Apply the policy: written beside, renamed in (the lab sees the
	// whole file at once).
	tmp := filepath.Join(r.work, PolicyFile)
	if err := os.WriteFile(tmp, []byte(DenyPolicy(r.t)), 0o644); err != nil {
		return v, err
	}
	policy := filepath.Join(r.manifests, PolicyFile)
	applied := time.Now()
	if err := os.Rename(tmp, policy); err != nil {
		return v, err
	}
	defer os.Remove(policy)

	// The stream's death: the first error at either end.
	timer := time.NewTimer(r.o.Timeout)
	defer timer.Stop()
	var died time.Time
	var sr sinkResult
	gotSink := false
	select {
	case <-p.done:
		died = p.errAt
	case sr = <-p.res:
		gotSink = true
		died = sr.End
	case <-timer.C:
		return v, fmt.Errorf("the stream still runs %s after the policy that denies it was written (%d bytes sent)", r.o.Timeout, p.sent.Load())
	case <-ctx.Done():
		return v, ctx.Err()
	}
	v.DeathMs = float64(died.Sub(applied).Microseconds()) / 1000
	// The agents' figure first: a revoked connection's row leaves
	// /offload/flows with its drop entry, 5 s after the connection closed.
	if v.Offloaded {
		r.agentFigure(ctx, &v, conns, hist)
	} else {
		v.AgentNote = "not offloaded: no XDP drop entry to measure"
	}
	// The other end's view, for the record.
	clientDone := false
	select {
	case <-p.done:
		clientDone = true
	case <-time.After(2 * time.Second):
	}
	if !gotSink {
		select {
		case sr = <-p.res:
			gotSink = true
		case <-time.After(2 * time.Second):
		}
	}
	if clientDone && p.err != nil {
		v.ClientErr = p.err.Error()
	} else if !clientDone {
		v.ClientErr = "still writing 2 s after the server end's"
	}
	if gotSink && sr.Err != nil {
		v.ServerErr = sr.Err.Error()
	} else if gotSink {
		v.ServerErr = "end of file (closed, not reset)"
	}

	// Remove the policy and wait for the path to open again.
	if err := os.Remove(policy); err != nil && !errors.Is(err, os.ErrNotExist) {
		return v, err
	}
	if err := r.waitOpen(ctx, ModeUserspace); err != nil {
		return v, fmt.Errorf("after removing the policy: %w", err)
	}
	return v, nil
}

// agentFigure reads the agents' revocation latency for the round's
// connection (conns: its id in each node's agent): its revoked flow in
// /offload/flows of either agent (the largest figure if both measured
// one), else the histogram's growth since hist.
func (r *runner) agentFigure(ctx context.Context, v *Revocation, conns map[string]uint64, hist map[string][2]float64) {
	deadline := time.Now().Add(min(r.o.Timeout, 20*time.Second))
	pods := map[string]string{r.t.ClientNode: r.t.meshPod("client"), r.t.ServerNode: r.t.meshPod("server")}
	var notes []string
	for {
		waiting, found, served := false, false, false
		notes = notes[:0]
		for node, pod := range pods {
			fs, err := offloadFlows(ctx, r.lab.NodeNetns[node], pod)
			if err != nil {
				notes = append(notes, err.Error())
				continue
			}
			served = true
			seen := false
			for _, f := range fs {
				if f.ConnID != conns[node] {
					continue
				}
				seen = true
				rv := f.Revocation
				if rv == nil {
					notes = append(notes, fmt.Sprintf("%s's agent: conn %d %s, not revoked", node, f.ConnID, f.State))
					continue
				}
				switch rv.State {
				case "waiting":
					waiting = true
				case "dropped":
					found = true
					if rv.FirstDropMs > v.AgentMs {
						v.AgentMs, v.AgentErrorMs = rv.FirstDropMs, rv.FirstDropErrorMs
					}
				default:
					notes = append(notes, fmt.Sprintf("%s's agent: conn %d revocation %s (%d dropped)", node, f.ConnID, rv.State, rv.Dropped))
				}
			}
			if !seen {
				notes = append(notes, fmt.Sprintf("%s's agent: conn %d not in /offload/flows", node, conns[node]))
			}
		}
		if found && !waiting {
			v.AgentSource = "offload/flows"
			return
		}
		if !served || time.Now().After(deadline) || (!waiting && !found) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The histogram: one revocation per agent per round, so its growth
	// is the round's figure.
	for node, before := range hist {
		sum, cnt, err := histogram(ctx, r.lab.NodeNetns[node], revocationMetric)
		if err != nil || cnt <= before[1] {
			continue
		}
		if ms := (sum - before[0]) / (cnt - before[1]) * 1000; ms > v.AgentMs {
			v.AgentMs, v.AgentSource = ms, revocationMetric
		}
	}
	if v.AgentSource == "" {
		if len(notes) == 0 {
			notes = append(notes, "no revoked flow of the connection in either agent's /offload/flows and no "+revocationMetric+" growth")
		}
		v.AgentNote = fmt.Sprint(notes)
	}
}
