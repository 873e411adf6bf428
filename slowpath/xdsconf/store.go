package xdsconf

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// maxErrors bounds how many refused resources one error (one NACK)
// lists.
const maxErrors = 8

// Store holds the compiled config: it validates and converts each
// resource once, joins the four types into a Snapshot and swaps it in
// atomically. Update is for the agent's xDS validator (one goroutine or
// several: updates are serialized); Snapshot and Changed are for the
// proxy, and take no lock.
type Store struct {
	mu       sync.Mutex
	types    map[string]map[string]entry // type URL → name → resource
	versions map[string]string
	// joined are the clusters of the snapshot in force with their
	// endpoints, by what they were joined from: an unchanged cluster and
	// assignment keep their *Cluster (and its LB tables) across updates.
	joined map[joinKey]*Cluster
	// listeners are the listeners of the snapshot in force, resolved
	// against RDS.
	listeners map[string]*Listener

	snap    atomic.Pointer[Snapshot]
	changed atomic.Pointer[chan struct{}]
}

// entry is one resource in force and its compiled form (*Listener,
// *Cluster, *Endpoints or compiledRoute).
type entry struct {
	msg      proto.Message
	compiled any
}

type joinKey struct {
	c   *Cluster
	eps *Endpoints
}

// NewStore returns a Store whose snapshot is empty: no listeners (every
// connection is refused) and no clusters.
func NewStore() *Store {
	s := &Store{types: map[string]map[string]entry{}, versions: map[string]string{}, joined: map[joinKey]*Cluster{}}
	s.snap.Store(&Snapshot{Clusters: map[string]*Cluster{}, Hosts: map[string][]netip.Addr{},
		Endpoints: map[netip.Addr]*Cluster{}, Versions: map[string]string{}, Routes: map[string]*RouteConfig{}})
	ch := make(chan struct{})
	s.changed.Store(&ch)
	return s
}

// Snapshot returns the config in force; never nil. It is immutable: keep
// it for the life of a connection for a consistent view.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// Changed returns a channel closed when the next snapshot is swapped in
// (then call Changed again for the one after).
func (s *Store) Changed() <-chan struct{} { return *s.changed.Load() }

// compiler converts one resource type.
type compiler func(m proto.Message, path string) (any, error)

var compilers = map[string]struct {
	kind    string
	compile compiler
}{
	resource.ListenerType: {"listener", func(m proto.Message, path string) (any, error) {
		l, ok := m.(*listenerv3.Listener)
		if !ok {
			return nil, errorf(path, "is a %T, not a Listener", m)
		}
		return compileListener(l, path)
	}},
	resource.ClusterType: {"cluster", func(m proto.Message, path string) (any, error) {
		c, ok := m.(*clusterv3.Cluster)
		if !ok {
			return nil, errorf(path, "is a %T, not a Cluster", m)
		}
		return compileCluster(c, path)
	}},
	resource.EndpointType: {"endpoints", func(m proto.Message, path string) (any, error) {
		c, ok := m.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			return nil, errorf(path, "is a %T, not a ClusterLoadAssignment", m)
		}
		return compileAssignment(c, path)
	}},
	resource.RouteType: {"route configuration", func(m proto.Message, path string) (any, error) {
		r, ok := m.(*routev3.RouteConfiguration)
		if !ok {
			return nil, errorf(path, "is a %T, not a RouteConfiguration", m)
		}
		d, err := compileRoute(r, path)
		if err != nil {
			return nil, err
		}
		rc, err := compileRouteConfig(r, path)
		if err != nil {
			return nil, err
		}
		return compiledRoute{def: d, rc: rc}, nil
	}},
}

// resourceName is the name a resource calls itself.
func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	}
	return ""
}

// Update replaces every resource of one type (typeURL, as the
// go-control-plane resource package names them) with resources (name →
// resource, all of the type as they are after a response) at version.
// Listeners, clusters, endpoints and route configurations are compiled;
// other types are ignored (nil). Resources unchanged since the last
// Update (the same message, or an equal one) are not compiled again.
//
// If any resource cannot be honoured, Update returns an error naming
// each such resource (up to 8), the field and why, for the agent to
// NACK with, and changes nothing. Otherwise it builds a new Snapshot
// and swaps it in.
func (s *Store) Update(typeURL string, resources map[string]proto.Message, version string) error {
	comp, ok := compilers[typeURL]
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.types[typeURL]
	next := make(map[string]entry, len(resources))
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(resources)) {
		m := resources[name]
		if e, ok := prev[name]; ok && m != nil && (e.msg == m || proto.Equal(e.msg, m)) {
			next[name] = entry{msg: m, compiled: e.compiled}
			continue
		}
		path := fmt.Sprintf("%s %q", comp.kind, name)
		if m == nil {
			errs = append(errs, errorf(path, "no resource"))
		} else if got := resourceName(m); got != name && got != "" {
			errs = append(errs, errorf(path, "calls itself %q", got))
		} else if c, err := comp.compile(m, path); err != nil {
			errs = append(errs, err)
		} else {
			next[name] = entry{msg: m, compiled: c}
		}
		if len(errs) == maxErrors {
			errs = append(errs, errors.New("(more not checked)"))
			break
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s refused: %w", comp.kind, errors.Join(errs...))
	}
	s.types[typeURL] = next
	s.versions[typeURL] = version
	s.publish(typeURL)
	return nil
}

