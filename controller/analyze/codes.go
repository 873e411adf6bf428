package analyze

import "slices"

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
	// Deprecated: a VirtualService sets a field Istio has deprecated
	// (fault.delay.percent). Istio: deprecation/deprecation.go.
	Deprecated = Code{"IST0002", "Deprecated", Warning}
	// ReferencedResourceNotFound: a VirtualService routes (or mirrors)
	// to a host that no Service or ServiceEntry visible to its namespace
	// defines (exportTo), to a port the host does not have, or to a
	// subset no DestinationRule for that host defines; or an
	// AuthorizationPolicy names a namespace that does not exist.
	// Istio: virtualservice/destinationhosts.go, destinationrules.go,
	// authz/authorizationpolicies.go.
	ReferencedResourceNotFound = Code{"IST0101", "ReferencedResourceNotFound", Error}
	// SchemaValidationError: a document could not be decoded, or breaks
	// a rule of Istio's validation (validationErrors, routeWeights,
	// schemaErrors), which Istio's webhook rejects.
	SchemaValidationError = Code{"IST0106", "SchemaValidationError", Error}
	// ConflictingMeshGatewayVirtualServiceHosts: two VirtualServices bound
	// to the mesh gateway define the same host for the same namespaces
	// (exportTo). Istio: virtualservice/conflictingmeshgatewayhosts.go.
	ConflictingMeshGatewayVirtualServiceHosts = Code{"IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error}
	// VirtualServiceDestinationPortSelectorRequired: a destination
	// without a port, for a host with more than one port. Istio:
	// virtualservice/destinationhosts.go.
	VirtualServiceDestinationPortSelectorRequired = Code{"IST0112", "VirtualServiceDestinationPortSelectorRequired", Error}
	// PortNameIsNotUnderNamingConvention: a Service port declares no
	// protocol (name prefix or appProtocol), so it is left to protocol
	// detection. Every such port outside the system namespaces, as
	// istioctl. Istio: service/portname.go.
	PortNameIsNotUnderNamingConvention = Code{"IST0118", "PortNameIsNotUnderNamingConvention", Info}
	// NoMatchingWorkloadsFound: an AuthorizationPolicy (or, in fibmesh,
	// a PeerAuthentication) applies to no pod in the mesh: its selector
	// matches none, or it has no selector and its namespace has no pod.
	// Istio: authz/authorizationpolicies.go.
	NoMatchingWorkloadsFound = Code{"IST0127", "NoMatchingWorkloadsFound", Warning}
	// VirtualServiceUnreachableRule: an HTTP, TCP or TLS rule can never
	// be used: an earlier rule has no match, or every one of its matches
	// is covered by earlier rules. Istio: pkg/config/validation
	// (analyzeUnreachableHTTPRules, reported by schema/validation.go).
	VirtualServiceUnreachableRule = Code{"IST0130", "VirtualServiceUnreachableRule", Warning}
	// VirtualServiceIneffectiveMatch: one match of a rule is covered by
	// a match of an earlier rule. Reported for each such match, also
	// when the rule is unreachable (with IST0130), as Istio does.
	VirtualServiceIneffectiveMatch = Code{"IST0131", "VirtualServiceIneffectiveMatch", Info}
	// ServiceEntryAddressesRequired: a port of a ServiceEntry without
	// addresses has protocol TCP or none. Istio:
	// serviceentry/protocoladdresses.go.
	ServiceEntryAddressesRequired = Code{"IST0134", "ServiceEntryAddressesRequired", Warning}
	// ExternalNameServiceTypeInvalidPortName: a port of an ExternalName
	// Service declares no protocol, or is named "tcp". Istio:
	// service/portname.go.
	ExternalNameServiceTypeInvalidPortName = Code{"IST0150", "ExternalNameServiceTypeInvalidPortName", Warning}
	// DestinationRuleSubsetNotSelectPods: a DestinationRule subset's
	// labels match no pod. Istio: destinationrule/subset.go.
	DestinationRuleSubsetNotSelectPods = Code{"IST0173", "DestinationRuleSubsetNotSelectPods", Error}
	// UnknownDestinationRuleHost: a DestinationRule's host is no Service
	// or ServiceEntry visible to its namespace. Istio:
	// destinationrule/subset.go.
	UnknownDestinationRuleHost = Code{"IST0174", "UnknownDestinationRuleHost", Warning}

	// RouteWeightsNotHundred: the weights of a route's destinations do
	// not add up to 100 (but to more than 0); traffic is split in
	// proportion to them. Istio accepts such weights.
	RouteWeightsNotHundred = Code{"FM0001", "RouteWeightsNotHundred", Warning}
	// ConflictingPeerAuthentications: more than one PeerAuthentication at
	// the same scope (mesh, namespace, or one identical workload
	// selector); the oldest applies, as in Istio, which has no analyzer
	// for it.
	ConflictingPeerAuthentications = Code{"FM0002", "ConflictingPeerAuthentications", Warning}
	// SubsetSelectsNoWorkload: a DestinationRule subset's labels match
	// pods (so IST0173 does not fire), but none of those the Service
	// selects: the subset has no endpoint.
	SubsetSelectsNoWorkload = Code{"FM0003", "SubsetSelectsNoWorkload", Warning}
	// UnsupportedField: a field of an Istio resource that fibmesh does not
	// implement yet; it has no effect.
	UnsupportedField = Code{"FM0004", "UnsupportedField", Warning}
	// KindNotConsumed: a well-formed object of a kind fibmesh does not
	// read (Deployment, Gateway, EnvoyFilter, ...); it is skipped.
	KindNotConsumed = Code{"FM0005", "KindNotConsumed", Info}
	// L4RouteNotApplied: the tcp or tls rules of a VirtualService can
	// never apply: tcp rules for hosts without an address or without a
	// port they apply to, tls rules for hosts without a TLS or HTTPS
	// port.
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
	Deprecated,
	ReferencedResourceNotFound,
	SchemaValidationError,
	ConflictingMeshGatewayVirtualServiceHosts,
	VirtualServiceDestinationPortSelectorRequired,
	PortNameIsNotUnderNamingConvention,
	NoMatchingWorkloadsFound,
	VirtualServiceUnreachableRule,
	VirtualServiceIneffectiveMatch,
	ServiceEntryAddressesRequired,
	ExternalNameServiceTypeInvalidPortName,
	DestinationRuleSubsetNotSelectPods,
	UnknownDestinationRuleHost,
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

// podDependent are the codes whose findings depend on which pods exist:
// they come and go as pods do.
var podDependent = []string{
	NoMatchingWorkloadsFound.ID, DestinationRuleSubsetNotSelectPods.ID, SubsetSelectsNoWorkload.ID, PeerAuthenticationNotEnforced.ID,
}

// PodDependent reports whether findings with code c depend on which pods
// exist (IST0127, IST0173, FM0003, FM0007). Istio's own admission webhook
// runs no analyzer; one that denies on analyze's Errors may want to let
// these pass, since the pods of a Deployment applied in the same
// `kubectl apply` do not exist yet when the DestinationRule arrives.
func (c Code) PodDependent() bool {
	return slices.Contains(podDependent, c.ID)
}
