// Package xds is the controller's ADS server: it translates each version
// of the model into Envoy v3 resources (LDS, RDS, CDS, EDS; package
// envoy), the trust bundle (SDS) and FDS, the flow table (package fds),
// and serves them over gRPC, both state-of-the-world and delta, with
// go-control-plane's protocol types and a server of its own.
//
// The store (store.go) holds each resource once, marshalled and hashed
// once, in scopes: one per shared type (clusters, endpoints, route
// configurations, the trust bundle, the flow tables) and one per node for
// its listeners, keyed by the xDS node.id, the Kubernetes node name. A
// scope has a sequence number, a changelog and an index resource →
// subscribed streams: an update costs what changed times who subscribes
// to it. A stream (stream.go) keeps, per type, the sequence it was last
// sent up to and one outstanding response; when marked it sends what
// changed since, and an ACK costs O(1). go-control-plane's LinearCache
// and snapshot cache, used before, scanned and cloned every stream's
// subscription on every update and ACK.
//
// Pushes are debounced: model versions arriving within Options.Debounce
// of each other are pushed once, the latest, with the union of their
// changes; a push never waits longer than Options.DebounceMax. A version
// arriving after Debounce of quiet since the last push is pushed at once:
// only bursts wait. A push
// translates what the change can have touched, hashes each resource and
// hands the store only those whose hash changed. A node that NACKs is not
// sent the refused version again; it keeps its last good config until
// the next change, and the refusal is counted and visible in Status.
package xds

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"
	"github.com/fibmesh/fibmesh/controller/xds/fds"
)

// Options configure a Server.
type Options struct {
	// Debounce is how long a push waits for the model to stop changing;
	// default 10ms. DebounceMax bounds that wait under a stream of
	// changes; default 500ms.
	Debounce    time.Duration
	DebounceMax time.Duration
	// OnEvent, if set, is told of connections, NACKs and convergence (the
	// binary logs them). It must not block.
	OnEvent func(Event)
	// OnPush, if set, is told of each push's result (the binary logs
	// failures). It must not block.
	OnPush func(PushResult)
	// SyncConcurrency bounds the agents making their first sync at once
	// (default 64; negative: no bound). A full sync is megabytes per
	// agent: after a controller restart every agent reconnects at once,
	// and unbounded, their responses would all be marshalled and queued
	// together. A slot is held until the agent has ACKed every type, or
	// SyncTimeout (default 10s).
	SyncConcurrency int
	SyncTimeout     time.Duration
	// Epoch, if set, is part of every shared type's version
	// ("FDS-<epoch>.<n>" instead of "FDS-<n>"). The controller sets it
	// from the clock at start-up: go-control-plane's caches count from 0
	// in each process, and without an epoch a restarted controller's
	// versions would go back.
	Epoch uint64
}

// PushResult is what one push did.
type PushResult struct {
	Version uint64        // model version pushed
	Took    time.Duration // translate + cache updates
	Updated map[string]int
	Nodes   int // nodes whose listeners changed
	Err     error
}

// Server serves one controller's xDS.
type Server struct {
	opts    Options
	metrics *metrics
	tracker *tracker

	shared map[string]*sharedType // CDS, EDS, RDS, SDS, FDS
	store  *store
	cb     callbacks
	// senders bounds the streams building and sending a response at
	// once (4 × GOMAXPROCS).
	senders           chan struct{}
	sotwIDs, deltaIDs atomic.Int64

	mu      sync.Mutex
	pending *model.Model
	change  pending   // the union of the pending models' changes
	since   time.Time // first change of the pending push was seen
	kick    chan struct{}
	model   *model.Model // last pushed
	inModel map[string]bool
	// ldsHash is each node's listener set as last pushed, ldsNames its
	// names.
	ldsHash  map[string]string
	ldsNames map[string][]string
	tables   map[string]flowTable
	// lastTables is the flow table last built, for a readiness change to
	// patch (fds.Tables.WithServices).
	lastTables *fds.Tables
	// nics is what each node's agent reported of its NIC's kTLS offload
	// (noteNICTLS, nictls.go).
	nics map[string]bool
	// outboundHash is the outbound listener's as last pushed: when it
	// changes every node's listeners do.
	outboundHash  [32]byte
	pushed        chan uint64
	firstPush     chan struct{} // closed by the first push
	firstPushOnce sync.Once
	// sdsMu serialises SetTrustBundle, called from the CA's goroutine.
	sdsMu sync.Mutex
	// streams ends every xDS stream when Run returns, so that a graceful
	// gRPC stop does not wait for agents to hang up.
	streams     context.Context
	stopStreams context.CancelFunc
}

