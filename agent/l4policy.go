package agent

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/punt"
)

// L4 policy for UDP: a local pod's UDP port that an AuthorizationPolicy
// covers is in the punt set (reconcile.Desired.Punt; FDS
// PortPolicy.authz), so XDP punts the first packet of each new flow to
// it, and decidePunt decides the flow from the port's compiled
// policies. The Punter then installs the verdict's flow entries (allow:
// forward, both directions; deny: drop) and re-injects or drops the
// packet, so the rest of the flow never leaves XDP.
//
// Plaintext UDP carries no certificate, so the source is known by its
// IP alone, and its namespace by the mesh pod FDS says holds that IP
// (its SPIFFE ID, reconcile.Desired.MeshPods). What a rule can be
// decided on: ipBlocks, remoteIpBlocks (the same as ipBlocks: no proxy
// stands in front of a UDP flow), namespaces, ports, and the when keys
// source.ip, remote.ip, source.namespace, destination.ip and
// destination.port, each with its not_ form. (Istio reads namespaces
// from the peer's certificate, so on plaintext they never match there;
// here they come from the controller's mapping of pod IPs to
// identities, which is as trustworthy as the source address itself.)
//
// The rest cannot be known for a plaintext UDP flow: principals,
// requestPrincipals and serviceAccounts (they need a verified peer),
// hosts, methods and paths (HTTP), the other when keys (source.principal,
// request.*, connection.sni, ...), namespaces for a source that is not a
// mesh pod, and values that do not parse. Such a field, negated or not,
// is undecidable and fails closed:
//   - in an ALLOW policy it does not match, so its rule allows nothing
//     (Istio's behaviour for principals on plaintext and for HTTP-only
//     fields on TCP, https://istio.io/latest/docs/tasks/security/authorization/authz-tcp/);
//   - in a DENY policy it matches, so the rest of the rule decides and
//     the deny is broader, never narrower. For HTTP-only fields this is
//     Istio's behaviour on TCP. For principals (and the namespaces of a
//     source outside the mesh) it is not: Istio compares them with an
//     empty value on plaintext, so "principals: [x]" never denies and
//     "notPrincipals: [x]" always does
//     (https://istio.io/latest/news/security/istio-security-2021-004/).
//     fibmesh takes the fail-closed reading: a DENY rule that names
//     principals denies plaintext UDP whatever the principals say;
//   - in a CUSTOM policy it matches as in DENY;
//   - in an AUDIT policy it matches (audits more).
//
// Actions are evaluated as Istio does: CUSTOM first (fibmesh has no
// external authorizer, so a CUSTOM policy that matches denies: fail
// closed), then DENY (any match denies), then ALLOW (when the port has
// ALLOW policies, one must match, else the flow is denied; without any,
// what no DENY matched is allowed). AUDIT policies change no verdict;
// the first that matches is named in the decision's log line. A policy
// without rules matches nothing (an ALLOW policy without rules allows
// nothing); a rule with no fields matches everything.

// l4Flow is what an L4 decision sees of a punted flow.
type l4Flow struct {
	Src, Dst netip.Addr
	DstPort  uint16
	// SrcNamespace is the namespace of the mesh pod holding Src; "" when
	// Src is no mesh pod (a namespace field is then undecidable).
	SrcNamespace string
}

// l4Decision is a punted flow's verdict and why.
type l4Decision struct {
	Verdict punt.Verdict
	// Policy is the policy that decided ("namespace/name"); "" when none
	// did (no ALLOW policy matched, or no policy but AUDIT ones).
	Policy string
	// Audit is the first AUDIT policy that matched; "" when none did.
	Audit string
}

// decideL4 decides a flow from a port's policies (see above).
func decideL4(ps []reconcile.L4Policy, f l4Flow) l4Decision {
	var d l4Decision
	for _, p := range ps {
		if p.Action == reconcile.L4Audit && policyMatches(p, f) {
			d.Audit = p.Name
			break
		}
	}
	for _, act := range []reconcile.L4Action{reconcile.L4Custom, reconcile.L4Deny} {
		for _, p := range ps {
			if p.Action == act && policyMatches(p, f) {
				d.Verdict, d.Policy = punt.Deny, p.Name
				return d
			}
		}
	}
	anyAllow := false
	for _, p := range ps {
		if p.Action != reconcile.L4Allow {
			continue
		}
		anyAllow = true
		if policyMatches(p, f) {
			d.Verdict, d.Policy = punt.Allow, p.Name
			return d
		}
	}
	if anyAllow {
		d.Verdict = punt.Deny
		return d
	}
	d.Verdict = punt.Allow
	return d
}

