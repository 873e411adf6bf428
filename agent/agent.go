// Package agent is the fibmesh node daemon, driven by the controller: it
// holds one TLS connection to the controller (xDS and the CA on 15012),
// subscribes over delta ADS to what a node needs (api/xds
// AgentSubscriptions: clusters, endpoints, listeners, routes, the trust
// bundle and its flow tables), turns the flow tables into the XDP FIB
// (agent/reconcile, writing only differences), keeps an SVID per
// enrolled pod (agent/svid), enrols pods handed over on its unix socket
// (agent/enrolment), and serves its admin API (agent/admin) and
// Prometheus metrics.
//
// The FIB's program and maps are pinned: they keep forwarding while the
// controller is unreachable or the agent restarts, and a restarted agent
// starts from what the maps hold rather than from an empty table.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/enrolment"
	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/agent/resolve"
	"github.com/fibmesh/fibmesh/agent/svid"
	"github.com/fibmesh/fibmesh/agent/xdsclient"
	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
	"github.com/fibmesh/fibmesh/api/enrol"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/punt"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// Defaults.
const (
	DefaultAdminListen   = admin.DefaultListen
	DefaultMetricsListen = ":15090"
	// DefaultReconnectBase and DefaultReconnectCap bound the wait before
	// reconnecting to the controller: exponential from the base, capped,
	// with full jitter (a uniform draw below the bound), so that a
	// thousand agents that lost the same controller do not come back in
	// step.
	DefaultReconnectBase = 100 * time.Millisecond
	DefaultReconnectCap  = 30 * time.Second
)

// Config configures an Agent.
type Config struct {
	// Node is this node's name: the xDS node.id and its flow table.
	Node string
	// NIC is the node's fabric interface.
	NIC string
	// PinDir is the bpffs directory of this node's FIB; empty pins
	// nothing (the FIB goes with the agent: tests, benchmarks).
	PinDir string
	// Controller is the controller's xDS + CA address (host:port, TLS).
	Controller string
	// ControllerCA is the PEM file of the roots the controller's serving
	// certificate must chain to; ControllerServerName the name it must
	// carry (default: the host part of Controller).
	ControllerCA         string
	ControllerServerName string
	// TokenFile holds the node's bearer token; it is re-read for every
	// request (a projected ServiceAccount token rotates).
	TokenFile string
	// RunDir holds the enrolment socket and state (api/enrol.SocketPath).
	RunDir string
	// AdminListen and MetricsListen are the admin API's and the
	// Prometheus endpoint's addresses ("" for the defaults; "-" for
	// none).
	AdminListen, MetricsListen string
	// Punt lists destinations whose new flows need the agent's decision.
	Punt []netip.Prefix
	// Decide decides the punted flows of Punt's destinations; nil allows
	// every flow (and logs it). Flows to a local pod's UDP port that an
	// AuthorizationPolicy covers are punted and decided by L4 policy
	// (l4policy.go), not by Decide.
	Decide punt.DecideFunc
	// MaxFlows overrides the flow table size.
	MaxFlows uint32
	// SVIDTTL is the SVID lifetime asked of the CA (0: the CA's default).
	SVIDTTL time.Duration
	// ReconnectBase and ReconnectCap: see DefaultReconnectBase.
	ReconnectBase, ReconnectCap time.Duration
	// EnrolTimeout bounds an enrolment (default 30s).
	EnrolTimeout time.Duration
	// TrustDomain is the mesh's SPIFFE trust domain (the controller's
	// --trust-domain; default cluster.local): tunnel peers from another
	// are refused.
	TrustDomain string
	// DNSUpstream is where the pods' DNS proxy forwards names that are
	// not the mesh's (HOST:PORT); empty answers them REFUSED.
	DNSUpstream string
	// NoOffload keeps every mesh connection in userspace (--offload=off).
	NoOffload bool
	// NICKTLSOffload says whether the node's NIC offloads kTLS record
	// crypto (--nic-ktls-offload; zero: auto, from the NIC profile).
	NICKTLSOffload NICTLSMode
	// Tracing exports a span per HTTP request (client and server side)
	// over OTLP gRPC to a collector; zero: no spans (tracing.go).
	Tracing TracingConfig
	// ClusterID is the cluster the node's workloads are in, the
	// source_cluster/destination_cluster of Istio's metrics (default
	// DefaultClusterID, Istio's "Kubernetes").
	ClusterID string
	// AccessLog is where the access log goes: AccessLogOff (or empty),
	// AccessLogStdout, AccessLogStderr or a file path; AccessLogFormat
	// is AccessLogJSON (default) or AccessLogText (telemetry.md).
	AccessLog, AccessLogFormat string
	Log                        *slog.Logger
}