// publish builds the snapshot after an update of typeURL and swaps it in.
// Only what the type can change is rebuilt.
func (s *Store) publish(typeURL string) {
	old := s.snap.Load()
	snap := &Snapshot{Outbound: old.Outbound, Inbound: old.Inbound, InboundPlaintext: old.InboundPlaintext,
		Clusters: old.Clusters, Hosts: old.Hosts, Endpoints: old.Endpoints, Versions: maps.Clone(s.versions), Routes: old.Routes}
	if typeURL == resource.RouteType {
		snap.Routes = make(map[string]*RouteConfig, len(s.types[resource.RouteType]))
		for name, e := range s.types[resource.RouteType] {
			snap.Routes[name] = e.compiled.(compiledRoute).rc
		}
	}
	if typeURL == resource.ListenerType || typeURL == resource.RouteType {
		s.resolveListeners()
		snap.Outbound, snap.Inbound, snap.InboundPlaintext = s.listeners[OutboundListener], s.listeners[InboundListener], s.listeners[InboundPlaintextListener]
	}
	if typeURL == resource.ClusterType || typeURL == resource.EndpointType {
		snap.Clusters = s.joinClusters()
	}
	if typeURL != resource.RouteType { // hosts come from chains' names, not from routes
		var raw *listenerv3.Listener
		if e, ok := s.types[resource.ListenerType][OutboundListener]; ok {
			raw, _ = e.msg.(*listenerv3.Listener)
		}
		snap.Hosts = hosts(snap.Outbound, raw, snap.Clusters)
		snap.Endpoints = meshEndpoints(snap.Clusters)
	}
	s.snap.Store(snap)
	ch := make(chan struct{})
	close(*s.changed.Swap(&ch))
}

// resolveListeners joins the compiled listeners with RDS: each HTTP
// chain naming a route configuration gets its catch-all cluster.
func (s *Store) resolveListeners() {
	routes := s.types[resource.RouteType]
	out := map[string]*Listener{}
	for name, e := range s.types[resource.ListenerType] {
		out[name] = resolveListener(e.compiled.(*Listener), routes)
	}
	s.listeners = out
}

func resolveListener(l *Listener, routes map[string]entry) *Listener {
	needs := func(c *FilterChain) bool { return c != nil && c.HTTP != nil && c.HTTP.RouteConfig != "" }
	if !slices.ContainsFunc(l.Chains, needs) && !needs(l.Default) {
		return l
	}
	resolve := func(c *FilterChain) *FilterChain {
		if !needs(c) {
			return c
		}
		h := &HTTPChain{RouteConfig: c.HTTP.RouteConfig, RBAC: c.HTTP.RBAC}
		if e, ok := routes[c.HTTP.RouteConfig]; ok {
			d := e.compiled.(compiledRoute).def
			h.DefaultCluster, h.Clusters = d.cluster, d.clusters
			h.prepare()
		}
		nc := *c
		nc.HTTP = h
		return &nc
	}
	out := &Listener{Name: l.Name, Chains: make([]*FilterChain, len(l.Chains)), Default: resolve(l.Default)}
	for i, c := range l.Chains {
		out.Chains[i] = resolve(c)
	}
	out.idx.Store(l.index()) // same chains in the same order
	return out
}

// joinClusters gives every EDS cluster its assignment.
func (s *Store) joinClusters() map[string]*Cluster {
	eds := s.types[resource.EndpointType]
	cds := s.types[resource.ClusterType]
	out := make(map[string]*Cluster, len(cds))
	joined := make(map[joinKey]*Cluster, len(cds))
	for name, e := range cds {
		c := e.compiled.(*Cluster)
		if c.Type != ClusterEDS {
			out[name] = c
			continue
		}
		var eps *Endpoints
		if a, ok := eds[c.edsName]; ok {
			eps = a.compiled.(*Endpoints)
		}
		k := joinKey{c, eps}
		j := s.joined[k]
		if j == nil {
			nc := *c
			nc.Endpoints = eps
			if eps != nil {
				eps.prepare(c)
			}
			j = &nc
		}
		joined[k] = j
		out[name] = j
	}
	s.joined = joined
	return out
}

