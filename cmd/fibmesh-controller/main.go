// Command fibmesh-controller is the fibmesh control plane. It reads the
// mesh's configuration (Istio and Kubernetes resources) from a directory
// of YAML or from the Kubernetes API, builds the model of the mesh, keeps
// the last good one in force, pushes it to every node's agent over xDS
// (and FDS), signs the agents' workload certificates, and serves metrics,
// status and analysis on the monitoring endpoint.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"k8s.io/client-go/kubernetes"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller"
	"github.com/fibmesh/fibmesh/controller/admission"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/kubepublish"
	"github.com/fibmesh/fibmesh/controller/live"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/nodetaint"
	"github.com/fibmesh/fibmesh/controller/store"
	"github.com/fibmesh/fibmesh/controller/store/file"
	"github.com/fibmesh/fibmesh/controller/store/kube"
	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"
	"github.com/fibmesh/fibmesh/internal/logflag"
)

const usage = `fibmesh-controller: the fibmesh control plane.

It reads Istio resources (VirtualService, DestinationRule, ServiceEntry,
PeerAuthentication, AuthorizationPolicy) and the Kubernetes objects they
apply to (Service, EndpointSlice, Pod, Namespace, Node, ServiceAccount),
builds the mesh's model, and pushes it to every node's agent over xDS:

  --config-dir DIR    a directory of multi-document YAML, watched for
                      changes (the embedded default; no cluster needed)
  --kubeconfig PATH   a Kubernetes cluster (in-cluster config when neither
                      flag is given and the controller runs in a pod)

A change that does not decode is rejected with its file, document, kind,
name and field, and the last good input stays in force.

On --xds-tls-listen (gRPC over TLS, default :15012; what agents use) and
--xds-listen (plaintext, default 127.0.0.1:15010, for local debugging):
  ADS, state-of-the-world and delta: LDS RDS CDS EDS (Envoy v3), SDS (the
  trust bundle) and FDS (fibmesh.fib.v1.FlowTable), per node.id = node
  name; see docs/xds.md
  fibmesh.ca.v1.CertificateService: SVIDs for the pods on the caller's
  node; see docs/ca.md
The TLS port's serving certificate comes from the mesh CA itself, for the
Service's DNS names (fibmesh-controller.fibmesh-system.svc...) and every
--xds-tls-san; agents verify it against the CA's root. Agents send their
token only over TLS; on the TLS port every xDS stream must carry one and
gets only its own node's config (the plaintext port, for debugging on
localhost, asks for none).

On --webhook-listen (HTTPS, default :15017; the Service's port 443):
  POST /validate, the validating admission webhook (AdmissionReview
  admission.k8s.io/v1) for CREATE and UPDATE of VirtualService,
  DestinationRule, ServiceEntry, PeerAuthentication, AuthorizationPolicy:
  the object is decoded strictly and analyzed with the resources in force;
  Error findings about it deny the request (one "Error [IST0109] (...)"
  line each), Warning findings come back as warnings kubectl prints, and
  so do errors about objects that may be created later (IST0101 missing
  references, IST0173 subsets without pods: apply order is free). Its
  certificate is the TLS port's (same names), or --webhook-cert and
  --webhook-key (re-read when they change); see docs/admission.md.

With a Kubernetes store the controller also writes, retrying on failure:
  the ConfigMap --ca-root-configmap (default fibmesh-ca-root) in
  --namespace, key root-cert.pem = the CA's trust bundle (agents'
  --controller-ca), kept up to date when roots rotate; and the
  ValidatingWebhookConfiguration --webhook-config (default
  fibmesh-validator): its webhooks' caBundle = the CA's roots, and their
  failurePolicy Fail once the webhook serves a model (the manifest ships
  Ignore so that an install is not blocked before the controller runs).

The CA: --ca-cert/--ca-key files, or --ca-secret NAMESPACE/NAME (Istio's
cacerts layout), or else a root generated on first start and kept in
--ca-dir. Agents authenticate with --bootstrap-tokens (the lab's file of
"<node> <token>" lines) or, in a cluster, a projected ServiceAccount
token checked with TokenReview (--token-audience).

Endpoints on --monitoring-listen:
  /                     the live page: the mesh as a graph (request rate,
                        errors, p99, mTLS per edge), each node's fast path,
                        the control plane; updated every --live-interval
                        from the agents' metrics (--live-agent-port on
                        each node's InternalIP); see docs/telemetry.md
  /api/mesh             the page's snapshot as JSON; /api/mesh/events
                        streams it (server-sent events)
  /metrics              Prometheus: pushes, convergence, agents, NACKs, CSRs
  /debug/config_status  per node: what was sent, ACKed, NACKed (fibctl
                        config status reads it)
  /debug/analyze        findings on the current input (?o=table|json|yaml)
  /debug/resources      the resources in force (JSON)
  /debug/model          the model in force (JSON)
  /debug/status         model version, last update, last rejection
  /debug/ca/roots       the trust bundle; POST /debug/ca/rotate (new signing
                        root, the old one still trusted), /debug/ca/retire
                        (drop all but the signing root), /debug/ca/reload
                        (re-read --ca-secret); loopback clients only
  /healthz, /readyz     readiness: a model is in force and pushed

Example:
  fibmesh-controller --config-dir /run/fibmesh/lab/cluster --ca-dir /tmp/fibmesh-ca \
      --bootstrap-tokens /run/fibmesh/lab/tokens
  fibctl config status

Flags:
`