// sharedType is one type's resources as last pushed (the push
// goroutine's view of the type's scope).
type sharedType struct {
	typeURL string
	scope   *scope
	hashes  map[string]*entry
}

// New returns a Server; Run pushes, Register serves.
func New(o Options) *Server {
	if o.Debounce <= 0 {
		o.Debounce = 10 * time.Millisecond
	}
	if o.DebounceMax <= 0 {
		o.DebounceMax = 500 * time.Millisecond
	}
	s := &Server{
		opts: o, metrics: newMetrics().zero(),
		shared:    map[string]*sharedType{},
		kick:      make(chan struct{}, 1),
		ldsHash:   map[string]string{},
		ldsNames:  map[string][]string{},
		pushed:    make(chan uint64, 1),
		firstPush: make(chan struct{}),
	}
	s.tracker = newTracker(s.metrics, o.OnEvent)
	if o.SyncConcurrency == 0 {
		o.SyncConcurrency = 64
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = 10 * time.Second
	}
	if o.SyncConcurrency > 0 {
		s.tracker.slots = make(chan struct{}, o.SyncConcurrency)
	}
	s.tracker.slotTimeout = o.SyncTimeout
	s.tracker.inModel = s.hasNode
	s.store = newStore(o.Epoch)
	for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.RouteType, resource.SecretType, fds.TypeURL} {
		sc := newScope(t, versionPrefix(t, o.Epoch), &s.store.stats, &s.store.marks)
		s.store.shared[t] = sc
		s.shared[t] = &sharedType{typeURL: t, scope: sc, hashes: map[string]*entry{}}
	}
	s.senders = make(chan struct{}, 4*runtime.GOMAXPROCS(0))
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	s.cb = callbacks{s.tracker, s.streams.Done(), &sync.Map{}, s.firstPush, &sync.Map{}}
	return s
}

// versionPrefix starts the versions of a shared type's cache.
func versionPrefix(typeURL string, epoch uint64) string {
	if epoch == 0 {
		return ShortType(typeURL) + "-"
	}
	return ShortType(typeURL) + "-" + strconv.FormatUint(epoch, 10) + "."
}

// nodeID keys snapshots by the xDS node.id, the Kubernetes node name.
type nodeID struct{}

func (nodeID) ID(n *core.Node) string { return n.GetId() }

// AgentSubscriptions are what a node's agent subscribes to (the
// contract's xdsapi.AgentSubscriptions).
func AgentSubscriptions(node string) []xdsapi.Subscription { return xdsapi.AgentSubscriptions(node) }

// GRPCServerOptions are the gRPC server options for many long-lived,
// mostly idle agent streams: keepalives that notice a vanished agent
// (and refuse agents pinging more often than every 10 s), and 8 KiB
// write and read buffers that connections take from one pool while they
// write or read (SharedWriteBuffer; gRPC pools read buffers itself)
// instead of 32 KiB held by each (at 1,000 agents the two held 64 MB,
// grpc-go #5751). Why 8 KiB and not 32 KiB for writes: after an edit
// every connection writes at once, and gRPC's writer yields while it
// holds a pooled buffer, so the pool grows to one buffer per connection,
// which it keeps until two garbage collections later (32 MB of 32 KiB
// buffers at 1,000 agents, measured after the rounds of bench-xds; 8 MB
// now). A first sync's 60 kB pages then take 8 writes each instead of 2.
//
// Messages are marshalled by exactCodec: gRPC's own proto codec takes each
// message's buffer from a pool whose tiers jump from 32 KiB to 1 MiB, so
// every response over 32 KiB (a sync page, a flow-table shard set) held
// 1 MiB, and 300 agents syncing held 150 MB of them (heap profile
// mid-sync).
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(exactCodec{encoding.GetCodecV2(protocodec.Name)}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.SharedWriteBuffer(true),
		// Fixed flow-control windows: no bandwidth-estimation PING after
		// every ACK received (agents set theirs too, xdsclient.DialOptions).
		// Agents send small requests; 64 KiB per stream is plenty.
		grpc.StaticStreamWindowSize(64 << 10),
		grpc.StaticConnWindowSize(256 << 10),
		grpc.WriteBufferSize(8 << 10),
		grpc.ReadBufferSize(8 << 10),
	}
}

