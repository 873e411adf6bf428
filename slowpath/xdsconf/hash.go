package xdsconf

import (
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// compileHashPolicy converts a route action's hash_policy: header,
// cookie (name, path, ttl), connection_properties.source_ip and
// query_parameter, each possibly terminal; filter_state, header
// rewrites and cookie attributes are refused.
func compileHashPolicy(hps []*routev3.RouteAction_HashPolicy, path string) ([]HashPolicy, error) {
	var out []HashPolicy
	for i, hp := range hps {
		p := fmt.Sprintf("%s[%d]", path, i)
		if err := onlyFields(hp, p, "header", "cookie", "connection_properties", "query_parameter", "terminal"); err != nil {
			return nil, err
		}
		h := HashPolicy{Terminal: hp.GetTerminal()}
		switch ps := hp.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			if err := onlyFields(ps.Header, p+".header", "header_name"); err != nil {
				return nil, err
			}
			h.Kind, h.Name = HashHeader, strings.ToLower(ps.Header.GetHeaderName())
			if h.Name == "" {
				return nil, errorf(p+".header.header_name", "must not be empty")
			}
		case *routev3.RouteAction_HashPolicy_Cookie_:
			c := ps.Cookie
			if err := onlyFields(c, p+".cookie", "name", "path", "ttl"); err != nil {
				return nil, err
			}
			if c.GetName() == "" {
				return nil, errorf(p+".cookie.name", "must not be empty")
			}
			h.Kind, h.Name, h.CookiePath = HashCookie, c.GetName(), c.GetPath()
			if !validCookieName(h.Name) {
				return nil, errorf(p+".cookie.name", "%q is not a cookie name (RFC 6265 token)", h.Name)
			}
			if strings.ContainsAny(h.CookiePath, ";\r\n") {
				return nil, errorf(p+".cookie.path", "%q: a cookie path has no ';' or line break", h.CookiePath)
			}
			if c.Ttl != nil {
				d, err := duration(c.GetTtl(), p+".cookie.ttl")
				if err != nil {
					return nil, err
				}
				h.CookieTTL, h.CookieGenerate = d, true
			}
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if err := onlyFields(ps.ConnectionProperties, p+".connection_properties", "source_ip"); err != nil {
				return nil, err
			}
			if !ps.ConnectionProperties.GetSourceIp() {
				continue // hashes nothing, as in Envoy
			}
			h.Kind = HashSourceIP
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			if err := onlyFields(ps.QueryParameter, p+".query_parameter", "name"); err != nil {
				return nil, err
			}
			h.Kind, h.Name = HashQueryParameter, ps.QueryParameter.GetName()
			if h.Name == "" {
				return nil, errorf(p+".query_parameter.name", "must not be empty")
			}
		default:
			return nil, errorf(p, "%s is not supported (use header, cookie, connection_properties or query_parameter)", oneofName(hp, "policy_specifier"))
		}
		out = append(out, h)
	}
	return out, nil
}

// validCookieName: an RFC 6265 token (no separators, controls or
// spaces), so that a generated Set-Cookie is well formed.
func validCookieName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

// HashKey is the request's consistent-hash key by the route's hash
// policies, as Envoy computes it: each policy in order that yields a
// value (a header present, a cookie present, the source IP, a query
// parameter present) is hashed and combined (the key so far rotated
// left by one, XOR the new hash); a terminal policy that yields one
// ends the evaluation. A cookie policy with a TTL yields a value for a
// request without the cookie too: the cookie the proxy sets on the
// response (SetCookie). ok is false when no policy yields a value;
// Cluster.PickRequest then picks at random. src is the downstream
// address (an invalid one yields nothing); req.Header's "cookie" is
// parsed in place (the values of several cookie headers may be joined
// by "," or "; "). It does not allocate.
func (r *Route) HashKey(src netip.Addr, req *HTTPRequest) (h uint64, ok bool) {
	h, ok, _ = r.hashKey(src, req)
	return h, ok
}

// hashKey also returns the index of the cookie policy whose cookie it
// generated, -1 when none.
func (r *Route) hashKey(src netip.Addr, req *HTTPRequest) (h uint64, ok bool, generated int) {
	generated = -1
	for i := range r.Hash {
		p := &r.Hash[i]
		v, yes := p.hash(src, req)
		if !yes && p.Kind == HashCookie && p.CookieGenerate && src.IsValid() {
			b := cookieBytes(src)
			v, yes, generated = mix64(fnv1a(fnvOffset, b[:])), true, i // hashString(cookieValue(src), 0)
		}
		if !yes {
			continue
		}
		if ok {
			h = bits.RotateLeft64(h, 1) ^ v
		} else {
			h, ok = v, true
		}
		if p.Terminal {
			break
		}
	}
	return h, ok, generated
}