// flags are the command line.
type flags struct {
	nodeTaint                                       string
	dir, kubeconfig, listen, xdsListen, trustDomain string
	caDir, caCert, caKey, caRoots, caSecret         string
	bootstrapTokens, tokenAudience, agentSA         string
	xdsTLSListen                                    string
	xdsTLSSANs                                      []string
	svidTTL, debounce, debounceMax, configDebounce  time.Duration
	syncConcurrency                                 int
	liveAgentPort, liveConcurrency                  int
	liveInterval, liveTimeout                       time.Duration
	webhookListen, webhookCert, webhookKey          string
	webhookConfig, caRootConfigMap, namespace       string
}

// defaultNamespace is the controller's namespace: POD_NAMESPACE (the
// downward API), else fibmesh-system.
func defaultNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return kubepublish.DefaultNamespace
}

func main() {
	fs := flag.NewFlagSet("fibmesh-controller", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	var f flags
	fs.StringVar(&f.dir, "config-dir", "", "directory of YAML to read and watch")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to read")
	fs.StringVar(&f.listen, "monitoring-listen", ":15014", "address of the metrics, debug and health endpoints")
	fs.StringVar(&f.xdsListen, "xds-listen", "127.0.0.1:15010", "address of the plaintext gRPC server (ADS and the CA) for local debugging; empty: none")
	fs.StringVar(&f.xdsTLSListen, "xds-tls-listen", ":15012", "address of the gRPC server over TLS (ADS and the CA): what agents use; empty: none")
	fs.Func("xds-tls-san", "extra DNS name or IP address in the TLS serving certificate (repeatable, comma-separated), e.g. the address agents dial", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				return errors.New("empty name")
			}
			f.xdsTLSSANs = append(f.xdsTLSSANs, s)
		}
		return nil
	})
	fs.DurationVar(&f.configDebounce, "config-debounce", file.DefaultDebounce, "with --config-dir: quiet time after a file change before the directory is re-read (covers an editor's save sequence)")
	fs.StringVar(&f.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of workload identities")
	fs.StringVar(&f.caDir, "ca-dir", "/var/lib/fibmesh/ca", "directory holding the generated root CA (created on first start)")
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA certificate to sign with (with --ca-key)")
	fs.StringVar(&f.caKey, "ca-key", "", "PEM file of the CA's private key (with --ca-cert)")
	fs.StringVar(&f.caRoots, "ca-roots", "", "PEM file of the trust bundle, if more than --ca-cert (with --ca-cert)")
	fs.StringVar(&f.caSecret, "ca-secret", "", "NAMESPACE/NAME of a Kubernetes Secret holding the CA (ca-cert.pem, ca-key.pem, root-cert.pem)")
	fs.StringVar(&f.bootstrapTokens, "bootstrap-tokens", "", `file of "<node> <token>" lines authenticating agents (the lab)`)
	fs.StringVar(&f.tokenAudience, "token-audience", "fibmesh-ca", "audience of the agents' projected ServiceAccount tokens (TokenReview, in a cluster)")
	fs.DurationVar(&f.svidTTL, "svid-ttl", 24*time.Hour, "default lifetime of workload certificates")
	fs.DurationVar(&f.debounce, "push-debounce", 10*time.Millisecond, "quiet time before a push: changes within it are pushed together")
	fs.DurationVar(&f.debounceMax, "push-debounce-max", 500*time.Millisecond, "longest a push waits under a stream of changes")
	fs.IntVar(&f.syncConcurrency, "sync-concurrency", 64, "agents making their first (full) sync at once; more wait their turn (bounds memory when all reconnect; -1: no bound)")
	fs.IntVar(&f.liveAgentPort, "live-agent-port", live.DefaultAgentPort, "port of the agents' metrics on each node's InternalIP, scraped for the live page while someone watches it; 0: none")
	fs.DurationVar(&f.liveInterval, "live-interval", live.DefaultInterval, "live page: time between two scrapes of the agents (and two updates of the page)")
	fs.DurationVar(&f.liveTimeout, "live-scrape-timeout", live.DefaultTimeout, "live page: longest wait for one agent's metrics (less than --live-interval); an agent that does not answer is shown as down")
	fs.IntVar(&f.liveConcurrency, "live-scrape-concurrency", live.DefaultConcurrency, "live page: agents scraped at once")
	fs.StringVar(&f.webhookListen, "webhook-listen", ":15017", "address of the validating admission webhook (HTTPS, POST "+admission.Path+"); empty: none")
	fs.StringVar(&f.webhookCert, "webhook-cert", "", "PEM file of the webhook's serving certificate (chain), with --webhook-key, instead of one from the mesh CA; re-read when it changes (the caBundle is then not patched)")
	fs.StringVar(&f.webhookKey, "webhook-key", "", "PEM file of the webhook's private key (with --webhook-cert)")
	fs.StringVar(&f.webhookConfig, "webhook-config", kubepublish.DefaultWebhookConfig, "ValidatingWebhookConfiguration whose caBundle and failurePolicy the controller sets, with a Kubernetes store; empty: do not touch it")
	fs.StringVar(&f.caRootConfigMap, "ca-root-configmap", kubepublish.DefaultConfigMap, "ConfigMap in --namespace that the controller keeps holding the CA's trust bundle (key root-cert.pem), with a Kubernetes store; empty: none")
	fs.StringVar(&f.namespace, "namespace", defaultNamespace(), "namespace the controller runs in (default: $POD_NAMESPACE, else fibmesh-system)")
	fs.StringVar(&f.nodeTaint, "node-taint", nodetaint.DefaultTaint, "with a Kubernetes store: the startup taint the controller lifts from a node once its agent is connected and has accepted its flow table (nodes that register with it get no uncaptured pods before the agent runs); empty: none")
	logFormat := logflag.Register(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fibmesh-controller: unexpected argument %q (see --help)\n", fs.Arg(0))
		os.Exit(2)
	}
	log, err := logFormat.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fibmesh-controller:", err)
		os.Exit(2)
	}
	if err := checkFlags(f); err != nil {
		fmt.Fprintln(os.Stderr, "fibmesh-controller:", err, "(see --help)")
		os.Exit(2)
	}
	st, kc, err := openStore(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fibmesh-controller:", err)
		os.Exit(2)
	}
	if err := run(log, st, kc, f); err != nil {
		log.Error("controller failed", "err", err)
		os.Exit(1)
	}
}

