package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/fibmesh/fibmesh/agent/enrolment"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// enrolPod is the enrolment server's Enrol: it waits until the agent has
// a flow table, starts the pod's SVID rotation and waits for the first
// SVID. A pod in the node's flow table gets its data path now. A pod not
// in it yet is the usual case on Kubernetes: the CNI ADD runs before the
// kubelet reports the pod's IP, and the controller places a pod by its
// IP. Then the CA issuing its SVID proves the controller schedules it on
// this node (it refuses another node's pod); its capture is installed now
// (fail closed: captured connections are refused) and its data path
// starts once its IP reaches the flow table (awaitPlacement).
func (a *Agent) enrolPod(ctx context.Context, namespace, name string, ns *os.File) (enrolment.Result, error) {
	key := namespace + "/" + name
	placed := false
	for {
		a.mu.Lock()
		seen := a.tablesSeen
		ready := a.ready
		a.mu.Unlock()
		if ready {
			_, placed = a.rec.Desired().Pods[key]
			break
		}
		select {
		case <-ctx.Done():
			return enrolment.Result{}, fmt.Errorf("no flow table from the controller yet (%s): try again once the agent is ready (/readyz)", a.connSummary())
		case <-seen:
		}
	}
	if !placed {
		return a.enrolPending(ctx, namespace, name, ns)
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

// enrolPending enrols a pod the node's flow table does not list (yet):
// see enrolPod.
func (a *Agent) enrolPending(ctx context.Context, namespace, name string, ns *os.File) (enrolment.Result, error) {
	key := namespace + "/" + name
	notPlaced := func(err error) (enrolment.Result, error) {
		if !a.enrol.Enrolled(namespace, name) {
			a.svids.Remove(namespace, name)
		}
		return enrolment.Result{}, fmt.Errorf("not in node %s's flow table, and the controller's CA does not issue its SVID to this node (check the pod's nodeName): %w", a.cfg.Node, err)
	}
	if err := a.svids.Ensure(namespace, name); err != nil {
		return enrolment.Result{}, err
	}
	s, err := a.svids.Wait(ctx, namespace, name)
	if err != nil {
		return notPlaced(err)
	}
	if _, ok := a.rec.Desired().Pods[key]; ok {
		// Listed meanwhile (the controller published the pod while its
		// SVID was issued): its data path starts now, as enrolPod's.
		if err := a.startPod(namespace, name, ns, false); err != nil {
			return enrolment.Result{}, err
		}
		a.log.Info("pod enrolled", "pod", key, "spiffe_id", s.ID.String(), "svid_not_after", s.NotAfter)
		return enrolment.Result{Identity: s.ID.String(), Expiry: s.NotAfter}, nil
	}
	own, err := netns.Dup(ns, "netns "+key)
	if err != nil {
		return enrolment.Result{}, fmt.Errorf("pod %s: network namespace handle: %w", key, err)
	}
	defer own.Close()
	if err := capture.Install(int(own.Fd()), capture.Config{DNS: true}); err != nil {
		return enrolment.Result{}, fmt.Errorf("pod %s: capture: %w", key, err)
	}
	// The kubelet probes the pod as soon as it starts: its probes reach
	// the app from now on, by the address the primary plugin gave it
	// (the flow table's, once it lists the pod, replaces it).
	if ip, err := podAddr(own); err != nil {
		a.log.Warn("pod's address not read: the kubelet's probes of STRICT ports are refused until its data path starts", "pod", key, "err", err)
	} else {
		a.pathMu.Lock()
		err = a.probes.set(key, ip)
		a.pathMu.Unlock()
		if err != nil {
			return enrolment.Result{}, fmt.Errorf("pod %s: %w", key, err)
		}
	}
	go a.awaitPlacement(namespace, name)
	a.log.Info("pod enrolled; its data path starts once its IP is in the flow table", "pod", key, "spiffe_id", s.ID.String(), "svid_not_after", s.NotAfter)
	return enrolment.Result{Identity: s.ID.String(), Expiry: s.NotAfter}, nil
}

// awaitPlacement starts the data path of a pod enrolled before the node's
// flow table listed it, once it does (resumePod; an SVID issued meanwhile
// resumes it too). It gives up when the pod is no longer enrolled (DEL)
// or after pendingLimit.
func (a *Agent) awaitPlacement(namespace, name string) {
	key := namespace + "/" + name
	limit := time.NewTimer(pendingLimit)
	defer limit.Stop()
	// The enrolment server records the pod when enrolPod returns: until
	// then resumePod would see it as not enrolled, hence the tick.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	recorded := false
	for {
		a.mu.Lock()
		seen := a.tablesSeen
		a.mu.Unlock()
		enrolled := a.enrol.Enrolled(namespace, name)
		if recorded && !enrolled {
			return
		}
		recorded = recorded || enrolled
		if _, ok := a.rec.Desired().Pods[key]; ok && enrolled {
			a.resumePod(namespace, name)
			a.pathMu.Lock()
			_, running := a.paths[key]
			a.pathMu.Unlock()
			if running {
				return
			}
		}
		select {
		case <-seen:
		case <-tick.C:
		case <-limit.C:
			a.log.Warn("pod enrolled but never listed in the node's flow table: its captured connections are refused", "pod", key, "waited", pendingLimit)
			return
		}
	}
}

// pendingLimit bounds awaitPlacement: the kubelet reports a pod's IP
// right after its sandbox is up.
const pendingLimit = 10 * time.Minute

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