// DefaultMemoryLimit is the soft memory limit (runtime/debug
// SetMemoryLimit) the controller sets when GOMEMLIMIT is not in its
// environment. A burst (every agent syncing at once after a restart)
// then makes the garbage collector work harder rather than grow the heap
// to twice its live size; below the limit, GOGC alone governs. It must
// stay well above the live heap: at 256 MiB, with 1,000 agents (~200 MB
// in use), the collector ran without pause and an endpoint change took
// 4× the CPU (bench-xds).
const DefaultMemoryLimit = 512 << 20

// SetDefaultMemoryLimit sets DefaultMemoryLimit unless GOMEMLIMIT is set
// (which the runtime has applied). It returns the limit in force.
func SetDefaultMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	debug.SetMemoryLimit(DefaultMemoryLimit)
	return DefaultMemoryLimit
}

// Register serves ADS (state-of-the-world and delta) and the per-type
// discovery services on g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, ads{s})
	clusterservice.RegisterClusterDiscoveryServiceServer(g, cds{s})
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, eds{s})
	listenerservice.RegisterListenerDiscoveryServiceServer(g, lds{s})
	routeservice.RegisterRouteDiscoveryServiceServer(g, rds{s})
	secretservice.RegisterSecretDiscoveryServiceServer(g, sds{s})
}

// Collectors are the server's Prometheus metrics, for the caller to
// register.
func (s *Server) Collectors() []prometheus.Collector { return s.metrics.collectors() }

// Status returns what the server knows of every node that connected.
func (s *Server) Status() []NodeStatus { return s.tracker.status() }

// Syncing is the number of streams whose first sync is not done: those
// holding a sync slot (Options.SyncConcurrency) until they have ACKed
// every type, every page, and those waiting for one. Benchmarks wait for
// 0 before timing edits.
func (s *Server) Syncing() int { return s.tracker.syncing() }

// FirstPush is closed once the first model has been pushed to the caches;
// streams opened before are refused with Unavailable.
func (s *Server) FirstPush() <-chan struct{} { return s.firstPush }

// Pushed delivers the model version of each completed push (the latest
// only, when the reader is slow). Tests and benchmarks synchronise on it.
func (s *Server) Pushed() <-chan uint64 { return s.pushed }

func (s *Server) hasNode(n string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inModel[n]
}

// pending is what the models waiting for a push changed, together.
type pending struct {
	full     bool // everything: the first model, or a Change.Full
	kinds    model.ChangeKinds
	services map[string]bool // Change.Services
	local    map[string]bool // Change.LocalNodes
	nics     bool            // a node's NIC kTLS offload report changed (noteNICTLS)
}

func (p *pending) add(c model.Change) {
	if c.Full {
		p.full = true
	}
	p.kinds = p.kinds.Or(c.Kinds)
	if p.services == nil {
		p.services, p.local = map[string]bool{}, map[string]bool{}
	}
	for _, h := range c.Services {
		p.services[h] = true
	}
	for _, n := range c.LocalNodes {
		p.local[n] = true
	}
}

