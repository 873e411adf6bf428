package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// normalizePath normalizes a request's path before routing and
// authorization, as Istio's sidecars do (Envoy's normalize_path, Istio's
// default PATH_NORMALIZATION=BASE): backslashes made slashes, RFC 3986
// section 6.2.2,
// percent-encoded unreserved characters decoded ("%7e" → "~", "%2e" →
// ".") and the rest upper-cased ("%2f" → "%2F", still not a separator),
// then dot segments removed ("/api/reviews/../admin" → "/api/admin").
// Without it a rule on "/api/reviews/*" would allow a request that the
// app resolves to another path. The app gets the normalized path too.
// It reports false when the path cannot be a request's (the request is
// then refused with 400).
func normalizePath(r *http.Request) bool {
	if r.Method == http.MethodConnect || r.URL.Opaque != "" || r.RequestURI == "*" {
		return true
	}
	// The path as the client wrote it (Go's URL would re-encode a
	// backslash).
	raw := r.URL.EscapedPath()
	if strings.HasPrefix(r.RequestURI, "/") {
		raw, _, _ = strings.Cut(r.RequestURI, "?")
	}
	if !strings.ContainsAny(raw, "%\\") && !strings.Contains(raw, "/.") && !strings.HasPrefix(raw, ".") {
		return true
	}
	// Backslashes are slashes, as Envoy's canonicalization has them.
	norm := removeDotSegments(normalizePercent(strings.ReplaceAll(raw, "\\", "/")))
	if norm == raw {
		return true
	}
	uri := norm
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		uri += "?" + r.URL.RawQuery
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return false
	}
	u.Scheme, u.Host = r.URL.Scheme, r.URL.Host
	r.URL = u
	r.RequestURI = uri
	return true
}

// normalizePercent decodes percent-encoded unreserved characters and
// upper-cases the hex digits of the others.
func normalizePercent(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' || i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			b.WriteByte(c)
			continue
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			b.WriteByte('%')
			b.WriteByte(upperHex(p[i+1]))
			b.WriteByte(upperHex(p[i+2]))
		}
		i += 2
	}
	return b.String()
}

// removeDotSegments is RFC 3986 section 5.2.4 on an absolute path.
func removeDotSegments(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	var out []string
	segs := strings.Split(p, "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	res := strings.Join(out, "/")
	if !strings.HasPrefix(res, "/") {
		res = "/" + res
	}
	return res
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
