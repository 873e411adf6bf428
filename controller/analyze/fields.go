package analyze

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/fibmesh/fibmesh/controller/config"
)

// supportedFields is the one table of which Istio fields fibmesh
// implements, per proto message, by JSON field name. A field that is set
// in a spec and not listed here is reported as UnsupportedField, naming
// its path; a message not listed here has no supported field. Messages
// whose full name starts with "google.protobuf." (Duration, wrappers) are
// leaves: if the field holding them is supported, so are they.
//
// Keep it honest: add a field here only when the model and the data path
// implement it, and remove none without a finding taking its place.
var supportedFields = map[protoreflect.FullName][]string{
	// VirtualService: HTTP routing for the mesh gateway.
	"istio.networking.v1alpha3.VirtualService":           {"hosts", "gateways", "http", "tcp", "tls"},
	"istio.networking.v1alpha3.TCPRoute":                 {"match", "route"},
	"istio.networking.v1alpha3.TLSRoute":                 {"match", "route"},
	"istio.networking.v1alpha3.L4MatchAttributes":        {"destinationSubnets", "port", "sourceLabels", "gateways", "sourceNamespace"},
	"istio.networking.v1alpha3.TLSMatchAttributes":       {"sniHosts", "destinationSubnets", "port", "sourceLabels", "gateways", "sourceNamespace"},
	"istio.networking.v1alpha3.RouteDestination":         {"destination", "weight"},
	"istio.networking.v1alpha3.HTTPRoute":                {"name", "match", "route", "retries", "timeout", "fault"},
	"istio.networking.v1alpha3.HTTPMatchRequest":         {"name", "uri", "headers", "method", "port", "gateways"},
	"istio.networking.v1alpha3.StringMatch":              {"exact", "prefix", "regex"},
	"istio.networking.v1alpha3.HTTPRouteDestination":     {"destination", "weight"},
	"istio.networking.v1alpha3.Destination":              {"host", "subset", "port"},
	"istio.networking.v1alpha3.PortSelector":             {"number"},
	"istio.networking.v1alpha3.HTTPRetry":                {"attempts", "perTryTimeout", "retryOn"},
	"istio.networking.v1alpha3.HTTPFaultInjection":       {"delay", "abort"},
	"istio.networking.v1alpha3.HTTPFaultInjection.Delay": {"fixedDelay", "percentage", "percent"},
	"istio.networking.v1alpha3.HTTPFaultInjection.Abort": {"httpStatus", "percentage"},
	"istio.networking.v1alpha3.Percent":                  {"value"},
	"istio.networking.v1alpha3.DestinationRule":          {"host", "trafficPolicy", "subsets"},
	// A subset's trafficPolicy and portLevelSettings are not in the
	// model: the host-level trafficPolicy applies to every subset and
	// port (docs/xds.md).
	"istio.networking.v1alpha3.Subset":               {"name", "labels"},
	"istio.networking.v1alpha3.TrafficPolicy":        {"loadBalancer", "connectionPool", "outlierDetection"},
	"istio.networking.v1alpha3.LoadBalancerSettings": {"simple", "consistentHash"},
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB": {
		"httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName", "ringHash", "maglev", "minimumRingSize",
	},
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.HTTPCookie": {"name", "path", "ttl"},
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.RingHash":   {"minimumRingSize"},
	"istio.networking.v1alpha3.LoadBalancerSettings.ConsistentHashLB.MagLev":     {"tableSize"},
	"istio.networking.v1alpha3.ConnectionPoolSettings":                           {"tcp", "http"},
	"istio.networking.v1alpha3.ConnectionPoolSettings.TCPSettings":               {"maxConnections", "connectTimeout"},
	"istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings": {
		// idleTimeout (upstream connections' idle timeout) is not in
		// the model: reported.
		"http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection", "maxRetries",
	},
	// consecutiveGatewayErrors, the deprecated consecutiveErrors and
	// minHealthPercent (Envoy's panic threshold) are not in the model:
	// reported, so that no one relies on them silently.
	"istio.networking.v1alpha3.OutlierDetection": {
		"consecutive5xxErrors", "interval", "baseEjectionTime", "maxEjectionPercent",
	},
	"istio.networking.v1alpha3.ServiceEntry":  {"hosts", "addresses", "ports", "location", "resolution", "endpoints"},
	"istio.networking.v1alpha3.ServicePort":   {"number", "protocol", "name", "targetPort"},
	"istio.networking.v1alpha3.WorkloadEntry": {"address", "ports", "labels"},

	"istio.security.v1beta1.PeerAuthentication":           {"selector", "mtls", "portLevelMtls"},
	"istio.security.v1beta1.PeerAuthentication.MutualTLS": {"mode"},
	"istio.type.v1beta1.WorkloadSelector":                 {"matchLabels"},
	"istio.security.v1beta1.AuthorizationPolicy":          {"selector", "action", "rules"},
	"istio.security.v1beta1.Rule":                         {"from", "to", "when"},
	"istio.security.v1beta1.Rule.From":                    {"source"},
	"istio.security.v1beta1.Rule.To":                      {"operation"},
	"istio.security.v1beta1.Source": {"principals", "notPrincipals", "namespaces", "notNamespaces",
		"serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"},
	"istio.security.v1beta1.Operation": {"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"},
	"istio.security.v1beta1.Condition": {"key", "values", "notValues"},
}

