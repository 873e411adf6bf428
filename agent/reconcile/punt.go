package reconcile

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
)

// The punt set: local pods' UDP ports covered by L4 policy
// (Desired.Punt). XDP punts the first packet of each new flow to such a
// port (fib.PolicyEntry.Punt) and the agent decides the flow from the
// port's policies, compiled here from PortPolicy.authz into L4Policy:
// each field of a source, operation or condition becomes an L4Match that
// reads one attribute of the flow, or, where plaintext UDP cannot show
// what the field needs, an undecidable match, decided by the policy's
// action (fail closed; the agent's l4policy.go says how).

// L4Action is an AuthorizationPolicy's action.
type L4Action uint8

// Actions, as Istio's.
const (
	L4Allow L4Action = iota + 1
	L4Deny
	L4Audit
	L4Custom
)

func (a L4Action) String() string {
	switch a {
	case L4Allow:
		return "ALLOW"
	case L4Deny:
		return "DENY"
	case L4Audit:
		return "AUDIT"
	case L4Custom:
		return "CUSTOM"
	}
	return fmt.Sprintf("L4Action(%d)", uint8(a))
}

// L4Policy is an AuthorizationPolicy compiled for plaintext UDP flows.
type L4Policy struct {
	// Name is the policy's "namespace/name".
	Name   string
	Action L4Action
	// Rules: the policy matches when any rule does; none matches
	// nothing.
	Rules []L4Rule
}

// L4Rule matches when any From source, any To operation and every When
// match hold; an empty list matches anything. A source or operation
// holds when every one of its matches does.
type L4Rule struct {
	From [][]L4Match
	To   [][]L4Match
	When []L4Match
}

// L4Attr is what of a flow an L4Match reads.
type L4Attr uint8

// Attributes.
const (
	// AttrUndecidable: the field needs what a plaintext UDP flow does not
	// carry (a principal, a request principal, a service account, an
	// HTTP host, method or path, a condition key on any of them), or a
	// value that does not parse. It matches or not by the policy's
	// action, never by the flow.
	AttrUndecidable L4Attr = iota
	// AttrSourceIP: ipBlocks, remoteIpBlocks, source.ip, remote.ip
	// (there is no proxy in front of a UDP flow: the remote is the
	// source).
	AttrSourceIP
	// AttrSourceNamespace: namespaces, source.namespace: the namespace of
	// the mesh pod holding the source IP (FDS host routes' identities);
	// undecidable for a source that is not a mesh pod.
	AttrSourceNamespace
	// AttrDestIP: destination.ip.
	AttrDestIP
	// AttrDestPort: ports, destination.port.
	AttrDestPort
)

// L4Match is one field of a rule: it holds when any of its values
// matches the flow's attribute, or, with Not, when none does.
type L4Match struct {
	Attr L4Attr
	Not  bool
	// Prefixes (AttrSourceIP, AttrDestIP), Ports (AttrDestPort) or
	// Patterns (AttrSourceNamespace: Istio's wildcards, "*" for any
	// non-empty value, "*x" a suffix, "x*" a prefix) are the values.
	Prefixes []netip.Prefix
	Ports    []uint16
	Patterns []string
	// Field names the field as written ("from[0].source.principals"),
	// for decisions' logs.
	Field string
}

// coversPort reports whether policies put a port in the punt set: any
// policy but AUDIT ones (which change no verdict) needs a decision.
func coversPort(ps []L4Policy) bool {
	for _, p := range ps {
		if p.Action != L4Audit {
			return true
		}
	}
	return false
}

// l4Policies compiles a port policy's authz. A TCP port with policies is
// refused (the slow path authorizes TCP: the controller sends none), as
// is an action it does not know. A value that does not parse (a CIDR, a
// port) makes its field undecidable rather than refusing the table, as
// the controller's RBAC translation makes it unsupported: the slow path
// and the punt path then decide alike.
func l4Policies(pp *fibv1.PortPolicy) ([]L4Policy, error) {
	if len(pp.GetAuthz()) == 0 {
		return nil, nil
	}
	if pp.GetProtocol() != fibv1.Protocol_UDP {
		return nil, fmt.Errorf("authz: set on a %s port: want UDP ports only (the slow path authorizes TCP)", pp.GetProtocol())
	}
	out := make([]L4Policy, 0, len(pp.GetAuthz()))
	for i, ap := range pp.GetAuthz() {
		where := fmt.Sprintf("authz[%d] (%s/%s)", i, ap.GetNamespace(), ap.GetName())
		p := L4Policy{Name: ap.GetNamespace() + "/" + ap.GetName()}
		switch ap.GetAction() {
		case fibv1.AuthzAction_ALLOW:
			p.Action = L4Allow
		case fibv1.AuthzAction_DENY:
			p.Action = L4Deny
		case fibv1.AuthzAction_AUDIT:
			p.Action = L4Audit
		case fibv1.AuthzAction_CUSTOM:
			p.Action = L4Custom
		default:
			return nil, fmt.Errorf("%s.action %s: want ALLOW, DENY, AUDIT or CUSTOM", where, ap.GetAction())
		}
		for j, r := range ap.GetRules() {
			p.Rules = append(p.Rules, l4Rule(r, fmt.Sprintf("rules[%d]", j)))
		}
		out = append(out, p)
	}
	return out, nil
}