func checkFlags(f flags) error {
	switch {
	case (f.caCert == "") != (f.caKey == ""):
		return errors.New("--ca-cert and --ca-key go together")
	case f.caRoots != "" && f.caCert == "":
		return errors.New("--ca-roots needs --ca-cert and --ca-key")
	case f.caSecret != "" && f.caCert != "":
		return errors.New("--ca-secret and --ca-cert are exclusive: pick one CA source")
	case f.caSecret != "" && !strings.Contains(f.caSecret, "/"):
		return fmt.Errorf("--ca-secret %q: want NAMESPACE/NAME", f.caSecret)
	case f.svidTTL < time.Minute:
		return fmt.Errorf("--svid-ttl %s: want at least 1m", f.svidTTL)
	case f.syncConcurrency == 0 || f.syncConcurrency < -1:
		return fmt.Errorf("--sync-concurrency %d: want a positive number, or -1 for no bound", f.syncConcurrency)
	case f.xdsListen == "" && f.xdsTLSListen == "":
		return errors.New("--xds-listen and --xds-tls-listen are both empty: agents could not connect")
	case f.configDebounce <= 0:
		return fmt.Errorf("--config-debounce %s: want a positive duration", f.configDebounce)
	case f.liveAgentPort < 0 || f.liveAgentPort > 65535:
		return fmt.Errorf("--live-agent-port %d: want a port (0: do not scrape agents)", f.liveAgentPort)
	case f.liveInterval < 100*time.Millisecond || f.liveTimeout <= 0 || f.liveTimeout >= f.liveInterval:
		return fmt.Errorf("--live-interval %s / --live-scrape-timeout %s: want 0 < timeout < interval, interval at least 100ms", f.liveInterval, f.liveTimeout)
	case f.liveConcurrency < 1:
		return fmt.Errorf("--live-scrape-concurrency %d: want at least 1", f.liveConcurrency)
	case (f.webhookCert == "") != (f.webhookKey == ""):
		return errors.New("--webhook-cert and --webhook-key go together")
	case f.webhookCert != "" && f.webhookListen == "":
		return errors.New("--webhook-cert needs --webhook-listen: the webhook is off")
	case f.namespace == "":
		return errors.New("--namespace is empty: want the controller's namespace")
	case f.debounce <= 0 || f.debounceMax < f.debounce:
		return fmt.Errorf("--push-debounce %s / --push-debounce-max %s: want 0 < debounce <= max", f.debounce, f.debounceMax)
	}
	return nil
}

