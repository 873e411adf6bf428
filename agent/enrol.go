package agent

import (
	"context"
	"fmt"
	"os"

	"github.com/fibmesh/fibmesh/agent/enrolment"
)

// enrolPod is the enrolment server's Enrol: it waits until the pod is in
// the node's flow table, starts its SVID rotation and waits for the
// first SVID.
func (a *Agent) enrolPod(ctx context.Context, namespace, name string, ns *os.File) (enrolment.Result, error) {
	key := namespace + "/" + name
	for {
		a.mu.Lock()
		seen := a.tablesSeen
		ready := a.ready
		a.mu.Unlock()
		if ready {
			if _, ok := a.rec.Desired().Pods[key]; ok {
				break
			}
		}
		select {
		case <-ctx.Done():
			if !ready {
				return enrolment.Result{}, fmt.Errorf("no flow table from the controller yet (%s): try again once the agent is ready (/readyz)", a.connSummary())
			}
			return enrolment.Result{}, fmt.Errorf("not in node %s's flow table: the controller does not place it on this node (check the pod's nodeName and status.podIP)", a.cfg.Node)
		case <-seen:
		}
	}
	if err := a.svids.Ensure(namespace, name); err != nil {
		return enrolment.Result{}, err
	}
	s, err := a.svids.Wait(ctx, namespace, name)
	if err != nil {
		if !a.enrol.Enrolled(namespace, name) { // a re-enrolment keeps rotating
			a.svids.Remove(namespace, name)
		}
		switch class, hint := failureClass(err); class {
		case "refused":
			a.log.Warn("the controller's CA refused the node", "pod", key, "hint", hint, "err", err)
		case "token-file":
			a.log.Warn("no SVID: the node's token could not be read", "pod", key, "hint", hint, "err", err)
		}
		return enrolment.Result{}, fmt.Errorf("no SVID: %w", err)
	}
	if err := a.startPod(namespace, name, ns, false); err != nil {
		return enrolment.Result{}, err
	}
	a.log.Info("pod enrolled", "pod", key, "spiffe_id", s.ID.String(), "svid_not_after", s.NotAfter)
	return enrolment.Result{Identity: s.ID.String(), Expiry: s.NotAfter}, nil
}

func (a *Agent) connSummary() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := "controller " + a.cfg.Controller + ": " + a.ctl.state
	if a.ctl.err != "" {
		s += " (" + a.ctl.err + ")"
	}
	return s
}

// resumePod starts the data path of an enrolled pod that has none yet
// (a pod restored after a restart whose enrolment timed out, e.g. while
// the controller was unreachable) once it has an SVID. Until then its
// captured connections are refused.
func (a *Agent) resumePod(namespace, name string) {
	key := namespace + "/" + name
	a.pathMu.Lock()
	_, running := a.paths[key]
	a.pathMu.Unlock()
	if running {
		return
	}
	ns := a.enrol.Netns(namespace, name)
	if ns == nil {
		return // not enrolled (yet): enrolPod starts it
	}
	go func() {
		if err := a.startPod(namespace, name, ns, true); err != nil {
			a.log.Warn("data path not started; captured connections of the pod are refused", "pod", key, "err", err)
			return
		}
		a.log.Info("data path resumed", "pod", key)
	}()
}
