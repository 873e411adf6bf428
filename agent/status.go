package agent

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/fibmesh/fibmesh/agent/admin"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// The Agent is the admin API's Source.
var _ admin.Source = (*Agent)(nil)

// ConfigDump implements admin.Source: per subscribed type, the version
// accepted, the resources in force (protojson with "@type") and the last
// NACK if it came after.
func (a *Agent) ConfigDump() admin.ConfigDump {
	var d admin.ConfigDump
	for _, s := range xdsapi.AgentSubscriptions(a.cfg.Node) {
		tc := admin.TypeConfig{Type: xdsapi.ShortType(s.TypeURL), TypeURL: s.TypeURL, VersionInfo: a.xds.Version(s.TypeURL), Resources: []admin.Resource{}}
		a.mu.Lock()
		if ts := a.types[s.TypeURL]; ts != nil {
			if !ts.updated.IsZero() {
				u := ts.updated
				tc.LastUpdated = &u
			}
			if ts.nack != nil {
				n := *ts.nack
				tc.ErrorState = &n
			}
		}
		a.mu.Unlock()
		res := a.xds.Resources(s.TypeURL)
		names := make([]string, 0, len(res))
		for n := range res {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			raw := json.RawMessage(`null`)
			if any, err := anypb.New(res[n]); err == nil {
				if b, err := protojson.Marshal(any); err == nil {
					raw = b
				}
			}
			tc.Resources = append(tc.Resources, admin.Resource{Name: n, Resource: raw})
		}
		d.Configs = append(d.Configs, tc)
	}
	return d
}

// Pods implements admin.Source: the enrolled pods with their SVIDs.
func (a *Agent) Pods() []admin.PodInfo {
	d := a.rec.Desired()
	var out []admin.PodInfo
	for _, p := range a.enrol.Pods() {
		pi := admin.PodInfo{Namespace: p.Namespace, Name: p.Name, Netns: p.Netns, Enrolled: p.Enrolled, Identity: p.Identity}
		if d != nil {
			if fp, ok := d.Pods[p.Key()]; ok {
				pi.IP = fp.IP.String()
				if fp.Identity != "" {
					pi.Identity = fp.Identity
				}
			} else {
				pi.Error = fmt.Sprintf("not in node %s's flow table: no SVID is kept for it", a.cfg.Node)
			}
		}
		if r := a.svids.Get(p.Namespace, p.Name); r != nil {
			if s := r.Current(); s != nil {
				leaf := s.Chain[0]
				pi.Identity = s.ID.String()
				pi.SVID = &admin.SVIDInfo{SpiffeID: s.ID.String(), Serial: leaf.SerialNumber.Text(16), NotBefore: leaf.NotBefore, NotAfter: s.NotAfter, IssuedAt: s.IssuedAt}
			}
			if err := r.Err(); err != nil {
				pi.Error = err.Error()
			}
		}
		out = append(out, pi)
	}
	return out
}

// FIBSummary implements admin.Source.
func (a *Agent) FIBSummary() (admin.FIB, error) {
	st := a.rec.Status()
	out := admin.FIB{Versions: st.Versions, Attached: st.Attached, Pending: st.Pending, Counters: map[string]admin.Counter{},
		Writes: admin.Writes{RoutePuts: st.Writes.RoutePuts, RouteDeletes: st.Writes.RouteDeletes, PolicyPuts: st.Writes.PolicyPuts, PolicyDeletes: st.Writes.PolicyDeletes,
			ServicePuts: st.Writes.ServicePuts, ServiceDeletes: st.Writes.ServiceDeletes, FlowsMoved: st.Writes.FlowsMoved}}
	out.Routes = make([]admin.Route, 0, len(st.Routes))
	for _, r := range st.Routes {
		out.Routes = append(out.Routes, admin.Route{Prefix: r.Prefix.String(), Ifindex: r.NextHop.Ifindex, SrcMAC: r.NextHop.SrcMAC.String(), DstMAC: r.NextHop.DstMAC.String(), PuntNew: r.NextHop.PuntNew})
	}
	out.Policies = make([]admin.Policy, 0, len(st.Policies))
	for _, p := range st.Policies {
		out.Policies = append(out.Policies, admin.Policy{Addr: p.Key.Addr.String(), Port: p.Key.Port, Proto: p.Key.Proto.String(), Mode: p.Mode.String()})
	}
	cs, err := a.fib.Stats.Read()
	if err != nil {
		return out, err
	}
	for i, c := range cs {
		out.Counters[fib.Reason(i).String()] = admin.Counter{Packets: c.Packets, Bytes: c.Bytes}
	}
	flows, err := a.fib.Flows.List()
	if err != nil {
		return out, err
	}
	out.Flows = len(flows)
	return out, nil
}

// Ready implements admin.Source: ready once the first flow table from
// the controller is applied.
func (a *Agent) Ready() (bool, string) {
	a.mu.Lock()
	ready := a.ready
	a.mu.Unlock()
	if ready {
		return true, ""
	}
	return false, "no flow table from the controller applied yet (" + strings.TrimSpace(a.connSummary()) + ")"
}