// openStore opens the config source the flags name: --config-dir (the
// file store) or a cluster (the kube store, with the client the CA and
// TokenReview use too; nil for a directory).
func openStore(f flags) (store.Store, kubernetes.Interface, error) {
	switch {
	case f.dir != "" && f.kubeconfig != "":
		return nil, nil, errors.New("--config-dir and --kubeconfig are exclusive: pick one source")
	case f.dir != "":
		st, err := file.Open(f.dir, file.Options{Debounce: f.configDebounce})
		if err != nil {
			return nil, nil, fmt.Errorf("--config-dir %w", err)
		}
		return st, nil, nil
	}
	c, err := kube.Connect(f.kubeconfig)
	if errors.Is(err, kube.ErrNoCluster) {
		return nil, nil, errors.New("no config source: give --config-dir DIR (a directory of YAML) or --kubeconfig PATH")
	}
	if err != nil {
		return nil, nil, err
	}
	return kube.New(c.Kube, c.Istio, kube.Options{}), c.Kube, nil
}

// firstVersion numbers the first model from the clock (milliseconds since
// 1970), so that a restarted controller's versions follow those of the one
// before it: agents and fibctl config status see versions move forward
// (as long as the controller averaged under 1,000 model updates a second).
func firstVersion() uint64 { return uint64(time.Now().UnixMilli()) }