// Update hands the server a new model version; it is pushed after the
// debounce, with the changes of every version since the last push. It
// never blocks.
func (s *Server) Update(m *model.Model) {
	s.mu.Lock()
	if s.pending == nil {
		s.since = time.Now()
	}
	s.pending = m
	s.change.add(m.Change)
	if s.model == nil {
		s.change.full = true
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// SetTrustBundle serves sec (the trust bundle's validation context,
// named envoy.RootCASecret) over SDS and pushes it at once to every
// subscriber. Safe to call from any goroutine.
func (s *Server) SetTrustBundle(sec *tlsv3.Secret) error {
	if err := sec.ValidateAll(); err != nil {
		return fmt.Errorf("trust bundle secret %s: %w", sec.GetName(), err)
	}
	s.sdsMu.Lock()
	defer s.sdsMu.Unlock()
	_, err := s.shared[resource.SecretType].apply(map[string]proto.Message{sec.GetName(): sec}, nil, nil)
	return err
}

// Ready reports whether a first model has been pushed.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.model != nil
}

// Run pushes model versions as they come until ctx is done; then it ends
// every open xDS stream (agents reconnect to the next controller).
func (s *Server) Run(ctx context.Context) error {
	defer s.stopStreams()
	var lastPush time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		// Debounce: wait for Debounce of quiet, at most DebounceMax;
		// but a change that comes after Debounce of quiet since the
		// last push is pushed at once (a lone edit waits for nothing; a
		// burst is merged from its second version on).
		if lastPush.IsZero() || time.Since(lastPush) < s.opts.Debounce {
			if !s.debounce(ctx) {
				return nil
			}
		}
		s.mu.Lock()
		m, since, change := s.pending, s.since, s.change
		s.pending, s.change = nil, pending{}
		s.mu.Unlock()
		if m == nil {
			continue
		}
		res := s.push(ctx, m, since, change)
		lastPush = time.Now()
		if res.Err != nil {
			// Nothing of a failed push may be skipped by the next one.
			s.mu.Lock()
			s.change.full = true
			s.mu.Unlock()
		}
		if s.opts.OnPush != nil {
			s.opts.OnPush(res)
		}
		if res.Err != nil {
			continue
		}
		s.firstPushOnce.Do(func() { close(s.firstPush) })
		select {
		case s.pushed <- m.Version:
		default:
			select {
			case <-s.pushed:
			default:
			}
			s.pushed <- m.Version
		}
	}
}

// debounce waits for Debounce of quiet after the last kick, at most
// DebounceMax after the first change pending; false when ctx is done.
func (s *Server) debounce(ctx context.Context) bool {
	s.mu.Lock()
	first := s.since
	s.mu.Unlock()
	deadline := first.Add(s.opts.DebounceMax)
	timer := time.NewTimer(s.opts.Debounce)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-s.kick:
			timer.Reset(max(min(s.opts.Debounce, time.Until(deadline)), 0))
		case <-timer.C:
			return true
		}
	}
}