// policyMatches reports whether any of p's rules matches f; an
// undecidable field matches unless p is an ALLOW policy.
func policyMatches(p reconcile.L4Policy, f l4Flow) bool {
	broad := p.Action != reconcile.L4Allow
	for _, r := range p.Rules {
		if ruleMatches(r, f, broad) {
			return true
		}
	}
	return false
}

func ruleMatches(r reconcile.L4Rule, f l4Flow, broad bool) bool {
	all := func(ms []reconcile.L4Match) bool {
		for _, m := range ms {
			if !fieldMatches(m, f, broad) {
				return false
			}
		}
		return true
	}
	anyOf := func(sets [][]reconcile.L4Match) bool {
		if len(sets) == 0 {
			return true
		}
		for _, ms := range sets {
			if all(ms) {
				return true
			}
		}
		return false
	}
	return anyOf(r.From) && anyOf(r.To) && all(r.When)
}

func fieldMatches(m reconcile.L4Match, f l4Flow, broad bool) bool {
	var hit bool
	switch m.Attr {
	case reconcile.AttrSourceIP:
		hit = anyPrefix(m.Prefixes, f.Src)
	case reconcile.AttrDestIP:
		hit = anyPrefix(m.Prefixes, f.Dst)
	case reconcile.AttrDestPort:
		for _, p := range m.Ports {
			hit = hit || p == f.DstPort
		}
	case reconcile.AttrSourceNamespace:
		if f.SrcNamespace == "" {
			return broad
		}
		for _, p := range m.Patterns {
			hit = hit || wildcardMatch(p, f.SrcNamespace)
		}
	default: // AttrUndecidable
		return broad
	}
	return hit != m.Not
}

