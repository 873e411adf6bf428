package proxy

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		uri, want, wantPath string
	}{
		{"/api/reviews/1", "/api/reviews/1", "/api/reviews/1"},
		{"/api/reviews/../admin", "/api/admin", "/api/admin"},
		{"/api/reviews/%2e%2e/admin", "/api/admin", "/api/admin"},
		{"/api/reviews/%2E%2e/admin?x=1", "/api/admin?x=1", "/api/admin"},
		{"/./a/./b/.", "/a/b/", "/a/b/"},
		{"/../../etc", "/etc", "/etc"},
		{"/a/b/..", "/a/", "/a/"},
		{"/%7euser/%41", "/~user/A", "/~user/A"},
		{"/a%2fb/../c", "/c", "/c"},                            // %2F is one segment's byte, not a separator
		{"/a%2fb/c", "/a%2Fb/c", "/a/b/c"},                     // kept encoded (upper-cased)
		{"/a/.hidden/..x", "/a/.hidden/..x", "/a/.hidden/..x"}, // not dot segments
		{"/a?p=/../x", "/a?p=/../x", "/a"},                     // the query is not the path
		{"/public/..\\admin/x", "/admin/x", "/admin/x"},        // a backslash is a slash (Envoy)
		{"/a\\b", "/a/b", "/a/b"},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + tc.uri + " HTTP/1.1\r\nHost: x\r\n\r\n")))
			if err != nil {
				t.Fatal(err)
			}
			if !normalizePath(r) {
				t.Fatal("refused")
			}
			if r.RequestURI != tc.want || r.URL.Path != tc.wantPath || requestPath(r) != tc.want {
				t.Errorf("RequestURI %q, URL.Path %q, requestPath %q; want %q, %q", r.RequestURI, r.URL.Path, requestPath(r), tc.want, tc.wantPath)
			}
		})
	}
}
