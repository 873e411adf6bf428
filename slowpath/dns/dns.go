// Package dns is the DNS proxy the agent runs for each captured pod, as
// Istio's DNS proxy does: the pod's queries to port 53 (UDP and TCP,
// redirected by slowpath/capture to slowpath.DNSPort) are answered from
// the mesh's hostnames, and other names are forwarded to an upstream
// resolver, or refused when there is none (the lab: its traffic must stay
// inside it).
//
// A and AAAA queries for a mesh hostname (Snapshot.Hosts: Services and
// ServiceEntry hosts, FQDNs) are answered with its VIPs, authoritatively;
// a mesh name with no address of the asked family, or asked for another
// type, gets an empty NOERROR answer (never NXDOMAIN, so resolvers do not
// give up on the name). Kubernetes short forms are resolved relative to
// the pod's namespace: "reviews" is reviews.<ns>.svc.<domain>,
// "reviews.production" and "reviews.production.svc" complete the same
// way, and names a resolver built by appending a search domain
// ("reviews.production.svc.cluster.local.<ns>.svc.cluster.local", or any
// host search domain after ".svc.<domain>") are answered as the name
// before it.
//
// Everything is bounded: queries larger than MaxQuerySize are dropped,
// answers never exceed the client's size (512 bytes, or its EDNS0 size up
// to MaxUDPSize, over UDP; they are truncated with TC set instead), at
// most Config.MaxTCPConns TCP connections and Config.MaxInflight UDP
// queries are served at once, and every TCP connection and upstream
// exchange has a timeout.
//
// It uses golang.org/x/net/dns/dnsmessage (already a dependency, the
// parser Go's own resolver uses, fuzzed upstream) rather than
// github.com/miekg/dns: the proxy only needs to read a question and build
// A/AAAA answers, and forwards other messages as bytes.
package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Bounds and defaults.
const (
	// MaxQuerySize is the largest query read; larger ones are dropped
	// (a query is one question and an OPT record: a few hundred bytes).
	MaxQuerySize = 4096
	// MaxUDPSize is the largest UDP answer sent, whatever EDNS0 size the
	// client offers (the DNS flag day 2020 value).
	MaxUDPSize = 1232
	// DefaultTTL is the TTL of mesh answers when Config.TTL is 0.
	DefaultTTL = 30 * time.Second
	// DefaultTimeout bounds an upstream exchange and a TCP client's idle
	// time between queries when Config.Timeout is 0.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxTCPConns is Config.MaxTCPConns' default.
	DefaultMaxTCPConns = 64
	// DefaultMaxInflight is Config.MaxInflight's default.
	DefaultMaxInflight = 256
	// DefaultClusterDomain is Config.ClusterDomain's default.
	DefaultClusterDomain = "cluster.local"
)

// Config is one pod's DNS proxy.
type Config struct {
	// Hosts returns the mesh's hostnames (FQDN, lower case, no trailing
	// dot) and their VIPs: xdsconf.Snapshot.Hosts of the current
	// snapshot. It is called once per query and must be cheap and safe
	// for concurrent use; the map is not modified. A name with no
	// addresses counts as not in the mesh (forwarded).
	Hosts func() map[string][]netip.Addr
	// Namespace is the pod's namespace, for short names.
	Namespace string
	// ClusterDomain is the cluster's DNS domain ("" means cluster.local).
	ClusterDomain string
	// Upstream is the resolver (host:port) other names are forwarded to;
	// "" answers them REFUSED.
	Upstream string
	// Dial opens connections to Upstream ("udp" and "tcp"). The agent
	// gives a dialer of marked sockets in the pod's namespace, so that
	// capture does not send them back here. nil uses a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TTL of mesh answers (0: DefaultTTL).
	TTL time.Duration
	// Timeout bounds an upstream exchange and a TCP client's idle time
	// between queries (0: DefaultTimeout).
	Timeout time.Duration
	// MaxTCPConns bounds concurrent TCP clients; more are closed at once
	// (0: DefaultMaxTCPConns).
	MaxTCPConns int
	// MaxInflight bounds UDP queries being answered at once; more are
	// dropped, and the client retries (0: DefaultMaxInflight).
	MaxInflight int
}