// clusterHost parses a cluster name outbound|<port>|<subset>|<host>.
func clusterHost(name string) (host, subset string, ok bool) {
	rest, ok := strings.CutPrefix(name, "outbound|")
	if !ok {
		return "", "", false
	}
	_, rest, ok = strings.Cut(rest, "|") // the port
	if !ok {
		return "", "", false
	}
	subset, host, ok = strings.Cut(rest, "|")
	if !ok || host == "" || strings.Contains(host, "|") {
		return "", "", false
	}
	return host, subset, true
}

// ChainMetadataKey and ChainMetadataHost: the controller marks each
// outbound filter chain with the service host it belongs to, as
// metadata.filter_metadata["fibmesh"].host (docs/xds.md).
const (
	ChainMetadataKey  = "fibmesh"
	ChainMetadataHost = "host"
)

// metadataHosts are the hosts the raw listener's chains name in their
// metadata (ChainMetadataKey), by chain index ("" where a chain names
// none); nil when raw is nil.
func metadataHosts(raw *listenerv3.Listener) []string {
	if raw == nil {
		return nil
	}
	out := make([]string, len(raw.GetFilterChains()))
	for i, fc := range raw.GetFilterChains() {
		out[i] = fc.GetMetadata().GetFilterMetadata()[ChainMetadataKey].GetFields()[ChainMetadataHost].GetStringValue()
	}
	return out
}

// chainHost is the mesh hostname an outbound chain serves, for a chain
// whose metadata does not say: the host of its route configuration
// (HTTP) or of its cluster (TCP). A tcp or tls rule that routes to
// another host's cluster makes this guess wrong; the controller's
// metadata is right.
func chainHost(c *FilterChain) string {
	switch {
	case c.HTTP != nil && c.HTTP.RouteConfig != "":
		if h, _, ok := splitRouteName(c.HTTP.RouteConfig); ok {
			return h
		}
	case c.TCP != nil:
		if h, _, ok := clusterHost(c.StatPrefix); ok { // Istio's stat prefix is the cluster
			return h
		}
		if len(c.TCP.Clusters) == 1 {
			if h, _, ok := clusterHost(c.TCP.Clusters[0].Name); ok {
				return h
			}
		}
	}
	return ""
}

// hosts builds the DNS table: each outbound chain's host with the
// chain's VIPs, and for a host without VIPs (a headless Service, a
// ServiceEntry without addresses) the addresses of its healthy
// endpoints, as Kubernetes DNS answers for a headless Service. A chain's
// host is the one its metadata names (ChainMetadataKey, read from raw,
// the listener out was compiled from: same chains, same order), else
// chainHost's guess.
func hosts(out *Listener, raw *listenerv3.Listener, clusters map[string]*Cluster) map[string][]netip.Addr {
	h := map[string][]netip.Addr{}
	if out != nil {
		meta := metadataHosts(raw)
		if len(meta) != len(out.Chains) {
			meta = nil // not the listener out was compiled from
		}
		for i, c := range out.Chains {
			host := ""
			if meta != nil {
				host = meta[i]
			}
			if host == "" {
				host = chainHost(c)
			}
			host = strings.ToLower(strings.TrimSuffix(host, "."))
			if host == "" {
				continue
			}
			for _, p := range c.Prefixes {
				if p.IsSingleIP() && !slices.Contains(h[host], p.Addr()) {
					h[host] = append(h[host], p.Addr())
				}
			}
		}
	}
	headless := map[string][]netip.Addr{}
	for name, c := range clusters {
		host, subset, ok := clusterHost(name)
		host = strings.ToLower(host)
		if !ok || subset != "" || c.Endpoints == nil || len(h[host]) > 0 {
			continue
		}
		for _, e := range c.Endpoints.Healthy {
			if a := e.Addr.Addr(); !slices.Contains(headless[host], a) {
				headless[host] = append(headless[host], a)
			}
		}
	}
	maps.Copy(h, headless)
	for _, as := range h {
		slices.SortFunc(as, netip.Addr.Compare)
	}
	return h
}

// meshEndpoints maps the IP of every endpoint reached over mTLS to its
// cluster: the service's own cluster before a subset's, then by name.
func meshEndpoints(clusters map[string]*Cluster) map[netip.Addr]*Cluster {
	type candidate struct {
		c      *Cluster
		subset bool
	}
	cs := make([]candidate, 0, len(clusters))
	for _, c := range clusters {
		if c.TLS != nil && c.Endpoints != nil {
			_, s, _ := clusterHost(c.Name)
			cs = append(cs, candidate{c, s != ""})
		}
	}
	slices.SortFunc(cs, func(a, b candidate) int {
		if a.subset != b.subset {
			if a.subset {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.c.Name, b.c.Name)
	})
	out := map[netip.Addr]*Cluster{}
	for _, cand := range cs {
		c := cand.c
		for _, e := range c.Endpoints.Hosts {
			if a := e.Addr.Addr(); !e.Plaintext && a.IsValid() {
				if _, ok := out[a]; !ok {
					out[a] = c
				}
			}
		}
	}
	return out
}