// push translates m and applies what changed to the caches: first the
// additions and changes, in Types order, then the removals in reverse.
//
// It translates only what ch can have changed: a VirtualService edit
// (routes only) re-hashes the route configurations of its hosts and
// nothing else; clusters and endpoints follow services, workloads (their
// mTLS modes pick the upstream transport) and destination policies;
// listeners follow services (the outbound listener, on every node), and
// workloads and authorization policies (the inbound ones, on their
// nodes); the flow table follows services, workloads, authorization
// policies (a UDP port's L4 policy, on their nodes), nodes and the
// nodes' NIC kTLS offload reports (noteNICTLS).
func (s *Server) push(ctx context.Context, m *model.Model, since time.Time, ch pending) PushResult {
	start := time.Now()
	// Streams are woken once the whole push is in the store, each once.
	s.store.marks.hold()
	defer s.store.marks.release(&s.store.stats.marks)
	res := PushResult{Version: m.Version, Updated: map[string]int{}}
	s.tracker.beginPush(since)
	k, full := ch.kinds, ch.full
	if !full && k == (model.ChangeKinds{Routes: true}) && !ch.nics {
		return s.pushRoutes(m, ch, res, start)
	}
	if !full && k == (model.ChangeKinds{}) && ch.nics && s.lastTables != nil {
		return s.pushNICTLS(m, res, start)
	}

	inModel := make(map[string]bool, len(m.Nodes))
	for _, n := range m.Nodes {
		inModel[n.Name] = true
	}
	for _, w := range m.Workloads {
		if w.Node != "" {
			inModel[w.Node] = true
		}
	}
	s.mu.Lock()
	s.inModel = inModel
	prev := s.model
	s.mu.Unlock()

	// A change of endpoints only (a pod's readiness, a pod added to a
	// service) leaves the outbound listener and the route
	// configurations as they were; a change of readiness only leaves the
	// listeners and per-node flow tables too, and, when every node's
	// listeners are pushed already, is translated for its services
	// alone (partial): BuildMesh of a model holding only them.
	epOnly := !full && k == (model.ChangeKinds{Services: true}) && endpointsOnly(prev, m, ch.services)
	readyOnly := epOnly && readinessOnly(prev, m, ch.services)
	partial := readyOnly
	for n := range inModel {
		if _, known := s.ldsHash[n]; !known {
			partial = false
		}
	}
	var mesh *envoy.Mesh
	var err error
	if partial {
		sub := *m
		sub.Services = slices.DeleteFunc(slices.Clone(m.Services), func(sv *model.Service) bool { return !ch.services[sv.Hostname] })
		if mesh, err = envoy.BuildMesh(&sub); err != nil {
			partial = false // translate it whole, which reports the error if it is one
		}
	}
	if !partial {
		if mesh, err = envoy.BuildMesh(m); err != nil {
			res.Err = fmt.Errorf("model version %d: %w", m.Version, err)
			return res
		}
	}

	// Removals wait until every type is updated: a listener or route
	// configuration never names a cluster that is already gone.
	type removal struct {
		st   *sharedType
		gone []string
	}
	var removals []removal
	stepLazy := func(t string, items map[string]proto.Message, only func(name string) bool, lazy map[string][32]byte) error {
		st := s.shared[t]
		n, err := st.apply(items, only, lazy)
		res.Updated[ShortType(t)] += n
		gone := st.stale(items)
		if partial && only != nil {
			// items are the changed hosts' only: what else is
			// missing is not gone.
			gone = slices.DeleteFunc(gone, func(name string) bool { return !only(name) })
		}
		removals = append(removals, removal{st, gone})
		return err
	}
	step := func(t string, items map[string]proto.Message, only func(name string) bool) error {
		return stepLazy(t, items, only, nil)
	}
	// A change confined to services (endpoints, ports, routes, policies
	// of the hosts listed) changes only those hosts' clusters and load
	// assignments: the others are not hashed again (an endpoint's
	// readiness flip hashes its service's, not 6,600).
	var onlyHosts func(string) bool
	if !full && !k.Workloads && !k.Nodes && !k.AuthzPolicies {
		onlyHosts = func(name string) bool { return ch.services[clusterHost(name)] }
	}
	if full || k.Services || k.Workloads || k.DestinationPolicies {
		if err := step(resource.ClusterType, named(mesh.Clusters), onlyHosts); err != nil {
			res.Err = err
			return res
		}
		if err := step(resource.EndpointType, named(mesh.Endpoints), onlyHosts); err != nil {
			res.Err = err
			return res
		}
	}

	// Listeners: the shared outbound listener and the node's inbound ones.
	outboundHash := s.outboundHash
	if !epOnly {
		outboundHash = hashOf(mesh.Outbound)
	}
	var nodes []string
	for n := range inModel {
		_, known := s.ldsHash[n]
		switch {
		case full || !known || outboundHash != s.outboundHash:
			nodes = append(nodes, n)
		case readyOnly: // listeners do not read readiness
		case (k.Services || k.Workloads || k.AuthzPolicies || k.Nodes) && ch.local[n]:
			nodes = append(nodes, n)
		}
	}
	slices.Sort(nodes)
	for n := range s.ldsHash { // nodes gone from the model
		if !inModel[n] {
			s.store.nodeScope(n).update(nil, s.ldsNames[n])
			delete(s.ldsHash, n)
			delete(s.ldsNames, n)
		}
	}
	var nix *envoy.NodeIndex
	var outbound *entry
	if len(nodes) > 0 {
		nix = envoy.NewNodeIndex(m)
		if outbound, err = newEntry(resource.ListenerType, mesh.Outbound.GetName(), mesh.Outbound, false); err != nil {
			res.Err = err
			return res
		}
	}
	// Two passes: the first translates and marshals every node's
	// listeners (~70 kB of garbage per node), the second makes what the
	// store keeps (entries, scopes, changelogs). Made in the first pass,
	// a node's few small kept objects sat among its garbage and kept most
	// of the heap's spans in use after it was collected: 11 MB of
	// fragmentation at 1,000 nodes (bench-xds, "unused" before any agent).
	type listener struct {
		name  string
		bytes []byte
		hash  [32]byte
	}
	type nodeListeners struct {
		node      string
		listeners []listener
		version   string
	}
	built := make([]nodeListeners, 0, len(nodes))
	for _, n := range nodes {
		ls, err := nix.Listeners(n)
		if err != nil {
			res.Err = fmt.Errorf("model version %d: listeners of node %s: %w", m.Version, n, err)
			return res
		}
		h := sha256.New()
		h.Write(outbound.hash[:])
		nl := nodeListeners{node: n}
		for _, l := range ls {
			b, hash, err := marshalHashed(resource.ListenerType, l.GetName(), l)
			if err != nil {
				res.Err = fmt.Errorf("listeners of node %s: %w", n, err)
				return res
			}
			h.Write(hash[:])
			nl.listeners = append(nl.listeners, listener{l.GetName(), b, hash})
		}
		nl.version = fmt.Sprintf("LDS-%x", h.Sum(nil)[:8])
		if s.ldsHash[n] == nl.version {
			continue
		}
		built = append(built, nl)
	}
	for _, nl := range built {
		n := nl.node
		items := make([]*entry, 1, 1+len(nl.listeners))
		items[0] = outbound // one outbound listener, shared by every node's scope
		for _, l := range nl.listeners {
			// The name is the translated listener's string: a copy made
			// here does not hold a span of that garbage.
			items = append(items, entryOf(resource.ListenerType, strings.Clone(l.name), l.bytes, l.hash))
		}
		names := make([]string, len(items))
		keep := make(map[string]bool, len(items))
		for i, e := range items {
			names[i] = e.name
			keep[e.name] = true
		}
		var gone []string
		for _, name := range s.ldsNames[n] {
			if !keep[name] {
				gone = append(gone, name)
			}
		}
		s.store.nodeScope(n).update(items, gone)
		s.ldsHash[n] = nl.version
		s.ldsNames[n] = names
		res.Nodes++
		res.Updated["LDS"] += len(items)
	}
	s.outboundHash = outboundHash

	switch {
	case epOnly:
	case full || k.Services:
		err = step(resource.RouteType, named(mesh.Routes), nil)
	case k.Routes || k.DestinationPolicies:
		// Only the changed hosts' route configurations can differ.
		err = step(resource.RouteType, named(mesh.Routes), func(name string) bool { return ch.services[routeHost(name)] })
	}
	if err != nil {
		res.Err = err
		return res
	}
	if full || k.Services || k.Workloads || k.AuthzPolicies || k.Nodes || ch.nics {
		// Per-node tables change only on the nodes the change is local
		// to, unless nodes themselves changed.
		var onlyNodes func(string) bool
		switch {
		case readyOnly: // per-node tables do not read readiness
			onlyNodes = func(string) bool { return false }
		case !full && !k.Nodes:
			onlyNodes = func(name string) bool { return ch.local[name] }
		}
		var tables *fds.Tables
		if readyOnly && s.lastTables != nil {
			tables, _ = s.lastTables.WithServices(m, ch.services)
		}
		if tables == nil {
			tables = fds.Build(m)
		}
		tables = tables.WithNICTLS(s.nicSnapshot())
		s.lastTables = tables
		items, lazy := s.flowTables(tables, m.Version, onlyNodes)
		if err := stepLazy(fds.TypeURL, items, nil, lazy); err != nil {
			res.Err = err
			return res
		}
	}
	for i := len(removals) - 1; i >= 0; i-- {
		r := removals[i]
		if err := r.st.remove(r.gone); err != nil {
			res.Err = err
			return res
		}
		res.Updated[ShortType(r.st.typeURL)] += len(r.gone)
	}
	return s.recordPush(m, res, start)
}

