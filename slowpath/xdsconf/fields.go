package xdsconf

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// errorf returns an error located at path (the resource and the field,
// in Envoy's field names).
func errorf(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

// onlyFields refuses a message that sets a field the slow path does not
// handle, or carries fields this build does not know (a newer
// controller): unknown fields are refused, not dropped. allowed are the
// proto field names it handles (or accepts and ignores, which the
// caller documents).
func onlyFields(m proto.Message, path string, allowed ...string) error {
	r := m.ProtoReflect()
	var bad []string
	r.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			bad = append(bad, string(fd.Name()))
		}
		return true
	})
	if len(bad) > 0 {
		slices.Sort(bad)
		return errorf(path+"."+bad[0], "not supported by the fibmesh slow path (remove it, or use a field the slow path honours)")
	}
	if len(r.GetUnknown()) > 0 {
		return errorf(path, "carries fields unknown to this agent (is the controller newer than the agent?)")
	}
	return nil
}

// unpack decodes a typed_config.
func unpack(a *anypb.Any, path string) (proto.Message, error) {
	if a == nil {
		return nil, errorf(path, "missing typed_config")
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, errorf(path, "cannot decode %s: %v", a.GetTypeUrl(), err)
	}
	return m, nil
}

// prefix converts a CidrRange.
func prefix(c *corev3.CidrRange, path string) (netip.Prefix, error) {
	if err := onlyFields(c, path, "address_prefix", "prefix_len"); err != nil {
		return netip.Prefix{}, err
	}
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, errorf(path+".address_prefix", "%q is not an IP address", c.GetAddressPrefix())
	}
	a = a.WithZone("")
	// Envoy: an unset prefix_len is 0 (the whole address family).
	bits := int(c.GetPrefixLen().GetValue())
	if bits > a.BitLen() {
		return netip.Prefix{}, errorf(path+".prefix_len", "%d is longer than the %d bits of %s", bits, a.BitLen(), a)
	}
	// Connections are matched by their unmapped address, so an IPv4
	// range written as IPv4-mapped IPv6 (::ffff:a.b.c.d/96+n) is the
	// IPv4 range.
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// prefixes converts a list of CidrRanges.
func prefixes(cs []*corev3.CidrRange, path string) ([]netip.Prefix, error) {
	if len(cs) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(cs))
	for i, c := range cs {
		p, err := prefix(c, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// stringMatch compiles an Envoy StringMatcher into a predicate; regular
// expressions are RE2 (Go's regexp, the syntax Envoy's safe_regex
// uses) and must match the whole string, as in Envoy.
func stringMatch(sm *matcherv3.StringMatcher, path string) (func(string) bool, error) {
	if sm == nil {
		return nil, errorf(path, "missing string matcher")
	}
	if err := onlyFields(sm, path, "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"); err != nil {
		return nil, err
	}
	fold := sm.GetIgnoreCase()
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		v := p.Exact
		if fold {
			return func(s string) bool { return strings.EqualFold(s, v) }, nil
		}
		return func(s string) bool { return s == v }, nil
	case *matcherv3.StringMatcher_Prefix:
		v := p.Prefix
		if v == "" {
			return nil, errorf(path+".prefix", "must not be empty")
		}
		if fold {
			return func(s string) bool { return len(s) >= len(v) && strings.EqualFold(s[:len(v)], v) }, nil
		}
		return func(s string) bool { return strings.HasPrefix(s, v) }, nil
	case *matcherv3.StringMatcher_Suffix:
		v := p.Suffix
		if v == "" {
			return nil, errorf(path+".suffix", "must not be empty")
		}
		if fold {
			return func(s string) bool { return len(s) >= len(v) && strings.EqualFold(s[len(s)-len(v):], v) }, nil
		}
		return func(s string) bool { return strings.HasSuffix(s, v) }, nil
	case *matcherv3.StringMatcher_Contains:
		v := p.Contains
		if v == "" {
			return nil, errorf(path+".contains", "must not be empty")
		}
		if fold {
			lv := strings.ToLower(v)
			return func(s string) bool { return containsFold(s, lv) }, nil
		}
		return func(s string) bool { return strings.Contains(s, v) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		if fold {
			return nil, errorf(path+".ignore_case", "cannot be combined with safe_regex (as in Envoy)")
		}
		re, err := safeRegex(p.SafeRegex, path+".safe_regex")
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	}
	return nil, errorf(path, "no match pattern (exact, prefix, suffix, contains or safe_regex)")
}

// containsFold reports whether s contains the lower-case lv, ignoring
// case, without allocating.
func containsFold(s, lv string) bool {
	for i := 0; i+len(lv) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(lv)], lv) {
			return true
		}
	}
	return false
}

// safeRegex compiles a RegexMatcher anchored at both ends: Envoy's
// safe_regex matches the whole string.
func safeRegex(rm *matcherv3.RegexMatcher, path string) (*regexp.Regexp, error) {
	if rm == nil {
		return nil, errorf(path, "missing regex matcher")
	}
	if err := onlyFields(rm, path, "regex", "google_re2"); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(`^(?:` + rm.GetRegex() + `)$`)
	if err != nil {
		return nil, errorf(path+".regex", "%q does not compile as RE2: %v", rm.GetRegex(), err)
	}
	return re, nil
}

// oneofName names the member of a oneof that m sets ("unset" when none),
// for error messages.
func oneofName(m proto.Message, oneof protoreflect.Name) string {
	r := m.ProtoReflect()
	od := r.Descriptor().Oneofs().ByName(oneof)
	if od == nil {
		return "unknown"
	}
	if fd := r.WhichOneof(od); fd != nil {
		return string(fd.Name())
	}
	return "unset"
}
