package fds

import (
	"cmp"
	"slices"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// authz is the L4 policy of a workload's UDP ports (PortPolicy.authz):
// every AuthorizationPolicy that applies to it, by namespace and name, its
// rules as written. The agent decides the port's punted flows from them;
// what plaintext UDP cannot show (principals, HTTP fields) is its
// business, so that FDS says what the user wrote and no more. nil for a
// pod outside the mesh: as in Istio, policy applies to the mesh's pods
// only (and its ports are DISABLE: nothing is punted for it).
func authz(m *model.Model, w *model.Workload) []*fibv1.AuthzPolicy {
	if w.OutsideMesh {
		return nil
	}
	ps := m.AuthzFor(w.Namespace + "/" + w.Name)
	if len(ps) == 0 {
		return nil
	}
	out := make([]*fibv1.AuthzPolicy, 0, len(ps))
	for _, p := range ps {
		out = append(out, authzPolicy(p))
	}
	slices.SortFunc(out, func(a, b *fibv1.AuthzPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func authzPolicy(p *model.AuthzPolicy) *fibv1.AuthzPolicy {
	out := &fibv1.AuthzPolicy{Namespace: p.Namespace, Name: p.Name, Action: authzAction(p.Action)}
	for _, r := range p.Rules {
		fr := &fibv1.AuthzRule{}
		for _, s := range r.From {
			fr.From = append(fr.From, &fibv1.AuthzSource{
				Principals: s.Principals, NotPrincipals: s.NotPrincipals,
				RequestPrincipals: s.RequestPrincipals, NotRequestPrincipals: s.NotRequestPrincipals,
				Namespaces: s.Namespaces, NotNamespaces: s.NotNamespaces,
				ServiceAccounts: s.ServiceAccounts, NotServiceAccounts: s.NotServiceAccounts,
				IpBlocks: s.IPBlocks, NotIpBlocks: s.NotIPBlocks,
				RemoteIpBlocks: s.RemoteIPBlocks, NotRemoteIpBlocks: s.NotRemoteIPBlocks,
			})
		}
		for _, o := range r.To {
			fr.To = append(fr.To, &fibv1.AuthzOperation{
				Hosts: o.Hosts, NotHosts: o.NotHosts, Ports: o.Ports, NotPorts: o.NotPorts,
				Methods: o.Methods, NotMethods: o.NotMethods, Paths: o.Paths, NotPaths: o.NotPaths,
			})
		}
		for _, c := range r.When {
			fr.When = append(fr.When, &fibv1.AuthzCondition{Key: c.Key, Values: c.Values, NotValues: c.NotValues})
		}
		out.Rules = append(out.Rules, fr)
	}
	return out
}

// authzAction maps the model's action; an action the model does not know
// becomes CUSTOM, which the agent refuses (fail closed).
func authzAction(a string) fibv1.AuthzAction {
	switch a {
	case "", "ALLOW":
		return fibv1.AuthzAction_ALLOW
	case "DENY":
		return fibv1.AuthzAction_DENY
	case "AUDIT":
		return fibv1.AuthzAction_AUDIT
	}
	return fibv1.AuthzAction_CUSTOM
}