func run(log *slog.Logger, st store.Store, kc kubernetes.Interface, f flags) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	log.Info("memory limit", "bytes", xds.SetDefaultMemoryLimit()) // GOMEMLIMIT, else xds.DefaultMemoryLimit
	epoch := firstVersion()
	var page *live.Page // set before xs.Run, which makes the pushes
	// Set before c.Run, which calls onEvent; nil when off.
	var webhook *admission.Handler
	var pub *kubepublish.Publisher
	xs := xds.New(xds.Options{
		Epoch:    epoch,
		Debounce: f.debounce, DebounceMax: f.debounceMax, SyncConcurrency: f.syncConcurrency,
		OnEvent: func(ev xds.Event) {
			switch ev.Kind {
			case "nack":
				log.Warn("agent refused config (NACK); it keeps its last good config", "node", ev.Node, "type", xds.ShortType(ev.TypeURL), "version", ev.Version, "reason", ev.Reason)
			case "connect", "disconnect":
				log.Info("agent "+ev.Kind, "node", ev.Node)
			case "nic-tls":
				log.Info("node's NIC kTLS offload report; routes to it in the flow tables follow", "node", ev.Node, "report", ev.Reason)
			}
		},
		OnPush: func(r xds.PushResult) {
			page.NotePush(r.Version, r.Took, r.Err)
			if r.Err != nil {
				log.Error("push failed; agents keep the previous config", "version", r.Version, "err", r.Err)
				return
			}
			log.Info("pushed", "version", r.Version, "took", r.Took, "updated", r.Updated, "nodes", r.Nodes)
		},
	})
	var c *controller.Controller
	c = controller.New(model.Options{TrustDomain: f.trustDomain, FirstVersion: epoch}, func(ev controller.Event) {
		if ev.Rejected != nil {
			log.Warn("config rejected; the last good input stays in force", "version", ev.Version, "err", ev.Rejected)
			return
		}
		if webhook != nil && pub != nil && c.Snapshot() != nil {
			pub.SetFailClosed() // the webhook serves, with a model in force
		}
		args := []any{"version", ev.Version, "resources", ev.Resources, "findings", ev.Findings, "errors", ev.Errors}
		if ev.Change != nil {
			args = append(args, "services_changed", len(ev.Change.Services), "nodes_affected", len(ev.Change.Nodes))
			if m := c.Model(); m != nil {
				xs.Update(m)
			}
		}
		log.Info("model updated", args...)
	})

	src := ca.Source{Dir: f.caDir, CertFile: f.caCert, KeyFile: f.caKey, RootsFile: f.caRoots, Secret: f.caSecret}
	authority, err := ca.Open(ctx, src, f.trustDomain, kc, ca.WithDefaultTTL(f.svidTTL))
	if err != nil {
		return err
	}
	log.Info("CA ready", "source", src.String(), "root_expires", authority.Root().NotAfter, "roots", len(authority.Bundle()))
	if kc != nil {
		pub, err = newPublisher(log, kc, f)
		if err != nil {
			return err
		}
	}
	publish := func(roots []*x509.Certificate) {
		if err := xs.SetTrustBundle(ca.BundleSecret(envoy.RootCASecret, roots)); err != nil {
			log.Error("trust bundle not pushed", "err", err)
		}
		if pub != nil {
			pub.SetRoots(ca.EncodeCerts(roots))
		}
	}
	publish(authority.Bundle())
	defer authority.OnBundleChange(publish)()
	auth, how, err := ca.NewAuthenticator(f.bootstrapTokens, kc, []string{f.tokenAudience})
	if err != nil {
		return fmt.Errorf("--bootstrap-tokens: %w", err)
	}
	log.Info("agents authenticate with", "how", how)
	csr := ca.NewServer(authority, auth, ca.ModelLookup(c.Model))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(xs.Collectors()...)
	reg.MustRegister(csr.Collectors()...)

	agentPort := f.liveAgentPort
	if agentPort == 0 {
		agentPort = -1 // live.Options: do not scrape
	}
	page, err = live.New(live.Options{Model: c.Model, Agents: xs.Status, Registry: reg, AgentPort: agentPort,
		Interval: f.liveInterval, Timeout: f.liveTimeout, Concurrency: f.liveConcurrency})
	if err != nil {
		return err
	}

	serve := func(g *grpc.Server) { xs.Register(g); csr.Register(g) }
	var servers []*grpc.Server
	var listeners []net.Listener // of servers, in order
	var wl net.Listener          // the webhook's
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
		if wl != nil {
			wl.Close()
		}
	}
	var cert *ca.ServingCert // for the TLS port and the webhook
	if f.xdsTLSListen != "" || (f.webhookListen != "" && f.webhookCert == "") {
		cert, err = ca.NewServingCert(authority, append(append([]string{}, ca.ServingNames...), f.xdsTLSSANs...), 0)
		if err != nil {
			return fmt.Errorf("TLS serving certificate: %w", err)
		}
	}
	if f.xdsTLSListen != "" {
		creds := credentials.NewTLS(&tls.Config{GetCertificate: cert.GetCertificate, MinVersion: tls.VersionTLS12})
		// Agents authenticate every xDS stream with their node token, and
		// get only their own node's config.
		nodeAuth := xds.RequireNode(func(ctx context.Context) (string, error) { return ca.AuthenticateNode(ctx, auth) })
		g := grpc.NewServer(append(xds.GRPCServerOptions(), grpc.Creds(creds), grpc.ChainStreamInterceptor(nodeAuth))...)
		serve(g)
		l, err := net.Listen("tcp", f.xdsTLSListen)
		if err != nil {
			return fmt.Errorf("xds TLS listener: %w", err)
		}
		servers, listeners = append(servers, g), append(listeners, l)
	}
	if f.xdsListen != "" {
		g := grpc.NewServer(xds.GRPCServerOptions()...)
		serve(g)
		l, err := net.Listen("tcp", f.xdsListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("xds listener: %w", err)
		}
		servers, listeners = append(servers, g), append(listeners, l)
	}
	var wsrv *http.Server
	if f.webhookListen != "" {
		if webhook, err = admission.New(admission.Options{Snapshot: c.Snapshot}); err != nil {
			closeAll()
			return err
		}
		getCert := cert.GetCertificate
		if f.webhookCert != "" {
			kp, err := admission.LoadKeyPair(f.webhookCert, f.webhookKey)
			if err != nil {
				closeAll()
				return err
			}
			getCert = kp.GetCertificate
		}
		wmux := http.NewServeMux()
		wmux.Handle(admission.Path, webhook)
		wsrv = &http.Server{Handler: wmux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
			TLSConfig: &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12},
			ErrorLog:  slog.NewLogLogger(log.With("server", "webhook").Handler(), slog.LevelWarn)}
		if wl, err = net.Listen("tcp", f.webhookListen); err != nil {
			closeAll()
			return fmt.Errorf("webhook listener: %w", err)
		}
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		closeAll()
		return fmt.Errorf("monitoring listener: %w", err)
	}
	c.AddReadyCheck("xds", func() error {
		if !xs.Ready() {
			return errors.New("the first model is not pushed yet")
		}
		return nil
	})
	mux := http.NewServeMux()
	mux.Handle("/", c.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET "+xds.StatusPath, xs.Handler())
	mux.Handle("/debug/ca/", authority.AdminHandler())
	page.Register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, len(servers)+2)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("monitoring server: %w", err)
		}
	}()
	for i, g := range servers {
		go func() {
			if err := g.Serve(listeners[i]); err != nil {
				serveErr <- fmt.Errorf("xds server on %s: %w", listeners[i].Addr(), err)
			}
		}()
	}
	if wsrv != nil {
		go func() {
			if err := wsrv.ServeTLS(wl, "", ""); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("webhook server: %w", err)
			}
		}()
	}
	pubDone := make(chan struct{})
	if pub != nil {
		go func() { pub.Run(ctx); close(pubDone) }()
	} else {
		close(pubDone)
	}
	taintDone := make(chan struct{})
	if kc != nil && f.nodeTaint != "" {
		go func() {
			defer close(taintDone)
			err := nodetaint.Run(ctx, nodetaint.Options{Client: kc, Taint: f.nodeTaint, Ready: func() map[string]bool { return agentsServing(xs.Status()) },
				OnLift: func(node string, err error) {
					if err != nil {
						log.Warn("startup taint not lifted; tried again", "node", node, "taint", f.nodeTaint, "err", err)
						return
					}
					log.Info("startup taint lifted: the node's agent serves it", "node", node, "taint", f.nodeTaint)
				}})
			if err != nil {
				log.Error("startup taints are not lifted", "err", err)
			}
		}()
	} else {
		close(taintDone)
	}
	go page.Run(ctx)
	pushDone := make(chan struct{})
	go func() { xs.Run(ctx); close(pushDone) }()
	var xdsAddr, tlsAddr string
	for i, l := range listeners {
		if i == 0 && f.xdsTLSListen != "" {
			tlsAddr = l.Addr().String()
		} else {
			xdsAddr = l.Addr().String()
		}
	}
	var webhookAddr string
	if wl != nil {
		webhookAddr = wl.Addr().String()
	}
	log.Info("serving", "xds", xdsAddr, "xds_tls", tlsAddr, "webhook", webhookAddr, "monitoring", ln.Addr().String())

	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx, st) }()
	select {
	case err = <-runErr:
	case err = <-serveErr:
		stop()
		err = errors.Join(err, <-runErr)
	}
	stop()
	<-pushDone
	<-pubDone
	<-taintDone
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, g := range servers {
		go func() { <-shutdown.Done(); g.Stop() }()
		g.GracefulStop()
	}
	if serr := srv.Shutdown(shutdown); serr != nil {
		log.Warn("monitoring server did not shut down cleanly", "err", serr)
	}
	if wsrv != nil {
		if serr := wsrv.Shutdown(shutdown); serr != nil {
			log.Warn("webhook server did not shut down cleanly", "err", serr)
		}
	}
	// A server that failed while the others were stopping.
	for {
		select {
		case serr := <-serveErr:
			err = errors.Join(err, serr)
		default:
			return err
		}
	}
}

