package analyze

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
)

// istioProtocols are the protocols Istio knows by name
// (protocol.Parse): a port name "<protocol>" or "<protocol>-<suffix>",
// or an appProtocol "<protocol>", declares its protocol. Case does not
// matter. "grpc-web" is checked first, since it holds a "-".
var istioProtocols = []string{
	"tcp", "udp", "grpc", "grpc-web", "http", "http_proxy", "http2", "https", "tls", "mongo", "redis", "mysql",
}

// kubeAppProtocols are appProtocol values Istio knows besides its own
// protocol names: Kubernetes' standard ones (HTTP/2 over cleartext,
// WebSocket, WebSocket over TLS) and "hbone", which Istio's analyzer
// does not report either (a waypoint's tunnel port).
var kubeAppProtocols = []string{"kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss", "hbone"}

// wellKnownPorts are taken as TCP when their port declares no protocol
// (SMTP, DNS, MySQL, MongoDB), as in Istio.
var wellKnownPorts = []int32{25, 53, 3306, 27017}

// declaresProtocol reports whether Istio knows the protocol of a Service
// port, as its ConvertProtocol does: UDP ports are UDP; otherwise the
// appProtocol if set, else the port name, up to its first "-" ("grpc-web"
// as a whole), must name a protocol, or the port be a well-known one.
func declaresProtocol(p corev1.ServicePort) bool {
	if p.Protocol == corev1.ProtocolUDP {
		return true
	}
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
		// Kubernetes' own appProtocol names, and Istio's HBONE tunnel
		// port (15008 of an ambient waypoint), declare a protocol too.
		if slices.Contains(kubeAppProtocols, name) {
			return true
		}
	}
	name = strings.ToLower(name)
	if !strings.HasPrefix(name, "grpc-web") {
		name, _, _ = strings.Cut(name, "-")
	} else {
		name = "grpc-web"
	}
	return slices.Contains(istioProtocols, name) || slices.Contains(wellKnownPorts, p.Port)
}

// systemNamespaces are skipped by IST0118, as by Istio
// (inject.IgnoredNamespaces), with fibmesh-system, fibmesh's own control
// plane (Istio skips its control plane's Services by their labels).
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", "local-path-storage", "fibmesh-system"}

// controlPlane reports whether a Service is part of Istio's control plane
// (a label "istio", or release=istio), which IST0118 skips as Istio does.
func controlPlane(svc *corev1.Service) bool {
	_, ok := svc.Labels["istio"]
	return ok || svc.Labels["release"] == "istio"
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

// portProtocols reports every Service port whose protocol Istio cannot
// tell (IST0118, Info), outside the system namespaces and the control
// plane, as Istio's PortNameAnalyzer: such a port is left to protocol
// detection. The message says when L7 policy applies to the port
// (HTTP routes of a VirtualService, an AuthorizationPolicy using HTTP
// attributes), since that policy then depends on detection. Ports of an
// ExternalName Service that declare no protocol, or are named "tcp", are
// IST0150 instead.
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
		if slices.Contains(systemNamespaces, svc.Namespace) || controlPlane(svc.Obj) {
			continue
		}
		u := uses[svc.Obj.Name+"."+svc.Namespace+"."+clusterDomain]
		external := svc.Obj.Spec.Type == corev1.ServiceTypeExternalName
		for _, p := range svc.Obj.Spec.Ports {
			if external && (!declaresProtocol(p) || p.Name == "tcp") {
				fs = append(fs, finding(ExternalNameServiceTypeInvalidPortName, svc.Resource,
					"Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly (port %s, %d): name it <protocol>-<suffix> with a protocol other than tcp (http-…, tls-…), or set appProtocol",
					strconv.Quote(p.Name), p.Port))
				continue
			}
			if declaresProtocol(p) {
				continue
			}
			note := ""
			if u != nil && (u.ports[0] || u.ports[p.Port]) {
				note = fmt.Sprintf("; L7 policy applies to it (%s) and depends on that detection", strings.Join(u.by, ", "))
			}
			fs = append(fs, finding(PortNameIsNotUnderNamingConvention, svc.Resource,
				"Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port, so its protocol is detected per connection%s: name it <protocol>-<suffix> (http-…, grpc-…, tcp-…) or set appProtocol",
				strconv.Quote(p.Name), p.Port, p.TargetPort.String(), note))
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
