package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/svid"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

// connState is the controller connection's state, as logged and
// exported.
type connState struct {
	state string // "connecting", "connected", "disconnected"
	err   string // the class of the last failure, for logging once
	since time.Time
}

// Connection states.
const (
	stateConnecting   = "connecting"
	stateConnected    = "connected"
	stateDisconnected = "disconnected"
)

// Backoff returns the wait before reconnect attempt n (0 first) with
// full jitter: uniform in [0, min(cap, base·2ⁿ)).
func Backoff(base, cap time.Duration, n int) time.Duration {
	bound := cap
	if n < 62 {
		if b := base << n; b > 0 && b < cap {
			bound = b
		}
	}
	if bound <= 0 {
		return 0
	}
	return rand.N(bound)
}

// runController keeps the xDS stream up until ctx is done: each failure
// is followed by a wait (Backoff) and a new stream; the resources in
// force, and the FIB, stay as they are meanwhile.
func (a *Agent) runController(ctx context.Context) error {
	go a.consumeUpdates(ctx)
	attempt := 0
	a.setConn(stateConnecting, nil)
	for {
		a.mu.Lock()
		a.connectedOnce = false
		a.mu.Unlock()
		err := a.xds.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.mu.Lock()
		wasUp := a.connectedOnce
		a.mu.Unlock()
		if wasUp {
			attempt = 0
			a.m.reconnects.Inc()
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		wait := Backoff(a.cfg.ReconnectBase, a.cfg.ReconnectCap, attempt)
		attempt++
		a.setConn(stateDisconnected, err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// failureClass reduces a stream error to what an operator acts on, so
// that the same failure is logged once, not once per retry.
func failureClass(err error) (class, hint string) {
	var st interface{ GRPCStatus() *status.Status }
	code := codes.Unknown
	if errors.As(err, &st) {
		code = st.GRPCStatus().Code()
	}
	switch {
	case strings.Contains(err.Error(), svid.ErrNoToken.Error()):
		// Nothing was sent: the credentials could not read the token.
		return "token-file", "the node's token could not be read: check that --token-file exists, is readable and is not empty"
	case code == codes.Unauthenticated || code == codes.PermissionDenied:
		return "refused", "the controller refused the node's token: check --token-file (and the controller's bootstrap tokens)"
	case strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "x509") || strings.Contains(err.Error(), "tls:"):
		return "tls", "the controller's certificate does not verify: check --controller-ca and --controller-server-name"
	case code == codes.Unavailable:
		return "unreachable", "the controller is unreachable; the FIB keeps forwarding on the last good config"
	}
	return "failed", "the xDS stream failed; the FIB keeps forwarding on the last good config"
}

func (a *Agent) setConn(state string, err error) {
	a.mu.Lock()
	prev := a.ctl
	next := connState{state: state, since: time.Now()}
	var hint string
	if err != nil {
		next.err, hint = failureClass(err)
	}
	if prev.state == state && prev.err == next.err {
		a.mu.Unlock()
		return // the same state: logged already
	}
	if prev.state == state {
		next.since = prev.since
	}
	a.ctl = next
	a.mu.Unlock()
	a.m.setConnected(state == stateConnected)
	switch state {
	case stateConnecting:
		if prev.state == "" {
			a.log.Info("connecting to the controller", "controller", a.cfg.Controller)
		}
	case stateConnected:
		a.log.Info("controller connected", "controller", a.cfg.Controller)
	case stateDisconnected:
		a.log.Warn("controller connection failed; retrying with backoff", "controller", a.cfg.Controller,
			"reason", next.err, "hint", hint, "err", err)
	}
}

// consumeUpdates follows the xDS client's responses: connection state,
// NACKs, metrics, and the "converged" line after each (re)connect.
func (a *Agent) consumeUpdates(ctx context.Context) {
	subs := xdsapi.AgentSubscriptions(a.cfg.Node)
	var seen map[string]bool // types answered on this connection
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	converged := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-quiet.C:
			if converged {
				continue
			}
			// Every type has answered, or holds resources from before
			// (a delta server sends nothing for what is current), and
			// the stream has been quiet for a moment.
			done := true
			for _, s := range subs {
				if !seen[s.TypeURL] && a.xds.Version(s.TypeURL) == "" {
					done = false
				}
			}
			if done {
				converged = true
				versions := []any{"controller", a.cfg.Controller}
				for _, s := range subs {
					versions = append(versions, strings.ToLower(xdsapi.ShortType(s.TypeURL)), a.xds.Version(s.TypeURL))
				}
				a.log.Info("converged", versions...)
			}
		case u := <-a.xds.Updates():
			a.mu.Lock()
			first := !a.connectedOnce
			a.connectedOnce = true
			ts := a.types[u.TypeURL]
			if ts == nil {
				ts = &typeState{}
				a.types[u.TypeURL] = ts
			}
			if u.NACK != nil {
				ts.nack = &admin.UpdateFailure{VersionInfo: u.Version, Details: u.NACK.Error(), At: u.At}
			} else {
				ts.nack, ts.updated = nil, u.At
			}
			a.mu.Unlock()
			if first {
				seen = map[string]bool{}
				converged = false
				a.setConn(stateConnected, nil)
			}
			seen[u.TypeURL] = true
			a.m.update(u)
			if u.NACK != nil {
				a.log.Warn("config refused (NACK); the last good config stays", "type", xdsapi.ShortType(u.TypeURL), "version", u.Version, "reason", u.NACK.Error())
			}
			quiet.Reset(200 * time.Millisecond)
		}
	}
}

// validate is the xDS client's validator: flow tables are applied to the
// FIB here (a table that cannot be applied is NACKed and changes
// nothing), the trust bundle is parsed; the Envoy types are kept for the
// slow path.
func (a *Agent) validate(typeURL string, resources map[string]proto.Message) error {
	received := time.Now()
	switch typeURL {
	case xdsapi.FlowTableType:
		tables := make(map[string]*fibv1.FlowTable, len(resources))
		for name, m := range resources {
			t, ok := m.(*fibv1.FlowTable)
			if !ok {
				return fmt.Errorf("flow table %q: a %T, not a FlowTable", name, m)
			}
			tables[name] = t
		}
		if err := a.rec.Apply(tables); err != nil {
			return err
		}
		a.tablesApplied()
	case resource.ListenerType, resource.ClusterType, resource.EndpointType, resource.RouteType:
		// The slow path's config: compiled now, so that what it cannot
		// honour is refused (NACKed) here.
		if err := a.conf.Update(typeURL, resources, ""); err != nil {
			return err
		}
		// Established connections the new config no longer allows are
		// revoked now (offloaded ones too: their XDP entries turn to
		// drop), timed from the push's arrival.
		a.proxy.Reevaluate(received)
	case resource.SecretType:
		sec, ok := resources[xdsapi.RootCASecret]
		if !ok {
			return nil
		}
		roots, err := bundleOf(sec)
		if err != nil {
			return fmt.Errorf("secret %s: %w", xdsapi.RootCASecret, err)
		}
		a.mu.Lock()
		a.bundle = roots
		a.mu.Unlock()
	}
	return nil
}

// bundleOf reads the trust bundle of an SDS validation context secret.
func bundleOf(m proto.Message) ([]*x509.Certificate, error) {
	sec, ok := m.(*tlsv3.Secret)
	if !ok {
		return nil, fmt.Errorf("a %T, not a Secret", m)
	}
	vc := sec.GetValidationContext()
	if vc == nil {
		return nil, errors.New("validation_context: missing: want the trust bundle")
	}
	data := vc.GetTrustedCa().GetInlineBytes()
	var roots []*x509.Certificate
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("validation_context.trusted_ca: %w", err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, errors.New("validation_context.trusted_ca.inline_bytes: no PEM certificate")
	}
	return roots, nil
}

// tablesApplied marks the agent ready, wakes enrolments waiting for
// their pod, and keeps SVID rotation to the enrolled pods the node's
// table still lists.
func (a *Agent) tablesApplied() {
	a.mu.Lock()
	wasReady := a.ready
	a.ready = true
	close(a.tablesSeen)
	a.tablesSeen = make(chan struct{})
	a.mu.Unlock()
	if !wasReady {
		st := a.rec.Status()
		a.log.Info("first flow table applied", "routes", len(st.Routes), "policies", len(st.Policies), "pending", len(st.Pending), "versions", st.Versions)
	}
	d := a.rec.Desired()
	a.setMeshPods(d)
	for _, p := range a.enrol.Pods() {
		if _, ok := d.Pods[p.Key()]; ok {
			if err := a.svids.Ensure(p.Namespace, p.Name); err != nil {
				a.log.Warn("SVID rotation not started", "pod", p.Key(), "err", err)
			}
		}
	}
	a.svids.Retain(func(ns, pod string) bool { _, ok := d.Pods[ns+"/"+pod]; return ok })
}

// versions returns the version accepted per short type name.
func (a *Agent) versions() map[string]string {
	out := map[string]string{}
	for _, s := range xdsapi.AgentSubscriptions(a.cfg.Node) {
		out[xdsapi.ShortType(s.TypeURL)] = a.xds.Version(s.TypeURL)
	}
	return out
}