// endpointsOnly reports whether, of the hosts changed between prev and m,
// only endpoints changed: names, VIPs and ports are as they were.
func endpointsOnly(prev, m *model.Model, hosts map[string]bool) bool {
	if prev == nil {
		return false
	}
	for h := range hosts {
		a, b := prev.ServicesFor(h), m.ServicesFor(h)
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			x, y := a[i], b[i]
			if x.Hostname != y.Hostname || x.Namespace != y.Namespace || x.Name != y.Name || x.ServiceEntry != y.ServiceEntry ||
				x.Location != y.Location || x.Resolution != y.Resolution || !slices.Equal(x.VIPs, y.VIPs) || !slices.Equal(x.Ports, y.Ports) {
				return false
			}
		}
	}
	return true
}

// readinessOnly reports whether, of the hosts changed between prev and m,
// only endpoints' ready conditions changed (a readiness probe flipping).
// Listeners and per-node flow tables do not read readiness: such a
// change leaves them as they were. endpointsOnly must hold.
func readinessOnly(prev, m *model.Model, hosts map[string]bool) bool {
	for h := range hosts {
		a, b := prev.ServicesFor(h), m.ServicesFor(h)
		for i := range a {
			x, y := a[i].Endpoints, b[i].Endpoints
			if len(x) != len(y) {
				return false
			}
			for j := range x {
				ex, ey := *x[j], *y[j]
				ex.Ready = ey.Ready
				if !reflect.DeepEqual(ex, ey) {
					return false
				}
			}
		}
	}
	return true
}