// newPublisher returns the writer of the trust bundle's ConfigMap and the
// webhook configuration, logging what it does: a missing webhook
// configuration once at info (until it appears), failures at warn.
func newPublisher(log *slog.Logger, kc kubernetes.Interface, f flags) (*kubepublish.Publisher, error) {
	opts := kubepublish.Options{Client: kc, Namespace: f.namespace, ConfigMap: f.caRootConfigMap,
		PatchCABundle: f.webhookCert == ""}
	if f.webhookListen != "" {
		opts.WebhookConfig = f.webhookConfig
	}
	missing := false
	opts.OnEvent = func(ev kubepublish.Event) {
		switch {
		case errors.Is(ev.Err, kubepublish.ErrWebhookConfigNotFound):
			if !missing {
				log.Info("webhook configuration not found; the API server does not call the webhook until it exists (patched as soon as it is created)", "object", ev.Object)
			}
			missing = true
		case ev.Err != nil && strings.HasPrefix(ev.Err.Error(), "watch "):
			log.Warn("watch of the Kubernetes API failed; the one-minute check stands in until it is back", "object", ev.Object, "retry_in", ev.Retry, "err", ev.Err)
		case ev.Err != nil:
			log.Warn("write to the Kubernetes API failed; retrying", "object", ev.Object, "retry_in", ev.Retry, "err", ev.Err)
		default:
			if strings.HasPrefix(ev.Object, "ValidatingWebhookConfiguration") {
				missing = false
			}
			log.Info("wrote to the Kubernetes API", "object", ev.Object, "action", ev.Action, "change", ev.Change)
		}
	}
	return kubepublish.New(opts)
}

// agentsServing returns the nodes whose agent is connected and has
// accepted its flow table (the version last sent).
func agentsServing(status []xds.NodeStatus) map[string]bool {
	out := map[string]bool{}
	for _, n := range status {
		if !n.InModel || n.Streams == 0 {
			continue
		}
		for _, t := range n.Types {
			if t.TypeURL == xdsapi.FlowTableType && t.Synced() {
				out[n.Node] = true
			}
		}
	}
	return out
}
