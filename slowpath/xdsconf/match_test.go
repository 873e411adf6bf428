package xdsconf

import (
	"net/netip"
	"strings"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Envoy's filter chain match order, and that a step never backtracks.
func TestListenerMatch(t *testing.T) {
	chains := []*FilterChain{
		{Name: "vip-80", Prefixes: pfx("10.96.0.1/32"), Port: 80},
		{Name: "vip-any", Prefixes: pfx("10.96.0.1/32")},
		{Name: "net-80", Prefixes: pfx("10.96.0.0/16"), Port: 80},
		{Name: "all-80", Port: 80, Prefixes: pfx("0.0.0.0/0")},
		{Name: "v6-443", Prefixes: pfx("fd00::/64"), Port: 443},
		{Name: "sni-exact", Prefixes: pfx("10.1.0.1/32"), Port: 443, ServerNames: []string{"api.example.com"}},
		{Name: "sni-wild", Prefixes: pfx("10.1.0.1/32"), Port: 443, ServerNames: []string{"*.example.com"}},
		{Name: "sni-wild-long", Prefixes: pfx("10.1.0.1/32"), Port: 443, ServerNames: []string{"*.eu.example.com"}},
		{Name: "sni-none", Prefixes: pfx("10.1.0.1/32"), Port: 443},
		{Name: "src-narrow", Prefixes: pfx("10.2.0.1/32"), Port: 8080, SourcePrefixes: pfx("192.168.1.0/24")},
		{Name: "src-wide", Prefixes: pfx("10.2.0.1/32"), Port: 8080, SourcePrefixes: pfx("192.168.0.0/16")},
		{Name: "only-sni", Prefixes: pfx("10.3.0.1/32"), Port: 443, ServerNames: []string{"only.example.com"}},
		{Name: "only-src", Prefixes: pfx("10.4.0.1/32"), SourcePrefixes: pfx("172.16.0.0/12")},
		{Name: "multi", Prefixes: pfx("10.5.0.1/32", "10.5.0.2/32"), Port: 9080},
	}
	def := &FilterChain{Name: "default"}
	compiled, err := buildIndex(chains, true)
	if err != nil {
		t.Fatal(err)
	}
	listeners := map[string]*Listener{
		"compiled": {Chains: chains, Default: def},
		"by hand":  {Chains: chains, Default: def},
	}
	listeners["compiled"].idx.Store(compiled)
	src := "10.9.9.9:5000"
	for _, tc := range []struct {
		dst, sni, src, want string
	}{
		{dst: "10.96.0.1:80", want: "vip-80"},
		{dst: "10.96.0.1:81", want: "vip-any"},
		{dst: "10.96.0.2:80", want: "net-80"},
		{dst: "10.97.0.1:80", want: "all-80"},
		// Port 80 has chains, so the port-less vip-any is never
		// considered for 10.96.0.1:80 … and for 10.96.5.5:81, no chain
		// without a port covers the address: the default.
		{dst: "10.96.5.5:81", want: "default"},
		{dst: "[fd00::1]:443", want: "v6-443"},
		{dst: "[::ffff:10.96.0.1]:80", want: "vip-80"}, // v4-mapped
		{dst: "10.1.0.1:443", sni: "api.example.com", want: "sni-exact"},
		{dst: "10.1.0.1:443", sni: "API.Example.COM.", want: "sni-exact"},
		{dst: "10.1.0.1:443", sni: "www.example.com", want: "sni-wild"},
		{dst: "10.1.0.1:443", sni: "a.b.example.com", want: "sni-wild"},
		{dst: "10.1.0.1:443", sni: "x.eu.example.com", want: "sni-wild-long"},
		{dst: "10.1.0.1:443", sni: "example.com", want: "sni-none"},
		{dst: "10.1.0.1:443", want: "sni-none"},
		// Port 443 chains exist but none of them for 10.1.0.9: no
		// backtracking to port-less chains.
		{dst: "10.1.0.9:443", want: "default"},
		{dst: "10.3.0.1:443", sni: "only.example.com", want: "only-sni"},
		{dst: "10.3.0.1:443", sni: "other.example.com", want: "default"},
		{dst: "10.3.0.1:443", want: "default"},
		{dst: "10.2.0.1:8080", src: "192.168.1.7:1", want: "src-narrow"},
		{dst: "10.2.0.1:8080", src: "192.168.2.7:1", want: "src-wide"},
		{dst: "10.2.0.1:8080", src: "10.0.0.1:1", want: "default"},
		{dst: "10.4.0.1:22", src: "172.16.3.3:1", want: "only-src"},
		{dst: "10.4.0.1:22", src: "172.32.3.3:1", want: "default"},
		{dst: "10.5.0.2:9080", want: "multi"},
		{dst: "10.5.0.3:9080", want: "default"},
	} {
		for lname, l := range listeners {
			s := src
			if tc.src != "" {
				s = tc.src
			}
			got := l.Match(MatchInput{Destination: ap(tc.dst), ServerName: tc.sni, Source: ap(s)})
			if got == nil || got.Name != tc.want {
				t.Errorf("%s: Match(%s, sni %q, src %s) = %v, want %s", lname, tc.dst, tc.sni, s, got, tc.want)
			}
		}
	}
	var nilListener *Listener
	if nilListener.Match(MatchInput{}) != nil {
		t.Error("nil listener matched")
	}
	if (&Listener{}).Match(MatchInput{Destination: ap("1.2.3.4:5")}) != nil {
		t.Error("empty listener without a default matched")
	}
}

func TestBuildIndexDuplicate(t *testing.T) {
	chains := []*FilterChain{
		{Name: "a", Prefixes: pfx("10.0.0.1/32", "10.0.0.2/32"), Port: 80},
		{Name: "b", Prefixes: pfx("10.0.0.2/32"), Port: 80},
	}
	if _, err := buildIndex(chains, true); err == nil || !strings.Contains(err.Error(), `"a" and "b" have the same match`) {
		t.Errorf("duplicate chains: %v", err)
	}
	// By hand, the first wins.
	l := &Listener{Chains: chains}
	if c := l.Match(MatchInput{Destination: ap("10.0.0.2:80")}); c == nil || c.Name != "a" {
		t.Errorf("Match = %v, want a", c)
	}
}