// clusterHost is the host of a cluster or load assignment named
// "outbound|<port>|<subset>|<host>" (a name without "|" is its own).
func clusterHost(name string) string { return name[strings.LastIndexByte(name, '|')+1:] }

// routeHost is the host of a route configuration named "<host>:<port>".
func routeHost(name string) string { return name[:max(0, strings.LastIndexByte(name, ':'))] }

// recordPush records a push that succeeded.
func (s *Server) recordPush(m *model.Model, res PushResult, start time.Time) PushResult {
	for t, n := range res.Updated {
		s.metrics.updates.WithLabelValues(t).Add(float64(n))
	}
	s.mu.Lock()
	s.model = m
	s.mu.Unlock()
	res.Took = time.Since(start)
	s.metrics.pushes.Inc()
	s.metrics.pushDuration.Observe(res.Took.Seconds())
	return res
}

// pushRoutes is push for a change of routes only (VirtualServices): the
// route configurations of the changed hosts are rebuilt, nothing else.
func (s *Server) pushRoutes(m *model.Model, ch pending, res PushResult, start time.Time) PushResult {
	st := s.shared[resource.RouteType]
	var names []string
	for name := range st.hashes {
		if ch.services[routeHost(name)] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	rcs, err := envoy.RouteConfigs(m, names)
	if err != nil {
		res.Err = fmt.Errorf("model version %d: %w", m.Version, err)
		return res
	}
	n, err := st.apply(named(rcs), nil, nil)
	if err != nil {
		res.Err = err
		return res
	}
	res.Updated["RDS"] = n
	return s.recordPush(m, res, start)
}

// flowTables names the FDS resources and stamps each table with the model
// version in which its content last changed, so that an unchanged table
// keeps its hash (and is not pushed again).
//
// With onlyNodes, a node's table already pushed whose name onlyNodes
// rejects is kept as it was, not hashed.
func (s *Server) flowTables(t *fds.Tables, version uint64, onlyNodes func(string) bool) (map[string]proto.Message, map[string][32]byte) {
	out := make(map[string]proto.Message, len(t.Nodes)+1+xdsapi.MeshShards+xdsapi.MeshServiceShards)
	next := make(map[string]flowTable, len(t.Nodes)+1+xdsapi.MeshShards+xdsapi.MeshServiceShards)
	versionStr := strconv.FormatUint(version, 10) // one string for every table it stamps
	stamp := func(name string, ft *fibv1.FlowTable) {
		if prev, ok := s.tables[name]; ok && (prev.table == ft || onlyNodes != nil && !xdsapi.IsMeshTable(name) && !onlyNodes(name)) {
			// The very table pushed before (a shard the change left
			// alone), or a node's table the change is not local to.
			next[name] = prev
			out[name] = prev.table
			return
		}
		h := hashOf(ft) // Version is empty here
		if prev, ok := s.tables[name]; ok && prev.hash == h {
			ft = prev.table
		} else {
			ft.Version = versionStr
		}
		next[name] = flowTable{ft, h}
		out[name] = ft
	}
	// The whole table is the shards' content: its hash is theirs, and it
	// is marshalled only when a stream asks for it (the shards are what
	// agents read; marshalling ~460 kB on every endpoint change was most
	// of that push).
	whole := sha256.New()
	for i, sh := range t.Shards() {
		name := sh.GetNode() // a shard's node is its name
		stamp(name, sh)
		if pushed := next[name].table; pushed != sh {
			// Equal to the shard pushed before: t holds that one from
			// now on, so that tables derived from t (WithServices)
			// share it and the next push skips it by identity.
			t.KeepShard(i, pushed)
		}
		part := next[name].hash
		whole.Write(part[:])
	}
	var h [32]byte
	whole.Sum(h[:0])
	ft := t.Mesh
	if prev, ok := s.tables[fds.MeshName]; ok && prev.hash == h {
		ft = prev.table
	} else {
		ft.Version = versionStr
	}
	next[fds.MeshName] = flowTable{ft, h}
	out[fds.MeshName] = ft
	for n, ft := range t.Nodes {
		stamp(n, ft)
	}
	s.tables = next
	// The served version identifies the bytes: the content's hash and
	// the version stamp in the table (content A, then B, then A again is
	// a third version, as its stamp is).
	served := sha256.New()
	served.Write(h[:])
	served.Write([]byte(ft.GetVersion()))
	var v [32]byte
	served.Sum(v[:0])
	return out, map[string][32]byte{fds.MeshName: v}
}

// flowTable is a pushed table and the hash of its content without the
// version.
type flowTable struct {
	table *fibv1.FlowTable
	hash  [32]byte
}

func named[T proto.Message](items []T) map[string]proto.Message {
	out := make(map[string]proto.Message, len(items))
	for _, it := range items {
		out[cache.GetResourceName(it)] = it
	}
	return out
}

func hashOf(m proto.Message) [32]byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		// Only a message with invalid UTF-8 strings fails to marshal;
		// hash its text instead so that it is still pushed (and the
		// agent NACKs it, visibly).
		return sha256.Sum256([]byte(fmt.Sprint(m)))
	}
	return sha256.Sum256(b)
}

