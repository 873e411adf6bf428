package analyze

import (
	"fmt"
	"slices"
	"strings"

	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fibmesh/fibmesh/controller/model"
)

// hostPorts is what the tcp and tls rules of a host depend on: whether
// it has an address (tcp rules match on it), and its ports' protocols.
type hostPorts struct {
	addressed bool
	protocols []model.Protocol
}

// hostPortsOf finds a VirtualService host (an FQDN) among the Services
// and ServiceEntries; false when neither declares it.
func (ix *index) hostPortsOf(host string) (hostPorts, bool) {
	if svc, ok := ix.byHost[host]; ok {
		// A Service without clusterIP gets one from the apiserver; only
		// "None" (headless) has no address.
		hp := hostPorts{addressed: svc.Obj.Spec.ClusterIP != corev1.ClusterIPNone}
		for _, p := range svc.Obj.Spec.Ports {
			hp.protocols = append(hp.protocols, model.PortProtocol(string(p.Protocol), p.AppProtocol, p.Name))
		}
		return hp, true
	}
	for _, se := range ix.ses {
		if !slices.ContainsFunc(se.Obj.Spec.GetHosts(), func(h string) bool { return fqdn(h, se.Namespace) == host }) {
			continue
		}
		hp := hostPorts{addressed: len(se.Obj.Spec.GetAddresses()) > 0}
		for _, p := range se.Obj.Spec.GetPorts() {
			hp.protocols = append(hp.protocols, model.ServiceEntryPortProtocol(p.GetProtocol(), p.GetName()))
		}
		return hp, true
	}
	return hostPorts{}, false
}

// tcpApplies and tlsApplies are the port protocols tcp and tls rules
// apply to (the others are HTTP's, or UDP's).
func tcpApplies(p model.Protocol) bool {
	switch p {
	case model.ProtocolTCP, model.ProtocolUnknown, model.ProtocolTLS, model.ProtocolHTTPS:
		return true
	}
	return false
}

func tlsApplies(p model.Protocol) bool {
	return p == model.ProtocolTLS || p == model.ProtocolHTTPS
}

// l4RoutesNotApplied reports tcp and tls rules of VirtualServices that
// can never apply (FM0006): tcp rules for a host without an address
// (they match on it) or without a TCP, TLS, HTTPS or undeclared port,
// and tls rules for a host without a TLS or HTTPS port. (A tls rule
// without match or sniHosts, and a destinationSubnets entry that does
// not parse, are errors of Istio's validation: validationErrors.)
func l4RoutesNotApplied(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		spec := &vs.Obj.Spec
		if !appliesToMesh(vs.Obj) || len(spec.GetTcp())+len(spec.GetTls()) == 0 {
			continue
		}
		report := func(format string, args ...any) {
			fs = append(fs, finding(L4RouteNotApplied, vs.Resource, format, args...))
		}
		// A rule kind is reported only when it applies to none of the
		// VirtualService's known hosts, with why for each.
		var tcpWhy, tlsWhy []string
		tcpOK, tlsOK := false, false
		for _, h := range spec.GetHosts() {
			host := fqdn(h, vs.Namespace)
			hp, ok := ix.hostPortsOf(host)
			if !ok {
				continue
			}
			switch {
			case !hp.addressed:
				tcpWhy = append(tcpWhy, fmt.Sprintf("host %s has no address (a headless Service, or a ServiceEntry without addresses) and tcp rules match on it; give it an address, or route its TLS with tls rules", host))
			case !slices.ContainsFunc(hp.protocols, tcpApplies):
				tcpWhy = append(tcpWhy, fmt.Sprintf("none of the ports of host %s is TCP, TLS, HTTPS or undeclared (%s), and tcp rules apply to no other; use http rules, or name the port tcp-…", host, protocolList(hp.protocols)))
			default:
				tcpOK = true
			}
			if slices.ContainsFunc(hp.protocols, tlsApplies) {
				tlsOK = true
			} else {
				tlsWhy = append(tlsWhy, fmt.Sprintf("none of the ports of host %s is TLS or HTTPS (%s), and tls rules apply to no other; name the port tls-… or https-…, or set its protocol", host, protocolList(hp.protocols)))
			}
		}
		if len(spec.GetTcp()) > 0 && !tcpOK {
			for _, why := range tcpWhy {
				report("spec.tcp is never used: %s", why)
			}
		}
		if len(spec.GetTls()) > 0 && !tlsOK {
			for _, why := range tlsWhy {
				report("spec.tls is never used: %s", why)
			}
		}
	}
	return fs
}

func protocolList(ps []model.Protocol) string {
	if len(ps) == 0 {
		return "no ports"
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return "ports: " + strings.Join(out, ", ")
}

// strictOutsideMesh reports PeerAuthentications that set STRICT (for the
// workload or one of its ports) on pods outside the mesh (FM0007): such
// a pod is not captured (a label on it or its namespace says so,
// model.CaptureOff, or it has hostNetwork), so nothing refuses plaintext to it; fibmesh treats
// its ports as DISABLE.
func strictOutsideMesh(ix *index) []Finding {
	var fs []Finding
	for _, pa := range ix.pas {
		spec := &pa.Obj.Spec
		strict := spec.GetMtls().GetMode() == securityv1beta1.PeerAuthentication_MutualTLS_STRICT
		for _, pm := range spec.GetPortLevelMtls() {
			strict = strict || pm.GetMode() == securityv1beta1.PeerAuthentication_MutualTLS_STRICT
		}
		if !strict {
			continue
		}
		sel := labels.SelectorFromSet(spec.GetSelector().GetMatchLabels())
		var outside []string
		for _, p := range ix.pods {
			if p.Namespace != pa.Namespace && (pa.Namespace != RootNamespace || len(spec.GetSelector().GetMatchLabels()) > 0) {
				continue
			}
			if !sel.Matches(labels.Set(p.Obj.Labels)) {
				continue
			}
			if why, off := model.CaptureOff(p.Obj.Labels, p.Obj.Annotations, ix.nsLabels[p.Namespace]); off {
				outside = append(outside, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, why))
			} else if p.Obj.Spec.HostNetwork {
				outside = append(outside, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, model.OutsideMeshHostNetwork))
			}
		}
		if len(outside) == 0 {
			continue
		}
		hostNote := ""
		if slices.ContainsFunc(outside, func(s string) bool { return strings.HasSuffix(s, "("+model.OutsideMeshHostNetwork+")") }) {
			hostNote = " (a hostNetwork pod shares its node's IP and cannot be)"
		}
		const shown = 5
		list := strings.Join(outside[:min(len(outside), shown)], ", ")
		if len(outside) > shown {
			list += fmt.Sprintf(" and %d more", len(outside)-shown)
		}
		fs = append(fs, finding(PeerAuthenticationNotEnforced, pa.Resource,
			"STRICT mTLS cannot be enforced for pods outside the mesh: %s; they are not captured and accept plaintext (fibmesh treats their ports as DISABLE): remove the label to bring them into the mesh%s, or narrow the policy's selector",
			list, hostNote))
	}
	return fs
}
