package analyze

import (
	"slices"
	"strconv"
	"strings"

	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
)

// protocolPrefixes are the protocols a Service port name may start with
// ("http", "http-web", ...) to declare its protocol, as in Istio.
var protocolPrefixes = []string{
	"grpc", "grpc-web", "http", "http2", "https", "mongo", "mysql", "redis", "tcp", "tls", "udp",
}

// declaresProtocol reports whether a Service port says what it carries:
// an appProtocol, or a name "<protocol>" or "<protocol>-<suffix>".
func declaresProtocol(p corev1.ServicePort) bool {
	if p.AppProtocol != nil && *p.AppProtocol != "" {
		return true
	}
	name := strings.ToLower(p.Name)
	return slices.ContainsFunc(protocolPrefixes, func(pre string) bool {
		return name == pre || strings.HasPrefix(name, pre+"-")
	})
}

// l7Use records which ports of a Service some L7 policy applies to, and
// which resources those are (for the message).
type l7Use struct {
	ports map[int32]bool // 0: every port
	by    []string
}

func (u *l7Use) add(port int32, by string) {
	if u.ports == nil {
		u.ports = map[int32]bool{}
	}
	u.ports[port] = true
	if !slices.Contains(u.by, by) {
		u.by = append(u.by, by)
	}
}

// portProtocols reports Service ports that declare no protocol although
// L7 policy applies to them (IST0118): HTTP routes of a VirtualService,
// or an AuthorizationPolicy using HTTP attributes (methods, paths, hosts,
// request.* conditions). Such ports are left to protocol detection.
func portProtocols(ix *index) []Finding {
	uses := map[string]*l7Use{} // service FQDN → use
	use := func(host string) *l7Use {
		if uses[host] == nil {
			uses[host] = &l7Use{}
		}
		return uses[host]
	}
	for _, vs := range ix.vss {
		if len(vs.Obj.Spec.GetHttp()) == 0 || !appliesToMesh(vs.Obj) {
			continue
		}
		by := "VirtualService " + vs.Namespace + "/" + vs.Name
		for _, h := range vs.Obj.Spec.GetHosts() {
			if h = fqdn(h, vs.Namespace); ix.byHost[h].Obj != nil {
				use(h).add(0, by)
			}
		}
		for _, r := range vs.Obj.Spec.GetHttp() {
			for _, rd := range r.GetRoute() {
				h := fqdn(rd.GetDestination().GetHost(), vs.Namespace)
				if ix.byHost[h].Obj != nil {
					use(h).add(int32(rd.GetDestination().GetPort().GetNumber()), by)
				}
			}
		}
	}
	for _, ap := range ix.aps {
		ports, ok := httpAttributes(ap.Obj.Spec.GetRules())
		if !ok {
			continue
		}
		by := "AuthorizationPolicy " + ap.Namespace + "/" + ap.Name
		sel := ap.Obj.Spec.GetSelector().GetMatchLabels()
		for _, svc := range ix.services {
			if ap.Namespace != RootNamespace && svc.Namespace != ap.Namespace {
				continue
			}
			if len(svc.Obj.Spec.Selector) == 0 || !selectorsOverlap(sel, svc.Obj.Spec.Selector) {
				continue
			}
			h := svc.Obj.Name + "." + svc.Namespace + "." + clusterDomain
			if len(ports) == 0 {
				use(h).add(0, by)
			}
			for _, p := range ports {
				// AuthorizationPolicy ports are workload ports: match
				// them against targetPort too.
				for _, sp := range svc.Obj.Spec.Ports {
					if sp.Port == p || sp.TargetPort.IntValue() == int(p) {
						use(h).add(sp.Port, by)
					}
				}
			}
		}
	}
	var fs []Finding
	for _, svc := range ix.services {
		u := uses[svc.Obj.Name+"."+svc.Namespace+"."+clusterDomain]
		if u == nil {
			continue
		}
		for _, p := range svc.Obj.Spec.Ports {
			if declaresProtocol(p) || p.Protocol == corev1.ProtocolUDP || p.Protocol == corev1.ProtocolSCTP {
				continue
			}
			if !u.ports[0] && !u.ports[p.Port] {
				continue
			}
			fs = append(fs, finding(PortNameIsNotUnderNamingConvention, svc.Resource,
				"Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port, but L7 policy applies to it (%s): name it http-<suffix>, http2-<suffix> or grpc-<suffix>, or set appProtocol, so fibmesh need not detect the protocol",
				strconv.Quote(p.Name), p.Port, p.TargetPort.String(), strings.Join(u.by, ", ")))
		}
	}
	return fs
}

// httpAttributes reports whether AuthorizationPolicy rules use attributes
// only HTTP carries, and the ports (to.operation.ports) they are limited
// to, if every such rule names ports.
func httpAttributes(rules []*securityv1beta1.Rule) (ports []int32, ok bool) {
	allPorts := false
	for _, r := range rules {
		ruleHTTP := false
		for _, c := range r.GetWhen() {
			if strings.HasPrefix(c.GetKey(), "request.") {
				ruleHTTP = true
			}
		}
		var rulePorts []int32
		for _, t := range r.GetTo() {
			op := t.GetOperation()
			if len(op.GetMethods())+len(op.GetPaths())+len(op.GetHosts()) > 0 {
				ruleHTTP = true
			}
			for _, s := range op.GetPorts() {
				if n, err := strconv.ParseInt(s, 10, 32); err == nil {
					rulePorts = append(rulePorts, int32(n))
				}
			}
		}
		if !ruleHTTP {
			continue
		}
		ok = true
		if len(rulePorts) == 0 {
			allPorts = true
		}
		ports = append(ports, rulePorts...)
	}
	if allPorts {
		return nil, ok
	}
	return ports, ok
}
