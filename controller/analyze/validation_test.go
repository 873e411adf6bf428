package analyze

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

func TestValidationErrors(t *testing.T) {
	to := []*v1alpha3.HTTPRouteDestination{dest("orders", "", 0)}
	l4to := []*v1alpha3.RouteDestination{{Destination: &v1alpha3.Destination{Host: "orders"}}}
	complete := vs("shop", "complete", &v1alpha3.VirtualService{Hosts: []string{"orders"},
		Http: []*v1alpha3.HTTPRoute{
			{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/old")}}, Redirect: &v1alpha3.HTTPRedirect{Uri: "/new"}},
			{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/gone")}}, DirectResponse: &v1alpha3.HTTPDirectResponse{Status: 410}},
			{Route: to, Fault: &v1alpha3.HTTPFaultInjection{Delay: &v1alpha3.HTTPFaultInjection_Delay{
				HttpDelayType: &v1alpha3.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(time.Second)}}}},
		},
		Tcp: []*v1alpha3.TCPRoute{{Match: []*v1alpha3.L4MatchAttributes{{DestinationSubnets: []string{"10.96.0.0/16", "10.96.0.1"}}}, Route: l4to}},
		Tls: []*v1alpha3.TLSRoute{{Match: []*v1alpha3.TLSMatchAttributes{{SniHosts: []string{"orders"}}}, Route: l4to}},
	})
	// A rule that only injects a fault (and not even one), and L4 rules
	// that only match: Istio's validation rejects each.
	nowhere := vs("shop", "nowhere", &v1alpha3.VirtualService{Hosts: []string{"orders"},
		Http: []*v1alpha3.HTTPRoute{{Fault: &v1alpha3.HTTPFaultInjection{}}},
		Tcp:  []*v1alpha3.TCPRoute{{Match: []*v1alpha3.L4MatchAttributes{{Port: 5432}}}},
		Tls:  []*v1alpha3.TLSRoute{{Match: []*v1alpha3.TLSMatchAttributes{{SniHosts: []string{"orders"}}}}},
	})
	// tls rules route on the SNI only.
	noSNI := vs("shop", "nosni", &v1alpha3.VirtualService{Hosts: []string{"orders"},
		Tls: []*v1alpha3.TLSRoute{{Match: []*v1alpha3.TLSMatchAttributes{{Port: 443}}, Route: l4to}, {Route: l4to}}})
	badSubnet := vs("shop", "subnet", &v1alpha3.VirtualService{Hosts: []string{"orders"},
		Tcp: []*v1alpha3.TCPRoute{{Match: []*v1alpha3.L4MatchAttributes{{DestinationSubnets: []string{"10.96.0.0/33", "orders.local"}}}, Route: l4to}}})
	runCases(t, validationErrors, []analyzerCase{
		{name: "valid", snap: snap(complete)},
		{name: "no route", snap: snap(nowhere), want: []Finding{
			want(SchemaValidationError, nowhere, "Schema validation error: spec.http[0].fault: HTTP fault injection must have an abort and/or a delay: add one, or remove the fault"),
			want(SchemaValidationError, nowhere, "Schema validation error: spec.http[0]: HTTP route, redirect or direct_response is required: add a route with a destination, or remove the rule"),
			want(SchemaValidationError, nowhere, "Schema validation error: spec.tcp[0]: TCP route is required: add a route with a destination, or remove the rule"),
			want(SchemaValidationError, nowhere, "Schema validation error: spec.tls[0]: TLS route is required: add a route with a destination, or remove the rule"),
		}},
		{name: "tls without SNI", snap: snap(noSNI), want: []Finding{
			want(SchemaValidationError, noSNI, "Schema validation error: spec.tls[0].match[0]: TLS match must have at least one SNI host: a tls match routes on the SNI; add sniHosts"),
			want(SchemaValidationError, noSNI, "Schema validation error: spec.tls[1]: TLS route must have at least one match condition: a tls rule routes on the SNI; add match[].sniHosts"),
		}},
		{name: "bad subnets", snap: snap(badSubnet), want: []Finding{
			want(SchemaValidationError, badSubnet, `Schema validation error: spec.tcp[0].match[0].destinationSubnets[0]: "10.96.0.0/33" is neither an IP address nor a CIDR: write it as 10.0.0.0/16 or 10.0.0.1`),
			want(SchemaValidationError, badSubnet, `Schema validation error: spec.tcp[0].match[0].destinationSubnets[1]: "orders.local" is neither an IP address nor a CIDR: write it as 10.0.0.0/16 or 10.0.0.1`),
		}},
	})
}

func TestDeprecatedFields(t *testing.T) {
	delay := func(name string, d *v1alpha3.HTTPFaultInjection_Delay) *v1alpha3.HTTPRoute {
		return &v1alpha3.HTTPRoute{Name: name, Fault: &v1alpha3.HTTPFaultInjection{Delay: d}, Route: []*v1alpha3.HTTPRouteDestination{dest("orders", "", 0)}}
	}
	slow := vs("shop", "slow", &v1alpha3.VirtualService{Hosts: []string{"orders"}, Http: []*v1alpha3.HTTPRoute{
		delay("current", &v1alpha3.HTTPFaultInjection_Delay{Percentage: &v1alpha3.Percent{Value: 5}}),
		delay("old", &v1alpha3.HTTPFaultInjection_Delay{Percent: 30}),
	}})
	runCases(t, deprecatedFields, []analyzerCase{
		{name: "percent", snap: snap(slow), want: []Finding{
			want(Deprecated, slow, "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage (spec.http[1].fault.delay.percent: write percentage: {value: 30})"),
		}},
	})
}

func TestServiceEntryAddresses(t *testing.T) {
	p := func(n uint32, name, proto string) *v1alpha3.ServicePort {
		return &v1alpha3.ServicePort{Number: n, Name: name, Protocol: proto}
	}
	addressed := se("shop", "ledger", &v1alpha3.ServiceEntry{Hosts: []string{"ledger.example.net"}, Addresses: []string{"240.0.0.7"},
		Ports: []*v1alpha3.ServicePort{p(7000, "tcp-ledger", "TCP")}})
	named := se("shop", "payments", &v1alpha3.ServiceEntry{Hosts: []string{"pay.example.net"},
		Ports: []*v1alpha3.ServicePort{p(443, "https", "HTTPS"), p(80, "http", "http"), p(9443, "tls", "TLS")}})
	allocated := se("shop", "queue", &v1alpha3.ServiceEntry{Hosts: []string{"queue.example.net"}, Ports: []*v1alpha3.ServicePort{p(5672, "amqp", "TCP")}})
	allocated.Object.(*networkingv1.ServiceEntry).Status.Addresses = []*v1alpha3.ServiceEntryAddress{{Value: "240.240.0.9"}}
	bare := se("shop", "legacy", &v1alpha3.ServiceEntry{Hosts: []string{"legacy.example.net"},
		Ports: []*v1alpha3.ServicePort{p(2222, "ssh", "tcp"), p(8080, "web", ""), p(443, "https", "HTTPS")}})
	runCases(t, serviceEntryAddresses, []analyzerCase{
		{name: "addresses, named protocols", snap: snap(addressed, named)},
		// Unlike Istio: fibmesh serves spec.addresses only.
		{name: "allocated by Istio", snap: snap(allocated), want: []Finding{
			want(ServiceEntryAddressesRequired, allocated, "ServiceEntry addresses are required for this protocol (spec.ports[0]: port 5672 has protocol TCP and spec.addresses is empty; status.addresses, which an Istio control plane allocated, are not used by fibmesh): a TCP connection names no host, so it is told apart only by its destination address; set spec.addresses, or declare the port's protocol (HTTP, HTTPS, TLS) if it carries one"),
		}},
		{name: "TCP or no protocol, no address", snap: snap(bare), want: []Finding{
			want(ServiceEntryAddressesRequired, bare, "ServiceEntry addresses are required for this protocol (spec.ports[0]: port 2222 has protocol tcp and spec.addresses is empty): a TCP connection names no host, so it is told apart only by its destination address; set spec.addresses, or declare the port's protocol (HTTP, HTTPS, TLS) if it carries one"),
			want(ServiceEntryAddressesRequired, bare, "ServiceEntry addresses are required for this protocol (spec.ports[1]: port 8080 has no protocol and spec.addresses is empty): a TCP connection names no host, so it is told apart only by its destination address; set spec.addresses, or declare the port's protocol (HTTP, HTTPS, TLS) if it carries one"),
		}},
	})
}

func TestJWTClaimMatches(t *testing.T) {
	route := []*v1alpha3.HTTPRouteDestination{dest("orders", "", 0)}
	claims := vs("shop", "claims", &v1alpha3.VirtualService{Hosts: []string{"orders"}, Http: []*v1alpha3.HTTPRoute{
		{Match: []*v1alpha3.HTTPMatchRequest{
			{Headers: map[string]*v1alpha3.StringMatch{"x-tenant": exact("a")}},
			{Headers: map[string]*v1alpha3.StringMatch{"@request.auth.claims.group": exact("admins"), "x-tenant": exact("b")}},
		}, Route: route},
		{Route: route},
	}})
	plain := vs("shop", "plain", &v1alpha3.VirtualService{Hosts: []string{"orders"}, Http: []*v1alpha3.HTTPRoute{
		{Match: []*v1alpha3.HTTPMatchRequest{{Headers: map[string]*v1alpha3.StringMatch{"x-request-auth": exact("1")}}}, Route: route},
	}})
	runCases(t, jwtClaimMatches, []analyzerCase{
		{name: "plain headers", snap: snap(plain)},
		{name: "claim", snap: snap(claims), want: []Finding{
			want(UnsupportedField, claims, `field spec.http[0].match[1].headers[@request.auth.claims.group]: JWT claim matching is not supported by fibmesh (it has no RequestAuthentication): the match compares a request header named "@request.auth.claims.group", which any client can send; remove the match, or route on a header your gateway sets`),
		}},
	})
}