// apply adds or changes resources, removing none; it returns how many
// changed. With only, resources already known whose name only rejects
// are taken as unchanged, and not hashed. Items named in lazy have that
// hash already and are marshalled only when first sent.
func (st *sharedType) apply(items map[string]proto.Message, only func(string) bool, lazy map[string][32]byte) (int, error) {
	var changed []*entry
	for name, it := range items {
		old, known := st.hashes[name]
		if known && (old.msg == it || only != nil && !only(name)) {
			continue // the very message pushed before (a flow table kept), or not touched
		}
		if h, ok := lazy[name]; ok {
			if known && old.hash == h {
				continue
			}
			e := newLazyEntry(st.typeURL, name, it, h)
			st.hashes[name] = e
			changed = append(changed, e)
			continue
		}
		e, err := newEntry(st.typeURL, name, it, st.typeURL == fds.TypeURL)
		if err != nil {
			// Only a message with invalid UTF-8 strings fails to
			// marshal; the push fails, naming it.
			return 0, err
		}
		if known && old.hash == e.hash {
			continue
		}
		st.hashes[name] = e
		changed = append(changed, e)
	}
	if len(changed) == 0 {
		return 0, nil
	}
	st.scope.update(changed, nil)
	return len(changed), nil
}

// stale are the resources the type holds that items no longer has.
func (st *sharedType) stale(items map[string]proto.Message) []string {
	var gone []string
	for name := range st.hashes {
		if _, ok := items[name]; !ok {
			gone = append(gone, name)
		}
	}
	return gone
}

// remove takes resources out of the type.
func (st *sharedType) remove(names []string) error {
	if len(names) == 0 {
		return nil
	}
	for _, name := range names {
		delete(st.hashes, name)
	}
	st.scope.update(nil, names)
	return nil
}

// callbacks feed the tracker from go-control-plane's server.
type callbacks struct {
	t    *tracker
	done <-chan struct{}
	// auth maps stream ids (delta: -id) to the node the stream
	// authenticated as (RequireNode).
	auth *sync.Map
	// firstPush is Server.FirstPush.
	firstPush <-chan struct{}
	// seen holds the authenticated delta streams that sent an FDS request.
	seen *sync.Map
}

// opened records a new stream. Until the first model is pushed, streams
// are refused: the caches are empty, and a reconnecting delta client that
// names the resources it holds would be told they were removed (its FIB
// would drop them until the first push added them back).
func (c callbacks) opened(ctx context.Context, id int64) error {
	select {
	case <-c.firstPush:
	default:
		return status.Error(codes.Unavailable, "the controller is starting: no model is pushed yet; retry")
	}
	if n := authenticatedNode(ctx); n != "" {
		c.auth.Store(id, n)
	}
	c.t.open(id)
	return nil
}

func (c callbacks) closed(id int64) {
	c.auth.Delete(id)
	c.seen.Delete(id)
	c.t.closed(id)
}