// Agent runs one node.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	fib    *fib.FIB
	punter *punt.Punter
	rec    *reconcile.Reconciler
	conn   *grpc.ClientConn
	xds    *xdsclient.Client
	svids  *svid.Manager
	enrol  *enrolment.Server
	reg    *prometheus.Registry
	m      *metrics
	conf   *xdsconf.Store
	proxy  *proxy.Proxy
	flows  *flowTable    // the proxy's XDP flow entries (flows.go); nil without a FIB
	nic    *nicTLS       // the NIC kTLS offload answers (nictls.go)
	tel    *telemetry    // Istio's metrics and the access log (telemetry.go)
	traces *tracing      // the spans' exporter (tracing.go); nil without a collector
	spans  *traceMetrics // the spans' counters (tracebatch.go)
	ktls   *ktlsMetrics  // the offloaded connections' kTLS state (ktlsmetrics.go)

	meshPods   atomic.Pointer[map[netip.Addr]spiffeid.ID]
	refusalLog logLimit

	pathMu sync.Mutex
	paths  map[string]*podPath // enrolled pods whose data path runs, by namespace/name
	probes *probes             // the node's kubelet probe table (probes.go), under pathMu

	mu         sync.Mutex
	tablesSeen chan struct{} // closed (and replaced) at each flow table applied
	bundle     []*x509.Certificate
	ctl        connState
	// connectedOnce: the current stream has had a response.
	connectedOnce bool
	types         map[string]*typeState
	ready         bool
}

// typeState is what the agent knows of one xDS type beyond the client's
// resources.
type typeState struct {
	updated time.Time
	nack    *admin.UpdateFailure
}