// l4Matches collects a source's or operation's matches: add keeps what
// undecidable and values return when their field is set.
type l4Matches []L4Match

func (ms *l4Matches) add(m L4Match, ok bool) {
	if ok {
		*ms = append(*ms, m)
	}
}

func l4Rule(r *fibv1.AuthzRule, where string) L4Rule {
	var out L4Rule
	for i, s := range r.GetFrom() {
		w := fmt.Sprintf("%s.from[%d].source.", where, i)
		var ms l4Matches
		add := ms.add
		add(undecidable(w+"principals", s.GetPrincipals()))
		add(undecidable(w+"notPrincipals", s.GetNotPrincipals()))
		add(undecidable(w+"requestPrincipals", s.GetRequestPrincipals()))
		add(undecidable(w+"notRequestPrincipals", s.GetNotRequestPrincipals()))
		add(undecidable(w+"serviceAccounts", s.GetServiceAccounts()))
		add(undecidable(w+"notServiceAccounts", s.GetNotServiceAccounts()))
		add(values(w+"namespaces", AttrSourceNamespace, false, s.GetNamespaces()))
		add(values(w+"notNamespaces", AttrSourceNamespace, true, s.GetNotNamespaces()))
		add(values(w+"ipBlocks", AttrSourceIP, false, s.GetIpBlocks()))
		add(values(w+"notIpBlocks", AttrSourceIP, true, s.GetNotIpBlocks()))
		add(values(w+"remoteIpBlocks", AttrSourceIP, false, s.GetRemoteIpBlocks()))
		add(values(w+"notRemoteIpBlocks", AttrSourceIP, true, s.GetNotRemoteIpBlocks()))
		out.From = append(out.From, ms)
	}
	for i, o := range r.GetTo() {
		w := fmt.Sprintf("%s.to[%d].operation.", where, i)
		var ms l4Matches
		add := ms.add
		add(undecidable(w+"hosts", o.GetHosts()))
		add(undecidable(w+"notHosts", o.GetNotHosts()))
		add(undecidable(w+"methods", o.GetMethods()))
		add(undecidable(w+"notMethods", o.GetNotMethods()))
		add(undecidable(w+"paths", o.GetPaths()))
		add(undecidable(w+"notPaths", o.GetNotPaths()))
		add(values(w+"ports", AttrDestPort, false, o.GetPorts()))
		add(values(w+"notPorts", AttrDestPort, true, o.GetNotPorts()))
		out.To = append(out.To, ms)
	}
	for i, c := range r.GetWhen() {
		w := fmt.Sprintf("%s.when[%d]", where, i)
		var attr L4Attr
		switch c.GetKey() {
		case "source.ip", "remote.ip":
			attr = AttrSourceIP
		case "source.namespace":
			attr = AttrSourceNamespace
		case "destination.ip":
			attr = AttrDestIP
		case "destination.port":
			attr = AttrDestPort
		default: // source.principal, request.*, connection.sni, ...
			out.When = append(out.When, L4Match{Attr: AttrUndecidable, Field: fmt.Sprintf("%s (key %q)", w, c.GetKey())})
			continue
		}
		if m, ok := values(w+".values", attr, false, c.GetValues()); ok {
			out.When = append(out.When, m)
		}
		if m, ok := values(w+".notValues", attr, true, c.GetNotValues()); ok {
			out.When = append(out.When, m)
		}
	}
	return out
}

// undecidable is the match of a field plaintext UDP cannot decide; ok is
// false when the field is not set.
func undecidable(field string, vs []string) (L4Match, bool) {
	return L4Match{Attr: AttrUndecidable, Field: field}, len(vs) > 0
}

// values compiles a field's values for attr; a value that does not parse
// makes the whole field undecidable, negated or not. ok is false when
// the field is not set.
func values(field string, attr L4Attr, not bool, vs []string) (L4Match, bool) {
	if len(vs) == 0 {
		return L4Match{}, false
	}
	m := L4Match{Attr: attr, Not: not, Field: field}
	for _, v := range vs {
		switch attr {
		case AttrSourceIP, AttrDestIP:
			p, err := parseBlock(v)
			if err != nil {
				return L4Match{Attr: AttrUndecidable, Field: fmt.Sprintf("%s (%q: %v)", field, v, err)}, true
			}
			m.Prefixes = append(m.Prefixes, p)
		case AttrDestPort:
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return L4Match{Attr: AttrUndecidable, Field: fmt.Sprintf("%s (%q: not a port)", field, v)}, true
			}
			m.Ports = append(m.Ports, uint16(n))
		case AttrSourceNamespace:
			m.Patterns = append(m.Patterns, v)
		}
	}
	return m, true
}

// parseBlock reads Istio's "IP" or "CIDR".
func parseBlock(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