// Validate reports the first field of c that New cannot use, naming it
// and the fix.
func (c Config) Validate() error {
	if c.Hosts == nil {
		return fmt.Errorf("dns config: Hosts is nil: give the function that returns the snapshot's Hosts")
	}
	if c.Upstream != "" {
		host, port, err := net.SplitHostPort(c.Upstream)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("dns config: Upstream %q is not host:port (for example 10.96.0.10:53), or leave it empty to refuse names outside the mesh", c.Upstream)
		}
	}
	if strings.Trim(c.ClusterDomain, ".") != c.ClusterDomain {
		return fmt.Errorf("dns config: ClusterDomain %q: give it without leading or trailing dots (cluster.local)", c.ClusterDomain)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"TTL", int64(c.TTL)}, {"Timeout", int64(c.Timeout)}, {"MaxTCPConns", int64(c.MaxTCPConns)}, {"MaxInflight", int64(c.MaxInflight)}} {
		if f.v < 0 {
			return fmt.Errorf("dns config: %s is negative: give a positive value, or 0 for the default", f.name)
		}
	}
	return nil
}

// Server answers one pod's queries. Its methods are safe for concurrent
// use; one Server may serve several sockets (UDP and TCP, IPv4 and IPv6).
type Server struct {
	cfg      Config
	ttl      uint32
	suffixes []string // search suffixes, longest first: <ns>.svc.<d>, svc.<d>, <d>
	svcCut   string   // ".svc.<d>."
	tcpSem   chan struct{}
	udpSem   chan struct{}
}

// New returns a server for cfg, with defaults for its zero fields. A
// config that fails Validate still gives a server, which answers SERVFAIL
// for what it cannot do (no Hosts: every query; a bad Upstream: names
// outside the mesh); call Validate first to report the mistake.
func New(cfg Config) *Server {
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	cfg.ClusterDomain = strings.ToLower(strings.Trim(cfg.ClusterDomain, "."))
	cfg.Namespace = strings.ToLower(cfg.Namespace)
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = DefaultMaxTCPConns
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	d := cfg.ClusterDomain
	s := &Server{
		cfg:    cfg,
		ttl:    uint32(cfg.TTL / time.Second),
		svcCut: ".svc." + d + ".",
		tcpSem: make(chan struct{}, cfg.MaxTCPConns),
		udpSem: make(chan struct{}, cfg.MaxInflight),
	}
	if cfg.Namespace != "" {
		s.suffixes = append(s.suffixes, cfg.Namespace+".svc."+d)
	}
	s.suffixes = append(s.suffixes, "svc."+d, d)
	return s
}

// lookup finds name (lower case, no trailing dot) in the mesh: as it is,
// completed as a Kubernetes short name relative to the pod's namespace,
// or with a search domain a resolver appended removed. found is false
// when the name is not the mesh's.
func (s *Server) lookup(hosts map[string][]netip.Addr, name string) (addrs []netip.Addr, found bool) {
	try := func(n string) bool {
		if a := hosts[n]; len(a) > 0 {
			addrs, found = a, true
		}
		return found
	}
	expand := func(n string) bool {
		if try(n) {
			return true
		}
		d := s.cfg.ClusterDomain
		switch strings.Count(n, ".") {
		case 0: // reviews
			return s.cfg.Namespace != "" && try(n+"."+s.cfg.Namespace+".svc."+d)
		case 1: // reviews.production
			return try(n + ".svc." + d)
		case 2: // reviews.production.svc
			return strings.HasSuffix(n, ".svc") && try(n+"."+d)
		}
		return false
	}
	if expand(name) {
		return addrs, true
	}
	// A search domain appended by the pod's resolver: the cluster's own
	// (…cluster.local.<ns>.svc.cluster.local, api.example.com.svc.cluster.local)…
	for _, suf := range s.suffixes {
		if base, ok := strings.CutSuffix(name, "."+suf); ok && base != "" && expand(base) {
			return addrs, true
		}
	}
	// …or one of the host's (reviews.production.svc.cluster.local.example.com).
	if i := strings.Index(name, s.svcCut); i > 0 && try(name[:i+len(s.svcCut)-1]) {
		return addrs, true
	}
	return nil, false
}