// New opens (or re-opens, after a restart) the node's FIB and reads back
// what its maps hold, prepares the connection to the controller (it is
// made by Run), and listens on the enrolment socket. Nothing is written
// to the FIB until the controller's first flow table is applied.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Node == "":
		return nil, errors.New("agent: node name is required")
	case cfg.NIC == "":
		return nil, errors.New("agent: NIC is required")
	case cfg.Controller == "":
		return nil, errors.New("agent: the controller's address is required")
	case cfg.ControllerCA == "":
		return nil, errors.New("agent: the controller's CA file is required (the agent talks to the controller over TLS only)")
	case cfg.TokenFile == "":
		return nil, errors.New("agent: the node's token file is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = DefaultAdminListen
	}
	if cfg.MetricsListen == "" {
		cfg.MetricsListen = DefaultMetricsListen
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = "cluster.local"
	}
	if cfg.ReconnectBase <= 0 {
		cfg.ReconnectBase = DefaultReconnectBase
	}
	if cfg.ReconnectCap <= 0 {
		cfg.ReconnectCap = DefaultReconnectCap
	}
	if err := cfg.Tracing.Validate(); err != nil {
		return nil, err
	}
	conn, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	f, err := fib.Open(fib.Options{PinDir: cfg.PinDir, MaxFlows: cfg.MaxFlows})
	if err != nil {
		conn.Close()
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Log, fib: f, conn: conn,
		tablesSeen: make(chan struct{}), types: map[string]*typeState{},
		conf: xdsconf.NewStore(), paths: map[string]*podPath{}}
	if a.probes, err = newProbes(); err != nil {
		a.closeEarly()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.punter = punt.New(f, a.decidePunt)
	a.rec, err = reconcile.New(reconcile.Config{
		Node: cfg.Node, NIC: cfg.NIC, Punt: cfg.Punt,
		Dataplane: reconcile.FIB(f, a.attach), Resolver: &resolve.Netlink{},
		Applied: a.redecidePunts,
	})
	if err != nil {
		a.closeEarly()
		return nil, err
	}
	a.svids, err = svid.NewManager(svid.ManagerConfig{
		Client: cav1.NewCertificateServiceClient(conn), TTL: cfg.SVIDTTL,
		OnChange: func(ns, pod string, s *svid.SVID) {
			a.log.Info("SVID issued", "pod", ns+"/"+pod, "spiffe_id", s.ID.String(), "serial", s.Chain[0].SerialNumber.String(), "not_after", s.NotAfter)
			a.resumePod(ns, pod)
		},
	})
	if err != nil {
		a.closeEarly()
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		a.closeEarly()
		return nil, fmt.Errorf("agent: trust domain %q: %w", cfg.TrustDomain, err)
	}
	a.nic = a.newNICTLS()
	a.ktls = newKTLSMetrics(cfg.NIC, nicProfile(cfg.NIC), a.nic.local())
	a.spans = newTraceMetrics()
	if err := a.newTelemetry(); err != nil {
		a.closeEarly()
		return nil, err
	}
	if a.traces, err = newTracing(cfg.Tracing, cfg.Node, func(ns, pod string) string { return a.podWorkload(ns, pod).Name }, a.spans, cfg.Log); err != nil {
		a.closeEarly()
		return nil, err
	}
	a.proxy, err = proxy.New(proxy.Config{Snapshot: a.conf.Snapshot, Certificate: a.podCertificate, TrustBundle: a.trustBundle,
		TrustDomain: td, Events: a.onProxyEvents, Requests: a.onProxyRequest, MeshPod: a.meshPod, Offload: a.offloadConfig(),
		Workload: a.podWorkload, Tracer: a.traces.hook()})
	if err != nil {
		a.closeEarly()
		return nil, err
	}
	a.tel.conns = a.proxy.Connections
	a.xds = xdsclient.New(conn, xdsclient.Config{Node: cfg.Node, Delta: true, Metadata: a.nic.metadata(),
		Subscriptions: xdsapi.AgentSubscriptions(cfg.Node), Validate: a.validate})
	a.enrol, err = enrolment.Listen(enrolment.Config{
		Socket: enrol.SocketPath(cfg.RunDir, cfg.Node), Enrol: a.enrolPod, Forget: a.forgetPod, Timeout: cfg.EnrolTimeout,
	})
	if err != nil {
		a.closeEarly()
		return nil, err
	}
	a.m = newMetrics(a)
	a.reg = prometheus.NewRegistry()
	// The Go runtime's and the process's own (go_goroutines,
	// process_resident_memory_bytes, open fds), as the controller has.
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.reg.MustRegister(a.m.collectors()...)
	a.reg.MustRegister(a.proxy.Collectors()...)
	a.reg.MustRegister(a.tel.allCollectors()...)
	return a, nil
}

// dial prepares the controller connection: TLS verified against the
// controller's CA, and the node token on every call, never in clear.
func dial(cfg Config) (*grpc.ClientConn, error) {
	pem, err := os.ReadFile(cfg.ControllerCA)
	if err != nil {
		return nil, fmt.Errorf("agent: controller CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("agent: controller CA %s: no PEM certificate in it", cfg.ControllerCA)
	}
	name := cfg.ControllerServerName
	if name == "" {
		host, _, err := net.SplitHostPort(cfg.Controller)
		if err != nil {
			return nil, fmt.Errorf("agent: controller address %q: want HOST:PORT (e.g. 10.100.0.254:15012): %w", cfg.Controller, err)
		}
		name = host
	}
	if _, err := os.Stat(cfg.TokenFile); err != nil {
		return nil, fmt.Errorf("agent: token file: %w", err)
	}
	tc := &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS13}
	conn, err := grpc.NewClient(cfg.Controller, append(xdsclient.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithPerRPCCredentials(svid.Credentials(svid.TokenFromFile(cfg.TokenFile))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// gRPC reconnects the connection on its own schedule, which would
		// otherwise be its default (1 s × 1.6ⁿ, ±20 %): agents that lost
		// the controller together would retry nearly together. The same
		// base and cap as the stream's Backoff, jitter of a full step.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: cfg.ReconnectBase, Multiplier: 2, Jitter: 1, MaxDelay: cfg.ReconnectCap},
			MinConnectTimeout: 10 * time.Second,
		}))...,
	)
	if err != nil {
		return nil, fmt.Errorf("agent: controller %s: %w", cfg.Controller, err)
	}
	return conn, nil
}

