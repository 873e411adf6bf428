// Command fibmesh-agent is the fibmesh node daemon, driven by the
// controller over TLS: it turns the node's flow tables (FDS) into the XDP
// FIB on the node's NIC and every local pod's veth, obtains the SVIDs of
// enrolled pods, serves the packets the FIB punts for a decision, and
// serves its admin API and metrics (package agent).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/agent"
	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/logflag"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

const usage = `fibmesh-agent: the fibmesh node daemon, driven by the controller.

It connects to the controller over TLS (--controller, verified against
--controller-ca, authenticated with the node token in --token-file),
subscribes over delta ADS to its node's flow tables (FDS), the trust
bundle (SDS ROOTCA) and the Envoy resources (CDS/EDS/LDS/RDS), and turns
the flow tables into the XDP FIB: the FIB is attached to the node's NIC
and to the host side of every local pod's veth; routes to local pods go
to their veths, routes to other nodes' pods to those nodes via the NIC
(next-hop MACs from the kernel's neighbour table), per-port mTLS modes
into the policy map. Only differences are written. A flow table it
cannot apply is refused (NACK) and the last good one stays.

Pods are enrolled on the unix socket <run-dir>/<node>/enrol.sock (api/enrol):
the agent holds the pod's network namespace open and obtains its SVID
(key generated here, CSR to the controller's CA, renewed at half-life).

Enrolled pods are captured (nftables table "fibmesh" in the pod's network
namespace): the pod's outbound TCP goes to the agent's listener on 15001,
which tunnels it over mTLS (TLS 1.3, the pod's SVID, ALPN fibmesh/1) to
the destination pod's agent on 15008; inbound plaintext goes to 15006,
where only PERMISSIVE and DISABLE ports are served; DNS (port 53) goes to
the agent's DNS proxy on 15053, which answers the mesh's names and
forwards others to --dns-upstream. The rules stay when the agent stops:
captured connections are then refused, never passed in clear
(docs/slowpath.md).

The FIB's program, links and maps are pinned in --pin-dir: they keep
forwarding while the controller is unreachable and while the agent
restarts; a restarted agent starts from what the maps hold. Use --cleanup
to remove them.

Endpoints: the admin API on --admin-listen (/config_dump, /pods, /fib,
/connections, /healthz, /readyz: 200 once the first flow table is applied) and
Prometheus metrics on --metrics-listen (/metrics: fibmesh_agent_*, and
Istio's standard istio_requests_total, istio_request_duration_milliseconds,
istio_request_bytes, istio_response_bytes and istio_tcp_* with Istio's
labels, docs/telemetry.md). The access log (--access-log) is off unless set.
Traces (--tracing-collector) are off unless set: then a span per HTTP request,
client and server side, goes to that OTLP gRPC collector (W3C traceparent and
B3 propagated; --tracing-sampling percent of new traces, a caller's decision
honoured).
Wait for readiness with /readyz, not by reading the log.

Run it in the node's network namespace. In the lab:

  nsenter --net=/run/netns/fm-node1 fibmesh-agent --node node1 \
    --controller 10.100.0.254:15012 --controller-ca ca/root-cert.pem --token-file node1.token

(not 'ip netns exec', which remounts /sys and hides /sys/fs/bpf).

Signals: SIGINT/SIGTERM stop the agent (the FIB stays); SIGUSR1 reopens
the --access-log file (after a rotation renamed it), as Envoy does.

Flags:
`

type prefixList []netip.Prefix

func (p *prefixList) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		pf, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("want an IPv4 CIDR like 10.200.2.0/24: %w", err)
		}
		if !pf.Addr().Is4() {
			return fmt.Errorf("%s: the FIB routes IPv4 only", pf)
		}
		*p = append(*p, pf.Masked())
	}
	return nil
}