func (p *HashPolicy) hash(src netip.Addr, req *HTTPRequest) (uint64, bool) {
	switch p.Kind {
	case HashSourceIP:
		if !src.IsValid() {
			return 0, false
		}
		return hashAddr(src), true // as Cluster.Pick at L4: the same source, the same endpoint
	case HashHeader:
		if req == nil {
			return 0, false
		}
		v, ok := req.header(p.Name)
		if !ok {
			return 0, false
		}
		return hashString(v, 0), true
	case HashCookie:
		if req == nil || req.Header == nil {
			return 0, false
		}
		all, ok := req.Header("cookie")
		if !ok {
			return 0, false
		}
		v := findCookie(all, p.Name)
		if v == "" {
			return 0, false // Envoy: an empty cookie is no cookie
		}
		return hashString(v, 0), true
	case HashQueryParameter:
		if req == nil {
			return 0, false
		}
		v, ok := queryParameter(req.Path, p.Name)
		if !ok {
			return 0, false
		}
		return hashString(v, 0), true
	}
	return 0, false
}

// findCookie returns the value of the first cookie named name in a
// Cookie header ("a=1; b=2", several headers joined by "," or "; "),
// without its surrounding quotes; "" when there is none.
func findCookie(header, name string) string {
	for header != "" {
		var pair string
		if i := strings.IndexAny(header, ";,"); i >= 0 {
			pair, header = header[:i], header[i+1:]
		} else {
			pair, header = header, ""
		}
		pair = strings.TrimLeft(pair, " \t")
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k != name {
			continue
		}
		v = strings.TrimRight(v, " \t")
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v
	}
	return ""
}

// queryParameter returns the first value of a query parameter of a
// :path, as sent (not percent-decoded, as Envoy's hash policy); a
// parameter without "=" has the value "".
func queryParameter(path, name string) (string, bool) {
	i := strings.IndexByte(path, '?')
	if i < 0 {
		return "", false
	}
	q := path[i+1:]
	if j := strings.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	for q != "" {
		var kv string
		if j := strings.IndexByte(q, '&'); j >= 0 {
			kv, q = q[:j], q[j+1:]
		} else {
			kv, q = q, ""
		}
		k, v, _ := strings.Cut(kv, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// cookieValue is the value of a cookie the proxy generates for a
// client: the same for every request from one address (Envoy hashes
// the connection's addresses), 16 hex digits.
func cookieValue(src netip.Addr) string {
	b := cookieBytes(src)
	return string(b[:])
}

func cookieBytes(src netip.Addr) (b [16]byte) {
	v := mix64(hashAddr(src) ^ 0x5bd1e9955bd1e995)
	const hex = "0123456789abcdef"
	for i := range b {
		b[15-i] = hex[v&0xf]
		v >>= 4
	}
	return b
}

// header returns a header of the request by lower-case name, the
// pseudo-headers from the fields.
func (r *HTTPRequest) header(name string) (string, bool) {
	switch name {
	case ":method":
		return r.Method, r.Method != ""
	case ":path":
		return r.Path, r.Path != ""
	case ":authority":
		return r.Authority, r.Authority != ""
	case ":scheme":
		return r.Scheme, r.Scheme != ""
	}
	if r.Header == nil {
		return "", false
	}
	return r.Header(name)
}

// SetCookie is the Set-Cookie header value the proxy adds to the
// response when the request's key came from a cookie it generated (a
// cookie hash policy with a TTL, the request without the cookie, and
// no terminal policy before it that yielded a key), as Envoy writes it:
// name="value"; Max-Age=<ttl seconds, left out for a session cookie>;
// Path=<path, when set>; HttpOnly. "" when there is none to set. It
// allocates only when it returns a cookie.
func (r *Route) SetCookie(src netip.Addr, req *HTTPRequest) string {
	gen := false
	for i := range r.Hash {
		gen = gen || r.Hash[i].CookieGenerate
	}
	if !gen {
		return ""
	}
	_, _, i := r.hashKey(src, req)
	if i < 0 {
		return ""
	}
	p := &r.Hash[i]
	var b strings.Builder
	b.WriteString(p.Name)
	b.WriteString(`="`)
	b.WriteString(cookieValue(src))
	b.WriteByte('"')
	if s := int64(p.CookieTTL.Seconds()); s > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(s, 10))
	}
	if p.CookiePath != "" {
		b.WriteString("; Path=")
		b.WriteString(p.CookiePath)
	}
	b.WriteString("; HttpOnly")
	return b.String()
}