// FIB returns the agent's FIB.
func (a *Agent) FIB() *fib.FIB { return a.fib }

// Reconciler returns the agent's reconciler.
func (a *Agent) Reconciler() *reconcile.Reconciler { return a.rec }

// XDS returns the agent's xDS client: what it accepted, for the slow
// path.
func (a *Agent) XDS() *xdsclient.Client { return a.xds }

// TrustBundle returns the mesh's trust bundle as last received over SDS
// (ROOTCA); nil before the first. It must not be modified.
func (a *Agent) TrustBundle() []*x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bundle
}

// SVIDs returns the agent's SVID manager.
func (a *Agent) SVIDs() *svid.Manager { return a.svids }

// Enrolment returns the agent's enrolment server.
func (a *Agent) Enrolment() *enrolment.Server { return a.enrol }

// Registry returns the agent's Prometheus registry.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// attach attaches the FIB to dev and opens its punt socket: the
// reconciler's Dataplane.Attach.
func (a *Agent) attach(dev string) error {
	mode, d, err := a.fib.Attach(dev)
	if err != nil {
		return err
	}
	iface, err := net.InterfaceByName(dev)
	if err != nil {
		return fmt.Errorf("interface %s: %w", dev, err)
	}
	if err := a.punter.AddInterface(iface.Index); err != nil {
		return fmt.Errorf("punt socket on %s: %w", dev, err)
	}
	a.log.Info("XDP FIB attached", "interface", dev, "ifindex", iface.Index, "mode", string(mode),
		"nic_profile", d.Profile.Name, "nic_reason", d.Reason, "bpf_constants", fib.NICFor(d).String())
	return nil
}

// Run serves until ctx is done: the controller connection (reconnecting
// with backoff), the reconciler's retries, netlink watches, punts, the
// enrolment socket, the admin API and metrics. The FIB keeps forwarding
// after Run returns and after the process exits.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var servers []*http.Server
	serve := func(what, addr string, h http.Handler) error {
		if addr == "-" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		a.log.Info("serving", "what", what, "addr", ln.Addr().String())
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("server failed", "what", what, "err", err)
				cancel()
			}
		}()
		return nil
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	if err := serve("admin API", a.cfg.AdminListen, admin.Handler(a)); err != nil {
		return err
	}
	if err := serve("metrics", a.cfg.MetricsListen, promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{})); err != nil {
		return err
	}
	lost := func(err error) {
		a.log.Warn("netlink watch lost; re-reading links and neighbours and subscribing again", "err", err)
	}
	if err := resolve.Watch(ctx, a.rec.Kick, lost); err != nil {
		a.log.Warn("no netlink watch: unresolved next hops are retried on a timer only", "err", err)
	}
	if err := a.enrol.Restore(ctx); err != nil {
		a.log.Warn("some enrolled pods were not restored", "err", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	run("reconciler", a.rec.Run)
	run("punt", a.punter.Run)
	run("enrolment", a.enrol.Serve)
	run("controller", a.runController)
	<-ctx.Done()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func (a *Agent) closeEarly() {
	a.conn.Close()
	a.fib.Close()
	if a.probes != nil {
		a.probes.close()
	}
	if a.tel != nil {
		a.tel.log.close()
	}
	a.traces.flush()
}

// Close releases the agent's sockets and file descriptors; pinned state
// stays (and without pins, the FIB goes away). The pods' capture rules
// stay too: until an agent listens again, captured connections are
// refused.
func (a *Agent) Close() error {
	a.pathMu.Lock()
	keys := make([][2]string, 0, len(a.paths))
	for k := range a.paths {
		ns, name, _ := strings.Cut(k, "/")
		keys = append(keys, [2]string{ns, name})
	}
	a.pathMu.Unlock()
	for _, k := range keys {
		_ = a.stopPod(k[0], k[1], nil)
	}
	a.svids.Close()
	return errors.Join(a.proxy.Close(), a.tel.log.close(), a.traces.flush(), a.flows.close(), a.punter.Close(), a.conn.Close(), a.fib.Close(), a.probes.close())
}