func anyPrefix(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// wildcardMatch is Istio's string match: "*" any non-empty value, "*x" a
// suffix, "x*" a prefix, else exact.
func wildcardMatch(pattern, v string) bool {
	switch {
	case pattern == "*":
		return v != ""
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(v, pattern[1:])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(v, pattern[:len(pattern)-1])
	}
	return v == pattern
}

// decideFlow decides a flow to a port of d's punt set; covered is false
// when the flow's destination is not in it (then d decides nothing).
func decideFlow(d *reconcile.Desired, k fib.FlowKey) (dec l4Decision, covered bool) {
	ps, ok := d.Punt[fib.PolicyKey{Addr: k.Dst, Port: k.DstPort, Proto: k.Proto}]
	if !ok {
		return l4Decision{}, false
	}
	f := l4Flow{Src: k.Src, Dst: k.Dst, DstPort: k.DstPort}
	if id, ok := d.MeshPods[k.Src]; ok {
		f.SrcNamespace = namespaceOf(id) // telemetry.go
	}
	return decideL4(ps, f), true
}

// decidePunt is the Punter's DecideFunc: flows to a port of the punt set
// are decided by L4 policy; others (destinations of Config.Punt) by
// Config.Decide, or allowed. Before the first tables nothing is known:
// a punt is denied (fail closed), and the first tables re-decide the
// flows to the ports they cover (redecidePunts). Every verdict is
// counted (fibmesh_agent_punt_verdicts_total).
func (a *Agent) decidePunt(p punt.Packet) punt.Verdict {
	v := a.decide(p)
	a.m.puntVerdicts.WithLabelValues(v.String()).Inc()
	return v
}

func (a *Agent) decide(p punt.Packet) punt.Verdict {
	d := a.rec.Desired()
	if d == nil {
		a.log.Info("punt decision", "flow", p.Key.String(), "verdict", "deny", "reason", "no flow table yet")
		return punt.Deny
	}
	if dec, covered := decideFlow(d, p.Key); covered {
		a.log.Debug("punt decision", "flow", p.Key.String(), "verdict", dec.Verdict.String(), "policy", dec.Policy, "audit", dec.Audit)
		return dec.Verdict
	}
	if a.cfg.Decide != nil {
		return a.cfg.Decide(p)
	}
	a.log.Info("punt decision", "flow", p.Key.String(), "verdict", "allow", "ifindex", p.Ifindex)
	return punt.Allow
}

// flowStore is the part of the FIB's flow table redecideFlows uses
// (*fib.Flows).
type flowStore interface {
	List() ([]fib.FlowEntry, error)
	Delete(keys ...fib.FlowKey) error
}

// puntSettle is how long after a table change redecidePunts walks the
// flow table a second time. A punt decided under the old policy an
// instant before the change can have its entries written after the
// first walk (the Punter writes them once decidePunt has returned); a
// decision takes microseconds, so the second walk finds them.
const puntSettle = time.Second

// redecidePunts is the reconciler's Applied hook: when the policies of
// punt-set ports change (or the mesh pods whose namespaces they read),
// the flows whose entries hold a verdict the new policy no longer gives
// are deleted, both directions, so that their next packet is punted and
// decided again (counted by fibmesh_agent_punt_flows_redecided_total).
// Flows whose verdict stands keep their entries. Deleting rather than
// rewriting keeps one path, the punt, deciding every flow.
func (a *Agent) redecidePunts(prev, next *reconcile.Desired) {
	touched := puntChanges(prev, next)
	if len(touched) == 0 {
		return
	}
	walk := func(d *reconcile.Desired) {
		n, err := redecideFlows(a.fib.Flows, d, touched)
		a.m.puntRedecided.Add(float64(n))
		if err != nil {
			a.log.Warn("punted flows not re-decided after a policy change", "err", err)
		}
		if n > 0 {
			a.log.Info("punted flows re-decided after a policy change", "flows", n)
		}
	}
	walk(next)
	time.AfterFunc(puntSettle, func() {
		if d := a.rec.Desired(); d != nil {
			walk(d)
		}
	})
}

// puntChanges returns the ports whose punted flows may be decided
// otherwise under next than under prev (nil: before any table): ports
// that joined, left or changed policies, and every port of both sets when
// the mesh pods changed (a source's namespace may have).
func puntChanges(prev, next *reconcile.Desired) map[fib.PolicyKey]bool {
	out := map[fib.PolicyKey]bool{}
	if prev == nil {
		for k := range next.Punt {
			out[k] = true
		}
		return out
	}
	meshPods := !maps.Equal(prev.MeshPods, next.MeshPods)
	for k, ps := range next.Punt {
		if meshPods || !samePolicies(prev.Punt[k], ps) {
			out[k] = true
		}
	}
	for k := range prev.Punt {
		if _, ok := next.Punt[k]; !ok {
			out[k] = true
		}
	}
	return out
}

// redecideFlows deletes the UDP flow entries to ports of touched whose
// verdict (forward: allow; drop: deny) d no longer gives, with their
// reverse entries; it returns how many flows it deleted. A service flow
// is judged by its translated destination (the backend), and both its
// entries go: its next packet picks its backend again (Maglev gives the
// same one while the table stands) and is punted. A port no longer in
// d's punt set allows every flow (nothing punts to it): only its drop
// entries go.
func redecideFlows(fs flowStore, d *reconcile.Desired, touched map[fib.PolicyKey]bool) (int, error) {
	es, err := fs.List()
	if err != nil {
		return 0, err
	}
	var del []fib.FlowKey
	n := 0
	for _, e := range es {
		// k is the flow as the pod receives it; del the entries to delete
		// when its verdict changed: a plain flow's own and its reverse, a
		// service flow's way out (client -> VIP, NATDst) and way back.
		k, entries := e.Key, []fib.FlowKey{e.Key, e.Key.Reverse()}
		if _, _, translated, back, ok := e.ServiceFlow(); ok {
			k, entries[1] = translated, back
		} else if e.Flow.NATKind != fib.NATNone {
			continue // a way back: its way out decides
		}
		if k.Proto != fib.ProtoUDP || !touched[fib.PolicyKey{Addr: k.Dst, Port: k.DstPort, Proto: k.Proto}] {
			continue
		}
		var had punt.Verdict
		switch e.Flow.Action {
		case fib.ActionForward:
			had = punt.Allow
		case fib.ActionDrop:
			had = punt.Deny
		default:
			continue // a punt in progress, or not a verdict
		}
		want := punt.Allow
		if dec, covered := decideFlow(d, k); covered {
			want = dec.Verdict
		}
		if want != had {
			del = append(del, entries...)
			n++
		}
	}
	if len(del) == 0 {
		return 0, nil
	}
	if err := fs.Delete(del...); err != nil {
		return 0, err
	}
	return n, nil
}

func samePolicies(a, b []reconcile.L4Policy) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !samePolicy(a[i], b[i]) {
			return false
		}
	}
	return true
}

func samePolicy(a, b reconcile.L4Policy) bool {
	if a.Name != b.Name || a.Action != b.Action || len(a.Rules) != len(b.Rules) {
		return false
	}
	for i := range a.Rules {
		ra, rb := a.Rules[i], b.Rules[i]
		if !sameSets(ra.From, rb.From) || !sameSets(ra.To, rb.To) || !sameMatches(ra.When, rb.When) {
			return false
		}
	}
	return true
}

func sameSets(a, b [][]reconcile.L4Match) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameMatches(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameMatches(a, b []reconcile.L4Match) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Attr != y.Attr || x.Not != y.Not || x.Field != y.Field ||
			!slices.Equal(x.Prefixes, y.Prefixes) || !slices.Equal(x.Ports, y.Ports) || !slices.Equal(x.Patterns, y.Patterns) {
			return false
		}
	}
	return true
}