func main() {
	fs := flag.NewFlagSet("fibmesh-agent", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var cfg agent.Config
	fs.StringVar(&cfg.Node, "node", "", "this node's name: the xDS node id and its flow table (required)")
	fs.StringVar(&cfg.NIC, "nic", auto, "the node's fabric interface; auto: the one holding --node-ip, or without it the one of the IPv4 default route")
	nodeIP := fs.String("node-ip", "", "this node's IP (its InternalIP; in a DaemonSet, status.hostIP): --nic=auto picks the interface holding it")
	fs.StringVar(&cfg.Controller, "controller", "", "the controller's xDS and CA address over TLS, HOST:PORT (port 15012; required)")
	fs.StringVar(&cfg.ControllerCA, "controller-ca", "", "PEM file of the root(s) the controller's certificate must chain to (required)")
	fs.StringVar(&cfg.ControllerServerName, "controller-server-name", "", "name the controller's certificate must carry (default: the host of --controller)")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file holding the node's bearer token (a bootstrap token, or a projected ServiceAccount token); re-read for every request (required)")
	fs.StringVar(&cfg.PinDir, "pin-dir", "", "bpffs directory for the FIB (default "+fib.DefaultPinRoot+"/<node>)")
	fs.StringVar(&cfg.RunDir, "run-dir", enrol.DefaultRunDir, "directory of the enrolment socket and state: <run-dir>/<node>/enrol.sock")
	fs.StringVar(&cfg.AdminListen, "admin-listen", agent.DefaultAdminListen, "admin API address (/config_dump, /pods, /fib, /connections, /healthz, /readyz); - for none")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", agent.DefaultMetricsListen, "Prometheus metrics address (/metrics); - for none")
	fs.DurationVar(&cfg.SVIDTTL, "svid-ttl", 0, "SVID lifetime to ask the CA for (default: the CA's, 24h); renewed at half of it")
	fs.DurationVar(&cfg.ReconnectCap, "reconnect-max", agent.DefaultReconnectCap, "longest wait between attempts to reach the controller (exponential backoff from 100ms, full jitter)")
	fs.DurationVar(&cfg.EnrolTimeout, "enrol-timeout", 30*time.Second, "how long an enrolment waits for the pod to appear in the node's flow table and get its SVID")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "the mesh's SPIFFE trust domain (the controller's --trust-domain): tunnel peers with an identity from another are refused")
	fs.StringVar(&cfg.DNSUpstream, "dns-upstream", "", "HOST:PORT where the pods' DNS proxy forwards names that are not the mesh's (in a cluster: the cluster DNS); auto: the first nameserver of /etc/resolv.conf, port 53 (the cluster DNS in a hostNetwork pod with dnsPolicy ClusterFirstWithHostNet); empty answers them REFUSED")
	cfg.NICKTLSOffload = agent.NICTLSAuto
	fs.Var(&cfg.NICKTLSOffload, agent.NICTLSFlag, "`auto|on|off`: whether this node's NIC offloads kTLS record crypto, reported to the controller (FDS marks the routes to this node): auto, from the NIC profile and its tls-hw-tx-offload/tls-hw-rx-offload features (fibctl nic); on forces it, off denies it. Where both ends' NICs offload, the client offers TLS 1.2 AES-128-GCM alone (mainline device offload's one suite), elsewhere TLS 1.3. Forcing it changes the suite only: on a NIC that cannot (veth) the kernel still does the crypto in software kTLS (docs/ktls.md)")
	fs.StringVar(&cfg.ClusterID, "cluster-id", agent.DefaultClusterID, "the cluster this node is in: source_cluster/destination_cluster of Istio's metrics (Istio's default cluster ID)")
	fs.StringVar(&cfg.AccessLog, "access-log", agent.AccessLogOff, "`off|stdout|stderr|PATH`: where to write the access log, one line per HTTP request and one per TCP connection (when it closes, or is refused or denied), with Envoy's fields (docs/telemetry.md); a PATH is appended to. Lines are queued, never holding a request: when the writer cannot keep up they are dropped and counted (fibmesh_agent_access_log_lines_total{result=\"dropped\"})")
	fs.StringVar(&cfg.AccessLogFormat, "access-log-format", agent.AccessLogJSON, "`json|text`: the access log's format: json, one object per line with Envoy's field names (Istio's default JSON format, plus the reporter and workloads); text, Istio's default text format")
	fs.StringVar(&cfg.Tracing.Collector, "tracing-collector", "", "`HOST:PORT` of an OTLP gRPC collector (e.g. an OpenTelemetry Collector's 4317) that gets a span per HTTP request, client side (the calling pod's agent) and server side (the called pod's), with W3C traceparent and B3 propagated to the apps; plaintext unless --tracing-collector-ca. Empty: no spans, no exporter (docs/telemetry.md)")
	fs.StringVar(&cfg.Tracing.CollectorCA, "tracing-collector-ca", "", "`PEM` file of the roots the collector's certificate must chain to: export over TLS instead of plaintext")
	fs.Float64Var(&cfg.Tracing.Sampling, "tracing-sampling", agent.DefaultTracingSampling, "`PERCENT` (0-100) of new traces sampled (Istio's default, 1); a caller's decision (a sampled traceparent, X-B3-Sampled) is honoured either way")
	offload := fs.String("offload", "auto", "auto: an L4 mesh connection leaves userspace once established and authorized (kTLS record crypto, the kernel moves its bytes, XDP flow entries) where the kernel has kTLS; off: every connection stays in userspace")
	maxFlows := fs.Uint("max-flows", 0, "flow table size (default 262144)")
	cleanup := fs.Bool("cleanup", false, "detach the FIB and remove everything pinned in --pin-dir, then exit")
	logFormat := logflag.Register(fs)
	var punts prefixList
	fs.Var(&punts, "punt", "destination CIDR whose new flows are punted to the agent for a decision (repeatable, comma-separated)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fibmesh-agent: unexpected argument %q (see --help)\n", fs.Arg(0))
		os.Exit(2)
	}
	log, err := logFormat.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fibmesh-agent: %v\n", err)
		os.Exit(2)
	}
	if cfg.Node == "" {
		fmt.Fprintln(os.Stderr, "fibmesh-agent: --node is required (this node's name, as the controller knows it)")
		os.Exit(2)
	}
	switch *offload {
	case "auto":
	case "off":
		cfg.NoOffload = true
	default:
		fmt.Fprintf(os.Stderr, "fibmesh-agent: --offload %q: want auto or off\n", *offload)
		os.Exit(2)
	}
	if cfg.PinDir == "" {
		cfg.PinDir = filepath.Join(fib.DefaultPinRoot, cfg.Node)
	}
	if *cleanup {
		if err := fib.Remove(cfg.PinDir); err != nil {
			log.Error("cleanup failed", "err", err)
			os.Exit(1)
		}
		log.Info("FIB removed", "pin_dir", cfg.PinDir)
		if err := removeProbes(); err != nil {
			log.Error("cleanup failed", "err", err)
			os.Exit(1)
		}
		log.Info("kubelet probe table removed", "table", "inet "+capture.ProbeTable)
		return
	}
	for _, f := range []struct{ name, val string }{{"--controller", cfg.Controller}, {"--controller-ca", cfg.ControllerCA}, {"--token-file", cfg.TokenFile}} {
		if f.val == "" {
			fmt.Fprintf(os.Stderr, "fibmesh-agent: %s is required (see --help)\n", f.name)
			os.Exit(2)
		}
	}
	var ip netip.Addr
	if *nodeIP != "" {
		if ip, err = netip.ParseAddr(*nodeIP); err != nil {
			fmt.Fprintf(os.Stderr, "fibmesh-agent: --node-ip %q: want an IP address like 10.0.0.5\n", *nodeIP)
			os.Exit(2)
		}
	}
	if cfg.NIC == auto {
		if cfg.NIC, err = autoNIC(ip); err != nil {
			fmt.Fprintf(os.Stderr, "fibmesh-agent: --nic=auto: %v\n", err)
			os.Exit(2)
		}
		log.Info("fabric interface found", "nic", cfg.NIC, "node_ip", *nodeIP)
	}
	if cfg.DNSUpstream == auto {
		if cfg.DNSUpstream, err = autoDNS("/etc/resolv.conf"); err != nil {
			fmt.Fprintf(os.Stderr, "fibmesh-agent: %v\n", err)
			os.Exit(2)
		}
		log.Info("DNS upstream found", "dns_upstream", cfg.DNSUpstream)
	}
	cfg.Punt, cfg.MaxFlows, cfg.Log = punts, uint32(*maxFlows), log
	if err := run(log, cfg); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, cfg agent.Config) error {
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	reopen := make(chan os.Signal, 1)
	signal.Notify(reopen, syscall.SIGUSR1)
	defer signal.Stop(reopen)
	go func() {
		for {
			select {
			case <-reopen:
				if err := a.ReopenAccessLog(); err != nil {
					log.Warn("access log not reopened; still writing to the old file", "err", err)
				} else {
					log.Info("access log reopened", "path", cfg.AccessLog)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	logKTLS(log, cfg.NoOffload)
	log.Info("started; ready once the first flow table is applied (GET /readyz)", "node", cfg.Node, "pin_dir", cfg.PinDir,
		"controller", cfg.Controller, "admin", cfg.AdminListen, "metrics", cfg.MetricsListen)
	err = a.Run(ctx)
	log.Info("stopping; the XDP FIB stays attached and keeps forwarding", "pin_dir", cfg.PinDir)
	return err
}

// logKTLS says once at start-up what the kernel offers for mTLS offload:
// without kTLS, mesh connections stay in userspace (correct, slower).
func logKTLS(log *slog.Logger, off bool) {
	caps, err := ktls.Probe()
	switch {
	case off:
		log.Info("offload off (--offload=off); mTLS stays in userspace")
	case err != nil:
		log.Warn("kTLS probe failed; mTLS stays in userspace", "err", err)
	case !caps.ULP:
		log.Warn("kernel has no kTLS; mTLS stays in userspace", "kernel", caps.Kernel, "reason", caps.ULPError)
	default:
		log.Info("kTLS available; established L4 mesh connections leave userspace", "ktls", caps.String())
	}
}
