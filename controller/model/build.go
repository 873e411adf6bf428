package model

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"slices"
	"strings"

	securityv1beta1 "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Build makes the model of s. prev, the model in force, only numbers the
// new one and says what changed; it is not modified. Build never modifies
// the snapshot.
func Build(s *config.Snapshot, prev *Model, o Options) (*Model, error) {
	o = o.withDefaults()
	var (
		services []*corev1.Service
		eps      []*discoveryv1.EndpointSlice
		pods     []*corev1.Pod
		nodes    []*corev1.Node
		pas      []*securityv1.PeerAuthentication
		vss      []*networkingv1.VirtualService
		drs      []*networkingv1.DestinationRule
		ses      []*networkingv1.ServiceEntry
		aps      []*securityv1.AuthorizationPolicy
	)
	for _, r := range s.Resources {
		switch obj := r.Object.(type) {
		case *corev1.Service:
			services = append(services, obj)
		case *discoveryv1.EndpointSlice:
			eps = append(eps, obj)
		case *corev1.Pod:
			pods = append(pods, obj)
		case *corev1.Node:
			nodes = append(nodes, obj)
		case *securityv1.PeerAuthentication:
			pas = append(pas, obj)
		case *networkingv1.VirtualService:
			vss = append(vss, obj)
		case *networkingv1.DestinationRule:
			drs = append(drs, obj)
		case *networkingv1.ServiceEntry:
			ses = append(ses, obj)
		case *securityv1.AuthorizationPolicy:
			aps = append(aps, obj)
		}
	}
	m := &Model{TrustDomain: o.TrustDomain}

	byPod := map[string]*Workload{}
	for _, p := range pods {
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		w := &Workload{
			Namespace: p.Namespace, Name: p.Name, IP: p.Status.PodIP, Node: p.Spec.NodeName,
			Labels: p.Labels, ServiceAccount: sa, Identity: Identity(o.TrustDomain, p.Namespace, sa),
		}
		resolveMTLS(w, pas)
		m.Workloads = append(m.Workloads, w)
		byPod[p.Namespace+"/"+p.Name] = w
	}
	slices.SortFunc(m.Workloads, func(a, b *Workload) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})

	for _, n := range nodes {
		nd := &Node{Name: n.Name, PodCIDRs: n.Spec.PodCIDRs}
		if len(nd.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
			nd.PodCIDRs = []string{n.Spec.PodCIDR}
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && nd.InternalIP == "" {
				nd.InternalIP = a.Address
			}
		}
		m.Nodes = append(m.Nodes, nd)
	}
	slices.SortFunc(m.Nodes, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })

	for _, svc := range services {
		ms := &Service{
			Hostname:  svc.Name + "." + svc.Namespace + ".svc." + o.DomainSuffix,
			Namespace: svc.Namespace, Name: svc.Name,
		}
		for _, ip := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
			if ip != "" && ip != corev1.ClusterIPNone && !slices.Contains(ms.VIPs, ip) {
				ms.VIPs = append(ms.VIPs, ip)
			}
		}
		for _, p := range svc.Spec.Ports {
			ms.Ports = append(ms.Ports, Port{Name: p.Name, Port: p.Port, Protocol: protocolOf(p)})
		}
		for _, es := range eps {
			if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name {
				continue
			}
			for _, e := range es.Endpoints {
				for _, addr := range e.Addresses {
					ep := &Endpoint{Address: addr, Ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
					if e.NodeName != nil {
						ep.Node = *e.NodeName
					}
					if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
						ns := cmp.Or(e.TargetRef.Namespace, es.Namespace)
						if w := byPod[ns+"/"+e.TargetRef.Name]; w != nil {
							ep.Workload, ep.Identity, ep.Labels = ns+"/"+w.Name, w.Identity, w.Labels
							ep.Node = cmp.Or(ep.Node, w.Node)
						}
					}
					ms.Endpoints = append(ms.Endpoints, ep)
				}
			}
		}
		slices.SortFunc(ms.Endpoints, func(a, b *Endpoint) int { return strings.Compare(a.Address, b.Address) })
		m.Services = append(m.Services, ms)
	}
	for _, se := range ses {
		for _, h := range se.Spec.GetHosts() {
			ms := &Service{Hostname: h, Namespace: se.Namespace, Name: se.Name, ServiceEntry: true, VIPs: se.Spec.GetAddresses(), Endpoints: []*Endpoint{}}
			for _, p := range se.Spec.GetPorts() {
				pr := protocolByName(strings.ToLower(p.GetProtocol()))
				if p.GetProtocol() == "" {
					pr = protocolOf(corev1.ServicePort{Name: p.GetName()})
				}
				ms.Ports = append(ms.Ports, Port{Name: p.GetName(), Port: int32(p.GetNumber()), Protocol: pr})
			}
			m.Services = append(m.Services, ms)
		}
	}
	slices.SortFunc(m.Services, func(a, b *Service) int {
		return cmp.Or(strings.Compare(a.Hostname, b.Hostname), strings.Compare(a.Namespace, b.Namespace))
	})
	for _, vs := range vss {
		m.Routes = append(m.Routes, buildRoute(vs, o.DomainSuffix))
	}
	for _, dr := range drs {
		m.DestinationPolicies = append(m.DestinationPolicies, buildDestinationPolicy(dr, o.DomainSuffix))
	}
	for _, ap := range aps {
		m.AuthzPolicies = append(m.AuthzPolicies, buildAuthz(ap, m.Workloads))
	}
	byNSName := func(ans, an, bns, bn string) int { return cmp.Or(strings.Compare(ans, bns), strings.Compare(an, bn)) }
	slices.SortFunc(m.Routes, func(a, b *Route) int { return byNSName(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(m.DestinationPolicies, func(a, b *DestinationPolicy) int { return byNSName(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(m.AuthzPolicies, func(a, b *AuthzPolicy) int { return byNSName(a.Namespace, a.Name, b.Namespace, b.Name) })

	m.Version = 1
	if prev != nil {
		m.Version = prev.Version + 1
	}
	m.Change = diff(prev, m)
	return m, nil
}

// protocolOf decides a port's protocol the way Istio does.
func protocolOf(p corev1.ServicePort) Protocol {
	if p.Protocol == corev1.ProtocolUDP {
		return ProtocolUDP
	}
	if p.AppProtocol != nil {
		if pr := protocolByName(strings.ToLower(*p.AppProtocol)); pr != ProtocolUnknown {
			return pr
		}
	}
	name := strings.ToLower(p.Name)
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	return protocolByName(name)
}

func protocolByName(n string) Protocol {
	switch n {
	case "http", "http-web":
		return ProtocolHTTP
	case "http2", "kubernetes.io/h2c":
		return ProtocolHTTP2
	case "grpc", "grpc-web":
		return ProtocolGRPC
	case "https":
		return ProtocolHTTPS
	case "tls":
		return ProtocolTLS
	case "tcp", "mongo", "mysql", "redis":
		return ProtocolTCP
	}
	return ProtocolUnknown
}

// resolveMTLS sets the workload's mTLS modes from the PeerAuthentications
// with Istio's precedence: a policy selecting the workload in its
// namespace, over the namespace's policy without a selector, over the
// mesh-wide policy (root namespace, no selector). UNSET inherits from the
// level above; with nothing set the mode is PERMISSIVE. Port-level
// settings come from the workload-selecting policy. Where two policies
// compete at one level, the first by name wins (analyze reports the
// conflict, FM0002).
func resolveMTLS(w *Workload, pas []*securityv1.PeerAuthentication) {
	var mesh, ns, wl *securityv1.PeerAuthentication
	first := func(cur, c *securityv1.PeerAuthentication) *securityv1.PeerAuthentication {
		if cur == nil || c.Name < cur.Name {
			return c
		}
		return cur
	}
	for _, pa := range pas {
		sel := pa.Spec.GetSelector()
		switch {
		case sel == nil && pa.Namespace == RootNamespace:
			mesh = first(mesh, pa)
		case sel == nil && pa.Namespace == w.Namespace:
			ns = first(ns, pa)
		case sel != nil && pa.Namespace == w.Namespace && len(sel.GetMatchLabels()) > 0 &&
			labels.SelectorFromSet(sel.GetMatchLabels()).Matches(labels.Set(w.Labels)):
			wl = first(wl, pa)
		}
	}
	mode := ModePermissive
	for _, pa := range []*securityv1.PeerAuthentication{mesh, ns, wl} {
		if pa != nil {
			mode = apply(mode, pa.Spec.GetMtls().GetMode())
		}
	}
	w.DefaultMode = mode
	if wl != nil {
		for port, pm := range wl.Spec.GetPortLevelMtls() {
			if m := apply(mode, pm.GetMode()); m != mode {
				if w.PortModes == nil {
					w.PortModes = map[uint32]Mode{}
				}
				w.PortModes[port] = m
			}
		}
	}
}

func apply(parent Mode, m securityv1beta1.PeerAuthentication_MutualTLS_Mode) Mode {
	switch m {
	case securityv1beta1.PeerAuthentication_MutualTLS_STRICT:
		return ModeStrict
	case securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE:
		return ModePermissive
	case securityv1beta1.PeerAuthentication_MutualTLS_DISABLE:
		return ModeDisable
	}
	return parent
}

// Dump renders the model as indented JSON, stable across runs: for
// golden files and the controller's debug endpoint.
func (m *Model) Dump() ([]byte, error) { return json.MarshalIndent(m, "", "  ") }

func fingerprint(v any) [32]byte {
	b, _ := json.Marshal(v)
	return sha256.Sum256(b)
}

// diff says which services and nodes differ between prev and m.
func diff(prev, m *Model) Change {
	if prev == nil {
		ch := Change{Full: true}
		for _, s := range m.Services {
			ch.Services = append(ch.Services, s.Hostname)
		}
		for _, n := range m.Nodes {
			ch.Nodes = append(ch.Nodes, n.Name)
		}
		return ch
	}
	nodes := map[string]bool{}
	var svcs []string
	old := map[string]*Service{}
	for _, s := range prev.Services {
		old[s.Hostname] = s
	}
	touch := func(s *Service) {
		if s == nil {
			return
		}
		for _, e := range s.Endpoints {
			if e.Node != "" {
				nodes[e.Node] = true
			}
		}
	}
	for _, s := range m.Services {
		o := old[s.Hostname]
		delete(old, s.Hostname)
		if o == nil || fingerprint(o) != fingerprint(s) {
			svcs = append(svcs, s.Hostname)
			touch(o)
			touch(s)
		}
	}
	for h, o := range old {
		svcs = append(svcs, h)
		touch(o)
	}
	oldW := map[string]*Workload{}
	for _, w := range prev.Workloads {
		oldW[w.Namespace+"/"+w.Name] = w
	}
	for _, w := range m.Workloads {
		k := w.Namespace + "/" + w.Name
		o := oldW[k]
		delete(oldW, k)
		if o == nil || fingerprint(o) != fingerprint(w) {
			if w.Node != "" {
				nodes[w.Node] = true
			}
			if o != nil && o.Node != "" {
				nodes[o.Node] = true
			}
		}
	}
	for _, o := range oldW {
		if o.Node != "" {
			nodes[o.Node] = true
		}
	}
	oldN := map[string]*Node{}
	for _, n := range prev.Nodes {
		oldN[n.Name] = n
	}
	for _, n := range m.Nodes {
		if o := oldN[n.Name]; o == nil || fingerprint(o) != fingerprint(n) {
			nodes[n.Name] = true
		}
		delete(oldN, n.Name)
	}
	for name := range oldN {
		nodes[name] = true
	}
	// Routing policy is applied where clients are, which can be any
	// node: a changed route or destination policy changes its hosts for
	// every node. An authorization policy is enforced at the workloads
	// it selects.
	routeHosts := map[string]bool{}
	oldR := map[string][32]byte{}
	for _, r := range prev.Routes {
		oldR[r.Namespace+"/"+r.Name] = fingerprint(r)
	}
	for _, r := range m.Routes {
		k := r.Namespace + "/" + r.Name
		if f, ok := oldR[k]; !ok || f != fingerprint(r) {
			for _, h := range r.Hosts {
				routeHosts[h] = true
			}
		}
		delete(oldR, k)
	}
	for _, r := range prev.Routes {
		if _, gone := oldR[r.Namespace+"/"+r.Name]; gone {
			for _, h := range r.Hosts {
				routeHosts[h] = true
			}
		}
	}
	oldD := map[string][32]byte{}
	for _, d := range prev.DestinationPolicies {
		oldD[d.Namespace+"/"+d.Name] = fingerprint(d)
	}
	for _, d := range m.DestinationPolicies {
		k := d.Namespace + "/" + d.Name
		if f, ok := oldD[k]; !ok || f != fingerprint(d) {
			routeHosts[d.Host] = true
		}
		delete(oldD, k)
	}
	for _, d := range prev.DestinationPolicies {
		if _, gone := oldD[d.Namespace+"/"+d.Name]; gone {
			routeHosts[d.Host] = true
		}
	}
	if len(routeHosts) > 0 {
		for h := range routeHosts {
			if !slices.Contains(svcs, h) {
				svcs = append(svcs, h)
			}
		}
		for _, n := range m.Nodes {
			nodes[n.Name] = true
		}
		for _, w := range m.Workloads {
			if w.Node != "" {
				nodes[w.Node] = true
			}
		}
	}
	nodeOf := map[string]string{}
	for _, w := range append(slices.Clone(prev.Workloads), m.Workloads...) {
		nodeOf[w.Namespace+"/"+w.Name] = w.Node
	}
	oldA := map[string]*AuthzPolicy{}
	for _, a := range prev.AuthzPolicies {
		oldA[a.Namespace+"/"+a.Name] = a
	}
	touchAuthz := func(a *AuthzPolicy) {
		for _, w := range a.Workloads {
			if n := nodeOf[w]; n != "" {
				nodes[n] = true
			}
		}
	}
	for _, a := range m.AuthzPolicies {
		k := a.Namespace + "/" + a.Name
		if o := oldA[k]; o == nil || fingerprint(o) != fingerprint(a) {
			touchAuthz(a)
			if o != nil {
				touchAuthz(o)
			}
		}
		delete(oldA, k)
	}
	for _, o := range oldA {
		touchAuthz(o)
	}
	ch := Change{Services: svcs}
	for n := range nodes {
		ch.Nodes = append(ch.Nodes, n)
	}
	slices.Sort(ch.Services)
	slices.Sort(ch.Nodes)
	return ch
}
