// Package analyze checks a config.Snapshot for mistakes and for Istio
// features fibmesh does not implement yet, and reports them as findings
// with stable codes. It backs `fibctl analyze -f DIR` and the controller's
// debug endpoint.
//
// Where a finding means what an `istioctl analyze` message means, it uses
// Istio's code and name (IST0101 ReferencedResourceNotFound, ...), so that
// users can look it up in either place; fibmesh-only findings use FM codes.
// Every code is listed in Codes and documented in docs/analyze.md.
package analyze

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Level is how serious a finding is.
type Level int

// Levels, most serious first; findings sort in this order.
const (
	Error Level = iota
	Warning
	Info
)

var levelNames = [...]string{Error: "Error", Warning: "Warning", Info: "Info"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return fmt.Sprintf("Level(%d)", int(l))
	}
	return levelNames[l]
}

// MarshalText encodes the level as "Error", "Warning" or "Info".
func (l Level) MarshalText() ([]byte, error) {
	if l < 0 || int(l) >= len(levelNames) {
		return nil, fmt.Errorf("analyze: invalid level %d", int(l))
	}
	return []byte(levelNames[l]), nil
}

// UnmarshalText accepts what MarshalText produces.
func (l *Level) UnmarshalText(b []byte) error {
	for i, n := range levelNames {
		if n == string(b) {
			*l = Level(i)
			return nil
		}
	}
	return fmt.Errorf("analyze: unknown level %q (want Error, Warning or Info)", b)
}

// Finding is one message about one resource.
type Finding struct {
	// Code is the stable identifier, e.g. "IST0101" or "FM0001"; see Codes.
	Code  string `json:"code"`
	Level Level  `json:"level"`
	// Kind, Namespace and Name identify the resource the finding is about.
	// Namespace is empty for cluster-scoped kinds; all three may be empty
	// for a document that could not be decoded far enough to know them.
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Message   string `json:"message"`
	// Source is where the resource was read from; zero when unknown.
	Source config.Source `json:"source,omitzero"`
}

// String formats the finding like istioctl does:
// "Error [IST0101] (VirtualService default/reviews) message".
func (f Finding) String() string {
	return fmt.Sprintf("%s [%s] (%s) %s", f.Level, f.Code, f.resource(), f.Message)
}

func (f Finding) resource() string {
	switch {
	case f.Kind == "" && f.Name == "":
		return "-"
	case f.Namespace == "":
		return f.Kind + " " + f.Name
	default:
		return f.Kind + " " + f.Namespace + "/" + f.Name
	}
}

// HasErrors reports whether any finding has Level Error.
func HasErrors(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Level == Error })
}

// Analyze runs every analyzer over s and returns the findings sorted by
// level (errors first), then resource, code and message. The result is
// deterministic for a given snapshot, whatever the order of its resources.
// A nil snapshot has no findings.
func Analyze(s *config.Snapshot) []Finding {
	if s == nil {
		return nil
	}
	ix := newIndex(s)
	var fs []Finding
	for _, a := range analyzers {
		fs = append(fs, a(ix)...)
	}
	return sortFindings(fs)
}

// analyzers are run in this order; the order does not show in the output.
var analyzers = []func(*index) []Finding{
	skippedKinds,
	unsupportedFields,
	routeDestinations,
	routeWeights,
	ineffectiveMatches,
	conflictingVirtualServices,
	portProtocols,
	peerAuthenticationConflicts,
	selectorsWithoutWorkloads,
	policyNamespaces,
	destinationRuleHosts,
	l4RoutesNotApplied,
	strictOutsideMesh,
	consistentHashes,
	serviceEntryAddresses,
	validationErrors,
	deprecatedFields,
	schemaErrors,
	jwtClaimMatches,
}

func sortFindings(fs []Finding) []Finding {
	slices.SortFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(a.Level, b.Level),
			cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Message, b.Message),
			cmp.Compare(a.Source.File, b.Source.File),
			cmp.Compare(a.Source.Doc, b.Source.Doc),
		)
	})
	return slices.Compact(fs)
}

// finding builds a finding about r with code c at c's default level.
func finding(c Code, r config.Resource, format string, args ...any) Finding {
	return Finding{
		Code:      c.ID,
		Level:     c.Level,
		Kind:      r.GVK.Kind,
		Namespace: r.Namespace,
		Name:      r.Name,
		Message:   fmt.Sprintf(format, args...),
		Source:    r.Source,
	}
}
