// Command fibmesh-controller is the fibmesh control plane. It reads the
// mesh's configuration (Istio and Kubernetes resources) from a directory
// of YAML or from the Kubernetes API, builds the model of the mesh, keeps
// the last good one in force, and serves it and its analysis on the
// monitoring endpoint.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	istio "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fibmesh/fibmesh/controller"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/store"
	"github.com/fibmesh/fibmesh/controller/store/file"
	"github.com/fibmesh/fibmesh/controller/store/kube"
)

const usage = `fibmesh-controller: the fibmesh control plane.

It reads Istio resources (VirtualService, DestinationRule, ServiceEntry,
PeerAuthentication, AuthorizationPolicy) and the Kubernetes objects they
apply to (Service, EndpointSlice, Pod, Namespace, Node, ServiceAccount),
builds the mesh's model, and keeps it current (xDS comes next):

  --config-dir DIR    a directory of multi-document YAML, watched for
                      changes (the embedded default; no cluster needed)
  --kubeconfig PATH   a Kubernetes cluster (in-cluster config when neither
                      flag is given and the controller runs in a pod)

A change that does not decode is rejected with its file, document, kind,
name and field, and the last good input stays in force.

Endpoints on --monitoring-listen:
  /debug/analyze   findings on the current input (?o=table|json|yaml)
  /debug/resources the resources in force (JSON)
  /debug/model     the model in force (JSON)
  /debug/status    model version, last update, last rejection
  /healthz, /readyz

Example:
  fibmesh-controller --config-dir examples/
  curl -s localhost:15014/debug/analyze?o=table

Flags:
`

func main() {
	fs := flag.NewFlagSet("fibmesh-controller", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	dir := fs.String("config-dir", "", "directory of YAML to read and watch")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the cluster to read")
	listen := fs.String("monitoring-listen", ":15014", "address of the debug and health endpoints")
	trustDomain := fs.String("trust-domain", "cluster.local", "SPIFFE trust domain of workload identities")
	logFormat := fs.String("log-format", "text", "log format: text or json")
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
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, nil)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, nil)
	default:
		fmt.Fprintf(os.Stderr, "fibmesh-controller: --log-format %q: want text or json\n", *logFormat)
		os.Exit(2)
	}
	log := slog.New(h)
	st, err := openStore(*dir, *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fibmesh-controller:", err)
		os.Exit(2)
	}
	if err := run(log, st, *listen, model.Options{TrustDomain: *trustDomain}); err != nil {
		log.Error("controller failed", "err", err)
		os.Exit(1)
	}
}

func openStore(dir, kubeconfig string) (store.Store, error) {
	switch {
	case dir != "" && kubeconfig != "":
		return nil, errors.New("--config-dir and --kubeconfig are exclusive: pick one source")
	case dir != "":
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--config-dir %s: not a readable directory", dir)
		}
		return file.New(dir, file.Options{}), nil
	}
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		cfg, err = rest.InClusterConfig()
	} else {
		return nil, errors.New("no config source: give --config-dir DIR (a directory of YAML) or --kubeconfig PATH")
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ic, err := istio.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("istio client: %w", err)
	}
	return kube.New(kc, ic, kube.Options{}), nil
}

func run(log *slog.Logger, st store.Store, listen string, opts model.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := controller.New(opts, func(ev controller.Event) {
		if ev.Rejected != nil {
			log.Warn("config rejected; the last good input stays in force", "version", ev.Version, "err", ev.Rejected)
			return
		}
		args := []any{"version", ev.Version, "resources", ev.Resources, "findings", ev.Findings, "errors", ev.Errors}
		if ev.Change != nil {
			args = append(args, "services_changed", len(ev.Change.Services), "nodes_affected", len(ev.Change.Nodes))
		}
		log.Info("model updated", args...)
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("monitoring listener: %w", err)
	}
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	log.Info("serving", "monitoring", ln.Addr().String())
	err = c.Run(ctx, st)
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	return err
}