// partlySupported are fields in supportedFields that fibmesh implements
// only for some values. Each returns why a value is unsupported, or "".
var partlySupported = map[protoreflect.FullName]func(protoreflect.Value) string{
	"istio.networking.v1alpha3.VirtualService.gateways":     onlyMeshGateway,
	"istio.networking.v1alpha3.HTTPMatchRequest.gateways":   onlyMeshGateway,
	"istio.networking.v1alpha3.L4MatchAttributes.gateways":  onlyMeshGateway,
	"istio.networking.v1alpha3.TLSMatchAttributes.gateways": onlyMeshGateway,
	"istio.security.v1beta1.AuthorizationPolicy.action": func(v protoreflect.Value) string {
		// ALLOW, DENY and AUDIT are implemented; CUSTOM needs an
		// external authorizer fibmesh does not have.
		if v.Enum() == 3 { // AuthorizationPolicy_CUSTOM
			return "action CUSTOM (external authorization) is not supported"
		}
		return ""
	},
}

func onlyMeshGateway(v protoreflect.Value) string {
	l := v.List()
	var others []string
	for i := range l.Len() {
		if g := l.Get(i).String(); g != "mesh" {
			others = append(others, fmt.Sprintf("%q", g))
		}
	}
	if len(others) == 0 {
		return ""
	}
	return "gateway " + strings.Join(others, ", ") + " is not supported (only \"mesh\")"
}

// unsupportedFields reports every set field of every Istio resource that
// supportedFields does not list.
func unsupportedFields(ix *index) []Finding {
	var fs []Finding
	for _, r := range ix.istioKind {
		spec := specOf(r)
		if spec == nil {
			continue
		}
		walkUnsupported(spec.ProtoReflect(), "spec", func(path, why string) {
			if why == "" {
				fs = append(fs, finding(UnsupportedField, r, "field %s is not supported by fibmesh yet and has no effect", path))
				return
			}
			fs = append(fs, finding(UnsupportedField, r, "field %s: %s yet and has no effect", path, why))
		})
	}
	return fs
}

// specOf returns the proto spec of an Istio resource, nil for other kinds.
func specOf(r config.Resource) proto.Message {
	switch o := r.Object.(type) {
	case *networkingv1.VirtualService:
		return &o.Spec
	case *networkingv1.DestinationRule:
		return &o.Spec
	case *networkingv1.ServiceEntry:
		return &o.Spec
	case *securityv1.PeerAuthentication:
		return &o.Spec
	case *securityv1.AuthorizationPolicy:
		return &o.Spec
	}
	return nil
}

// walkUnsupported calls report for each set field of m (at path) that is
// not supported, in field-number order, and descends into supported
// message fields.
func walkUnsupported(m protoreflect.Message, path string, report func(path, why string)) {
	desc := m.Descriptor()
	if strings.HasPrefix(string(desc.FullName()), "google.protobuf.") {
		return
	}
	ok := supportedFields[desc.FullName()]
	type set struct {
		fd protoreflect.FieldDescriptor
		v  protoreflect.Value
	}
	var fields []set
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fields = append(fields, set{fd, v})
		return true
	})
	// Range's order is unspecified; report in a stable one.
	slices.SortFunc(fields, func(a, b set) int { return int(a.fd.Number()) - int(b.fd.Number()) })
	for _, f := range fields {
		fd, v := f.fd, f.v
		p := path + "." + fd.JSONName()
		if !slices.Contains(ok, fd.JSONName()) {
			report(p, "")
			continue
		}
		if check := partlySupported[fd.FullName()]; check != nil {
			if why := check(v); why != "" {
				report(p, why)
				continue
			}
		}
		if fd.Message() == nil {
			continue
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				walkUnsupported(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), report)
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				continue
			}
			var keys []protoreflect.MapKey
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
			for _, k := range keys {
				walkUnsupported(v.Map().Get(k).Message(), fmt.Sprintf("%s[%s]", p, k.String()), report)
			}
		default:
			walkUnsupported(v.Message(), p, report)
		}
	}
}
