package agent

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// The Agent lists its FIB's service VIPs on the admin API.
var _ admin.ServiceSource = (*Agent)(nil)

// Services implements admin.ServiceSource: the service VIPs the FIB
// holds, with their backends' weights and nodes from the flow tables,
// each backend's Maglev slots and share of the table in the map, and the
// live flows of this node's FIB per backend; then the services of the
// flow tables the FIB does not hold yet, with why.
func (a *Agent) Services() ([]admin.Service, error) {
	st := a.rec.Status()
	var desired map[fib.ServiceKey]reconcile.Service
	if d := a.rec.Desired(); d != nil {
		desired = d.Services
	}
	flows, err := a.fib.Flows.List()
	if err != nil {
		return nil, fmt.Errorf("services: list the flow entries: %w", err)
	}
	return serviceInfo(st.Services, desired, st.Pending, flows), nil
}

// serviceInfo joins the tables the FIB holds (held), the services the
// flow tables ask for (desired), what is pending and the flow entries
// into the admin API's view, in VIP, port, protocol order.
func serviceInfo(held []fib.ServiceEntry, desired map[fib.ServiceKey]reconcile.Service, pending map[string]string, flows []fib.FlowEntry) []admin.Service {
	// Live flows per service and backend: the forward entries, whose
	// DNAT names the backend.
	live := map[fib.ServiceKey]map[fib.Backend]int{}
	for _, e := range flows {
		k, b, _, _, ok := e.ServiceFlow()
		if !ok {
			continue
		}
		if live[k] == nil {
			live[k] = map[fib.Backend]int{}
		}
		live[k][b]++
	}
	out := make([]admin.Service, 0, len(held))
	seen := map[fib.ServiceKey]bool{}
	for _, e := range held {
		seen[e.Key] = true
		want := desired[e.Key]
		s := newService(e.Key, want.Hostname, pending)
		s.Slots = len(e.Table)
		backends, slots, shares := reconcile.TableShares(e.Table)
		inTable := map[fib.Backend]bool{}
		for i, b := range backends {
			inTable[b] = true
			sb := admin.ServiceBackend{Addr: netip.AddrPortFrom(b.Addr, b.Port), Slots: slots[i], Share: shares[i], Flows: live[e.Key][b]}
			for _, wb := range want.Backends {
				if wb.Backend == b {
					sb.Node, sb.Weight = wb.Node, max(wb.Weight, 1)
				}
			}
			s.Backends = append(s.Backends, sb)
		}
		// Backends that left the table but still have flows here (until
		// the agent moves them).
		var left []admin.ServiceBackend
		for b, n := range live[e.Key] {
			if !inTable[b] {
				left = append(left, admin.ServiceBackend{Addr: netip.AddrPortFrom(b.Addr, b.Port), Flows: n})
			}
		}
		slices.SortFunc(left, func(x, y admin.ServiceBackend) int { return x.Addr.Compare(y.Addr) })
		s.Backends = append(s.Backends, left...)
		for _, n := range live[e.Key] {
			s.Flows += n
		}
		out = append(out, s)
	}
	for k, want := range desired {
		if seen[k] {
			continue
		}
		s := newService(k, want.Hostname, pending)
		if s.Pending == "" {
			s.Pending = "not written to the FIB yet"
		}
		for _, wb := range want.Backends {
			s.Backends = append(s.Backends, admin.ServiceBackend{Addr: netip.AddrPortFrom(wb.Addr, wb.Port), Node: wb.Node, Weight: max(wb.Weight, 1)})
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y admin.Service) int {
		return cmp.Or(x.VIP.Compare(y.VIP), cmp.Compare(x.Port, y.Port), cmp.Compare(x.Proto, y.Proto))
	})
	return out
}

func newService(k fib.ServiceKey, hostname string, pending map[string]string) admin.Service {
	return admin.Service{VIP: k.VIP, Port: k.Port, Proto: k.Proto.String(), Hostname: hostname,
		Backends: []admin.ServiceBackend{}, Pending: pending[reconcile.PendingService(k)]}
}
