package model

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/fibmesh/fibmesh/controller/config"
)

// inputs are a snapshot's objects by kind, in snapshot order.
type inputs struct {
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
	pods     []*corev1.Pod
	nodes    []*corev1.Node
	// namespaces are read for their labels only (CaptureOff).
	namespaces []*corev1.Namespace
	pas        []*securityv1.PeerAuthentication
	vss        []*networkingv1.VirtualService
	drs        []*networkingv1.DestinationRule
	ses        []*networkingv1.ServiceEntry
	aps        []*securityv1.AuthorizationPolicy
}

// Build makes the model of s. prev, the model in force (nil for the
// first), numbers the new one (prev.Version+1, else
// Options.FirstVersion) and is
// compared with it for Change; it is not modified. Build never modifies
// the snapshot, and the model shares no memory with it (the model keeps
// references to the snapshot's objects only as keys of what it reuses).
//
// A workload of prev built from the very pod object s still holds (a
// store shares unchanged objects between snapshots, and never modifies
// them), with the same namespaces, PeerAuthentications and trust domain,
// is the new model's too (the same *Workload), and so is a Service built
// from the very Service and EndpointSlice objects against the same
// workloads: a mesh of 10,000 pods is not rebuilt and compared pod by pod
// for one changed object. Models are
// never modified once built, so sharing workloads is safe. The error, wrapping
// ErrUnusable, is for input that makes a model impossible (see
// validate); the previous model should then stay in force.
func Build(s *config.Snapshot, prev *Model, o Options) (*Model, error) {
	o = o.withDefaults()
	var keys uint64
	if prev != nil {
		keys = prev.keys
	}
	in, keys, err := validate(s, o, keys)
	if err != nil {
		return nil, err
	}
	m := &Model{TrustDomain: o.TrustDomain, keys: keys}
	var before *workloadMemo
	if prev != nil {
		before = prev.memo
	}
	m.Workloads, m.MeshMTLS, m.NamespaceMTLS, m.NamespacesOutsideMesh, m.memo = buildWorkloads(in, o, before)
	m.Nodes = buildNodes(in.nodes)
	var services *serviceMemo
	if prev != nil {
		services = prev.services
	}
	m.Services, m.services = buildServices(in, m.Workloads, o, services)
	for _, vs := range in.vss {
		m.Routes = append(m.Routes, buildRoute(vs, o.DomainSuffix))
	}
	for _, dr := range in.drs {
		m.DestinationPolicies = append(m.DestinationPolicies, buildDestinationPolicy(dr, o.DomainSuffix))
	}
	for _, ap := range in.aps {
		m.AuthzPolicies = append(m.AuthzPolicies, buildAuthz(ap, m.Workloads))
	}
	slices.SortFunc(m.Routes, func(a, b *Route) int { return byNSName(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(m.DestinationPolicies, func(a, b *DestinationPolicy) int {
		return byNSName(a.Namespace, a.Name, b.Namespace, b.Name)
	})
	slices.SortFunc(m.AuthzPolicies, func(a, b *AuthzPolicy) int { return byNSName(a.Namespace, a.Name, b.Namespace, b.Name) })

	m.Version = max(o.FirstVersion, 1)
	if prev != nil {
		m.Version = prev.Version + 1
	}
	m.Change = diff(prev, m)
	return m, nil
}

func byNSName(ans, an, bns, bn string) int {
	return cmp.Or(strings.Compare(ans, bns), strings.Compare(an, bn))
}

// workloadMemo is what buildWorkloads needs to reuse a model's workloads:
// the inputs every workload depends on, and each workload by the pod
// object it was built from.
type workloadMemo struct {
	trustDomain string
	namespaces  []*corev1.Namespace
	pas         []*securityv1.PeerAuthentication
	byPod       map[*corev1.Pod]*Workload
	pods        []*corev1.Pod // in snapshot order
	sorted      []*Workload   // the workloads built from pods, sorted
	meshMode    Mode
	nsModes     map[string]Mode
	outside     []string
}

// buildWorkloads makes the workloads, sorted by namespace and name, with
// their identities and mTLS modes, and the mesh and namespace modes, and
// the namespaces outside the mesh. A pod outside the mesh (CaptureOff)
// has no identity and every port DISABLE. With before (the previous
// build's memo) made from the same namespaces, PeerAuthentications and
// trust domain, a pod object seen then gets the same *Workload.
func buildWorkloads(in *inputs, o Options, before *workloadMemo) ([]*Workload, Mode, map[string]Mode, []string, *workloadMemo) {
	if before != nil && (before.trustDomain != o.TrustDomain || !slices.Equal(before.namespaces, in.namespaces) || !slices.Equal(before.pas, in.pas)) {
		before = nil
	}
	if before != nil && slices.Equal(before.pods, in.pods) {
		// The very same pods: the very same workloads.
		return before.sorted, before.meshMode, before.nsModes, before.outside, before
	}
	after := &workloadMemo{trustDomain: o.TrustDomain, namespaces: in.namespaces, pas: in.pas, pods: in.pods,
		byPod: make(map[*corev1.Pod]*Workload, len(in.pods))}
	var pa *peerAuthn
	if before != nil {
		after.meshMode, after.nsModes, after.outside = before.meshMode, before.nsModes, before.outside
	} else {
		pa = indexPeerAuthn(in.pas)
		after.meshMode, after.nsModes = pa.meshMode(), pa.namespaceModes()
	}
	nsLabels := make(map[string]map[string]string, len(in.namespaces))
	for _, ns := range in.namespaces {
		nsLabels[ns.Name] = ns.Labels
		if _, off := CaptureOff(nil, nil, ns.Labels); off && before == nil {
			after.outside = append(after.outside, ns.Name)
		}
	}
	if before == nil {
		slices.Sort(after.outside)
	}
	ws := make([]*Workload, 0, len(in.pods))
	ids := map[[2]string]string{}
	for _, p := range in.pods {
		if w, ok := before.reuse(p); ok {
			after.byPod[p] = w
			ws = append(ws, w)
			continue
		}
		if pa == nil {
			pa = indexPeerAuthn(in.pas)
		}
		sa := cmp.Or(p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount, "default")
		// The pods of a service account share one identity string (a
		// string per pod was 0.4 MB at 10,000 pods).
		id, ok := ids[[2]string{p.Namespace, sa}]
		if !ok {
			id = Identity(o.TrustDomain, p.Namespace, sa)
			ids[[2]string{p.Namespace, sa}] = id
		}
		w := &Workload{
			Namespace: p.Namespace, Name: p.Name, IP: p.Status.PodIP, Node: p.Spec.NodeName,
			Labels: p.Labels, ServiceAccount: sa, Identity: id,
		}
		if why, off := CaptureOff(p.Labels, p.Annotations, nsLabels[p.Namespace]); off {
			w.Identity, w.DefaultMode, w.OutsideMesh, w.OutsideMeshBy = "", ModeDisable, true, why
		} else if p.Spec.HostNetwork {
			// It shares its node's network namespace and IP: nothing
			// captures for it alone, and the IP is not its identity.
			w.Identity, w.DefaultMode, w.OutsideMesh, w.OutsideMeshBy = "", ModeDisable, true, OutsideMeshHostNetwork
		} else {
			pa.resolve(w)
		}
		after.byPod[p] = w
		ws = append(ws, w)
	}
	byName := func(a, b *Workload) int { return byNSName(a.Namespace, a.Name, b.Namespace, b.Name) }
	if !slices.IsSortedFunc(ws, byName) {
		slices.SortFunc(ws, byName)
	}
	after.sorted = ws
	return ws, after.meshMode, after.nsModes, after.outside, after
}

// reuse is the workload built from pod p by the memo's build, if any.
func (wm *workloadMemo) reuse(p *corev1.Pod) (*Workload, bool) {
	if wm == nil {
		return nil, false
	}
	w, ok := wm.byPod[p]
	return w, ok
}

// buildNodes makes the nodes, sorted by name.
func buildNodes(nodes []*corev1.Node) []*Node {
	out := make([]*Node, 0, len(nodes))
	for _, n := range nodes {
		nd := &Node{Name: n.Name, PodCIDRs: slices.Clone(n.Spec.PodCIDRs)}
		if len(nd.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
			nd.PodCIDRs = []string{n.Spec.PodCIDR}
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && nd.InternalIP == "" {
				nd.InternalIP = a.Address
			}
		}
		out = append(out, nd)
	}
	slices.SortFunc(out, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// buildServices makes the Kubernetes Services with their endpoints, and
// a service per ServiceEntry host; sorted by hostname, Kubernetes
// Services before ServiceEntries, then by namespace and name.
func buildServices(in *inputs, workloads []*Workload, o Options, before *serviceMemo) ([]*Service, *serviceMemo) {
	if before != nil && (before.suffix != o.DomainSuffix || !sameList(before.workloads, workloads)) {
		before = nil
	}
	after := &serviceMemo{workloads: workloads, suffix: o.DomainSuffix, bySvc: make(map[*corev1.Service]builtService, len(in.services))}
	if before != nil {
		after.ix = before.ix // the same workloads: the same index
	}
	index := func() { // only when a service is built
		if after.ix == nil {
			after.ix = indexWorkloads(workloads)
		}
	}
	slicesOf := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range in.slices {
		if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
			k := es.Namespace + "/" + svc
			slicesOf[k] = append(slicesOf[k], es)
		}
	}
	out := make([]*Service, 0, len(in.services)+len(in.ses))
	for _, svc := range in.services {
		its := slicesOf[svc.Namespace+"/"+svc.Name]
		if b, ok := before.reuse(svc, its); ok {
			after.bySvc[svc] = b
			out = append(out, b.svc)
			continue
		}
		index()
		ms := &Service{
			Hostname:  svc.Name + "." + svc.Namespace + ".svc." + o.DomainSuffix,
			Namespace: svc.Namespace, Name: svc.Name, Endpoints: []*Endpoint{},
		}
		for _, ip := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
			if ip != "" && ip != corev1.ClusterIPNone && !slices.Contains(ms.VIPs, ip) {
				ms.VIPs = append(ms.VIPs, ip)
			}
		}
		for _, p := range svc.Spec.Ports {
			ms.Ports = append(ms.Ports, Port{Name: p.Name, Port: p.Port, Protocol: protocolOf(string(p.Protocol), p.AppProtocol, p.Name)})
		}
		for _, es := range its {
			var ports []EndpointPort
			for _, p := range es.Ports {
				ep := EndpointPort{Name: deref(p.Name), Port: deref(p.Port)}
				proto := corev1.ProtocolTCP
				if p.Protocol != nil {
					proto = *p.Protocol
				}
				ep.Protocol = protocolOf(string(proto), p.AppProtocol, ep.Name)
				ports = append(ports, ep)
			}
			slices.SortFunc(ports, func(a, b EndpointPort) int {
				return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Port, b.Port))
			})
			for _, e := range es.Endpoints {
				for _, addr := range e.Addresses {
					ep := &Endpoint{Address: addr, Ports: ports, Ready: e.Conditions.Ready == nil || *e.Conditions.Ready, Node: deref(e.NodeName)}
					var w *Workload
					if e.TargetRef != nil {
						if e.TargetRef.Kind == "Pod" {
							w = after.ix.byPod[cmp.Or(e.TargetRef.Namespace, es.Namespace)+"/"+e.TargetRef.Name]
						}
					} else if !after.ix.ambiguous[addr] {
						w = after.ix.byIP[addr]
					}
					if w != nil {
						ep.Workload, ep.Identity, ep.Labels = w.Namespace+"/"+w.Name, w.Identity, w.Labels
						ep.Node = cmp.Or(ep.Node, w.Node)
					}
					ms.Endpoints = append(ms.Endpoints, ep)
				}
			}
		}
		sortEndpoints(ms.Endpoints)
		after.bySvc[svc] = builtService{slices: its, svc: ms}
		out = append(out, ms)
	}
	for _, se := range in.ses {
		for _, h := range se.Spec.GetHosts() {
			out = append(out, buildServiceEntryHost(se, h, o.TrustDomain))
		}
	}
	slices.SortFunc(out, func(a, b *Service) int {
		se := func(s *Service) int {
			if s.ServiceEntry {
				return 1
			}
			return 0
		}
		return cmp.Or(strings.Compare(a.Hostname, b.Hostname), cmp.Compare(se(a), se(b)),
			strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, after
}

// serviceMemo is what buildServices needs to reuse a model's services:
// the workloads they were built against, and each Kubernetes Service's
// by the objects it was built from.
type serviceMemo struct {
	workloads []*Workload
	suffix    string
	bySvc     map[*corev1.Service]builtService
	ix        *workloadIndex // of workloads, made when a service is built
}

// workloadIndex finds an endpoint's workload by pod name or by IP.
type workloadIndex struct {
	byPod, byIP map[string]*Workload
	ambiguous   map[string]bool // IPs several workloads share
}

func indexWorkloads(workloads []*Workload) *workloadIndex {
	ix := &workloadIndex{byPod: make(map[string]*Workload, len(workloads)), byIP: make(map[string]*Workload, len(workloads)),
		ambiguous: map[string]bool{}}
	for _, w := range workloads {
		ix.byPod[w.Namespace+"/"+w.Name] = w
		if w.IP == "" {
			continue
		}
		if _, dup := ix.byIP[w.IP]; dup {
			ix.ambiguous[w.IP] = true // host-network pods share their node's IP
		}
		ix.byIP[w.IP] = w
	}
	return ix
}

// builtService is a Service built from a Kubernetes Service and these
// EndpointSlices.
type builtService struct {
	slices []*discoveryv1.EndpointSlice
	svc    *Service
}

// reuse is the service built from svc and these slices by the memo's
// build, if any.
func (sm *serviceMemo) reuse(svc *corev1.Service, its []*discoveryv1.EndpointSlice) (builtService, bool) {
	if sm == nil {
		return builtService{}, false
	}
	b, ok := sm.bySvc[svc]
	return b, ok && slices.Equal(b.slices, its)
}

// sameList reports whether a and b are the same slice (not just equal).
func sameList[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// buildServiceEntryHost makes the service of one host of a ServiceEntry.
func buildServiceEntryHost(se *networkingv1.ServiceEntry, host, trustDomain string) *Service {
	ms := &Service{
		Hostname: host, Namespace: se.Namespace, Name: se.Name, ServiceEntry: true,
		VIPs: slices.Clone(se.Spec.GetAddresses()), Endpoints: []*Endpoint{},
	}
	if se.Spec.GetLocation() != 0 || se.Spec.GetResolution() != 0 {
		ms.Location, ms.Resolution = se.Spec.GetLocation().String(), se.Spec.GetResolution().String()
	}
	for _, p := range se.Spec.GetPorts() {
		ms.Ports = append(ms.Ports, Port{Name: p.GetName(), Port: int32(p.GetNumber()), Protocol: seProtocol(p.GetProtocol(), p.GetName())})
	}
	for _, we := range se.Spec.GetEndpoints() {
		ep := &Endpoint{Address: we.GetAddress(), Ready: true, Labels: maps.Clone(we.GetLabels())}
		for _, name := range slices.Sorted(maps.Keys(we.GetPorts())) {
			ep.Ports = append(ep.Ports, EndpointPort{Name: name, Port: int32(we.GetPorts()[name])})
		}
		if sa := we.GetServiceAccount(); sa != "" {
			ep.Identity = Identity(trustDomain, se.Namespace, sa)
		}
		ms.Endpoints = append(ms.Endpoints, ep)
	}
	sortEndpoints(ms.Endpoints)
	return ms
}

// sortEndpoints sorts by address, then by everything else, so that the
// order does not depend on the snapshot's.
func sortEndpoints(eps []*Endpoint) {
	slices.SortFunc(eps, func(a, b *Endpoint) int {
		return cmp.Or(strings.Compare(a.Address, b.Address), strings.Compare(a.Workload, b.Workload),
			strings.Compare(a.Node, b.Node), slices.CompareFunc(a.Ports, b.Ports, func(x, y EndpointPort) int {
				return cmp.Or(strings.Compare(x.Name, y.Name), cmp.Compare(x.Port, y.Port), strings.Compare(string(x.Protocol), string(y.Protocol)))
			}), cmp.Compare(boolInt(a.Ready), boolInt(b.Ready)))
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// PortProtocol is the protocol of a Kubernetes Service or EndpointSlice
// port, as the model decides it (Port.Protocol): l4 is the port's
// protocol field (TCP, UDP, SCTP; "" for TCP).
func PortProtocol(l4 string, appProtocol *string, name string) Protocol {
	return protocolOf(l4, appProtocol, name)
}

// ServiceEntryPortProtocol is the protocol of a ServiceEntry port, as the
// model decides it: its protocol as written, else by its name.
func ServiceEntryPortProtocol(protocol, name string) Protocol { return seProtocol(protocol, name) }

// protocolOf decides a Kubernetes port's protocol the way Istio does: UDP
// by the port's protocol, then appProtocol, then the port name's prefix
// before the first '-'; UNKNOWN (sniffed) otherwise.
func protocolOf(l4 string, appProtocol *string, name string) Protocol {
	if l4 == string(corev1.ProtocolUDP) {
		return ProtocolUDP
	}
	if appProtocol != nil {
		if pr := protocolByName(*appProtocol); pr != ProtocolUnknown {
			return pr
		}
	}
	prefix, _, _ := strings.Cut(name, "-")
	return protocolByName(prefix)
}

// seProtocol is a ServiceEntry port's protocol: as written, else by name.
func seProtocol(protocol, name string) Protocol {
	if protocol != "" {
		return protocolByName(protocol)
	}
	return protocolOf("", nil, name)
}

// protocolByName maps Istio's protocol names (case-insensitive) and the
// Kubernetes well-known appProtocols to a Protocol.
func protocolByName(n string) Protocol {
	switch strings.ToLower(n) {
	case "http", "http-web", "kubernetes.io/ws", "http_proxy":
		return ProtocolHTTP
	case "http2", "kubernetes.io/h2c":
		return ProtocolHTTP2
	case "grpc", "grpc-web":
		return ProtocolGRPC
	case "https", "kubernetes.io/wss":
		return ProtocolHTTPS
	case "tls":
		return ProtocolTLS
	case "tcp", "mongo", "mysql", "redis":
		return ProtocolTCP
	case "udp":
		return ProtocolUDP
	}
	return ProtocolUnknown
}

// Dump renders the model as indented JSON, stable across runs (slices
// sorted, map keys sorted by encoding/json) and diffable line by line:
// for golden files and the controller's debug endpoint. Change is not
// included.
func (m *Model) Dump() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
