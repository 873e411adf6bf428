package analyze

// Code describes one kind of finding. ID and Name are stable: users and
// scripts match on them. Istio codes (IST...) keep istioctl's meaning;
// fibmesh-only codes start with FM.
type Code struct {
	ID    string
	Name  string
	Level Level
}

// The codes Analyze and FromDecodeErrors emit. docs/analyze.md documents
// each with an example and its fix; a test keeps the two in step.
var (
	// ReferencedResourceNotFound: a VirtualService routes to a host that
	// is no known Service or ServiceEntry, or to a subset no
	// DestinationRule for that host defines.
	ReferencedResourceNotFound = Code{"IST0101", "ReferencedResourceNotFound", Error}
	// SchemaValidationError: a document could not be decoded.
	SchemaValidationError = Code{"IST0106", "SchemaValidationError", Error}
	// ConflictingMeshGatewayVirtualServiceHosts: two VirtualServices bound
	// to the mesh gateway define the same host.
	ConflictingMeshGatewayVirtualServiceHosts = Code{"IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error}
	// PortNameIsNotUnderNamingConvention: a Service port that L7 policy
	// applies to declares no protocol. istioctl reports every such port
	// at Info; fibmesh reports only those where L7 policy applies, at
	// Warning.
	PortNameIsNotUnderNamingConvention = Code{"IST0118", "PortNameIsNotUnderNamingConvention", Warning}
	// NoMatchingWorkloadsFound: a PeerAuthentication or
	// AuthorizationPolicy selector matches no pod.
	NoMatchingWorkloadsFound = Code{"IST0127", "NoMatchingWorkloadsFound", Warning}
	// VirtualServiceUnreachableRule: an HTTP route can never be used,
	// because every one of its matches is shadowed by an earlier route.
	VirtualServiceUnreachableRule = Code{"IST0130", "VirtualServiceUnreachableRule", Warning}
	// VirtualServiceIneffectiveMatch: one match of an HTTP route is
	// shadowed by an earlier match; the route is still reachable by its
	// other matches.
	VirtualServiceIneffectiveMatch = Code{"IST0131", "VirtualServiceIneffectiveMatch", Info}

	// RouteWeightsNotHundred: the weights of an HTTP route's destinations
	// do not add up to 100.
	RouteWeightsNotHundred = Code{"FM0001", "RouteWeightsNotHundred", Error}
	// ConflictingPeerAuthentications: more than one PeerAuthentication at
	// the same scope (mesh, namespace, or one identical workload
	// selector), so which mode applies is undefined.
	ConflictingPeerAuthentications = Code{"FM0002", "ConflictingPeerAuthentications", Error}
	// SubsetSelectsNoWorkload: a DestinationRule subset's labels, together
	// with its Service's selector, match no pod.
	SubsetSelectsNoWorkload = Code{"FM0003", "SubsetSelectsNoWorkload", Warning}
	// UnsupportedField: a field of an Istio resource that fibmesh does not
	// implement yet; it has no effect.
	UnsupportedField = Code{"FM0004", "UnsupportedField", Warning}
	// KindNotConsumed: a well-formed object of a kind fibmesh does not
	// read (Deployment, Gateway, EnvoyFilter, ...); it is skipped.
	KindNotConsumed = Code{"FM0005", "KindNotConsumed", Info}
	// L4RouteNotApplied: a tcp or tls rule (or one of its matches) of a
	// VirtualService can never apply: a tls match without sniHosts, a
	// destination subnet that does not parse, tcp rules for a host
	// without an address or without a port they apply to, tls rules for
	// a host without a TLS or HTTPS port.
	L4RouteNotApplied = Code{"FM0006", "L4RouteNotApplied", Warning}
	// PeerAuthenticationNotEnforced: a PeerAuthentication sets STRICT
	// for pods that are outside the mesh (not captured: a label on them
	// or their namespace), where it cannot be enforced.
	PeerAuthenticationNotEnforced = Code{"FM0007", "PeerAuthenticationNotEnforced", Warning}
	// ConsistentHashNotApplied: a DestinationRule's consistentHash gives
	// no key (none is set, or httpCookie has no name), so its requests
	// are balanced at random; or an HTTP route splits traffic over hosts
	// whose consistent-hash keys differ, and only the first one's key
	// applies (a route carries one hash policy).
	ConsistentHashNotApplied = Code{"FM0008", "ConsistentHashNotApplied", Warning}
)

// Codes lists every code, in ID order.
var Codes = []Code{
	ReferencedResourceNotFound,
	SchemaValidationError,
	ConflictingMeshGatewayVirtualServiceHosts,
	PortNameIsNotUnderNamingConvention,
	NoMatchingWorkloadsFound,
	VirtualServiceUnreachableRule,
	VirtualServiceIneffectiveMatch,
	RouteWeightsNotHundred,
	ConflictingPeerAuthentications,
	SubsetSelectsNoWorkload,
	UnsupportedField,
	KindNotConsumed,
	L4RouteNotApplied,
	PeerAuthenticationNotEnforced,
	ConsistentHashNotApplied,
}

// CodeByID returns the Code with the given ID.
func CodeByID(id string) (Code, bool) {
	for _, c := range Codes {
		if c.ID == id {
			return c, true
		}
	}
	return Code{}, false
}
