package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/internal/cniconf"
)

// KubeconfigName is the kubeconfig the installer writes into the conf dir
// for the plugin (no configuration extension: runtimes do not read it).
const KubeconfigName = "fibmesh-cni-kubeconfig"

// installer holds install's and uninstall's flags.
type installer struct {
	binDir, confDir, hostConfDir string
	self                         string
	settings                     cniconf.Settings
	excluded                     string
	saDir                        string
	kubeconfig                   string
	apiKubeconfig                string
	daemonSet, namespace         string
	uninstallOnExit              bool
	once                         bool
	log                          *slog.Logger
	// token is the ServiceAccount token last written into the kubeconfig.
	token []byte
}

func (in *installer) commonFlags(fs *flag.FlagSet) {
	fs.StringVar(&in.binDir, "bin-dir", "/host/opt/cni/bin", "`DIR`: the host's CNI bin directory (/opt/cni/bin) as mounted in this container")
	fs.StringVar(&in.confDir, "conf-dir", "/host/etc/cni/net.d", "`DIR`: the host's CNI configuration directory (/etc/cni/net.d) as mounted in this container")
}

func (in *installer) installFlags(fs *flag.FlagSet) {
	in.commonFlags(fs)
	fs.StringVar(&in.hostConfDir, "host-conf-dir", "/etc/cni/net.d", "`DIR`: the configuration directory's path on the host, where the plugin (run by the container runtime) finds the kubeconfig")
	fs.StringVar(&in.settings.Node, "node", os.Getenv("NODE_NAME"), "`NAME` of this node, as the agent's --node (default $NODE_NAME, from the downward API spec.nodeName)")
	fs.StringVar(&in.settings.RunDir, "run-dir", enrol.DefaultRunDir, "`DIR`: the agent's --run-dir on the host (the socket is DIR/NODE/enrol.sock)")
	fs.StringVar(&in.excluded, "exclude-namespaces", strings.Join(cniconf.DefaultExcludeNamespaces, ","), "comma-separated `NAMESPACES` whose pods are never captured")
	fs.StringVar(&in.settings.Timeout, "timeout", cniconf.DefaultTimeout.String(), "`DURATION` the plugin's ADD waits for the agent to enrol a pod before failing it")
	fs.StringVar(&in.settings.LogLevel, "log-level", "info", "`LEVEL` of the plugin's log (stderr, in the runtime's log) and the installer's: debug, info, warn, error")
	fs.StringVar(&in.saDir, "service-account-dir", "/var/run/secrets/kubernetes.io/serviceaccount", "`DIR` of this pod's ServiceAccount token and ca.crt: the plugin's kubeconfig is written from them (with $KUBERNETES_SERVICE_HOST/PORT) and kept fresh as the token rotates")
	fs.StringVar(&in.kubeconfig, "kubeconfig", "", "`PATH` on the host of a kubeconfig the plugin reads pod labels with, instead of writing one from the ServiceAccount; \"none\": no label lookup (only --exclude-namespaces exclude)")
	fs.StringVar(&in.apiKubeconfig, "api-kubeconfig", "", "`PATH` of the kubeconfig the installer checks the DaemonSet with at exit (default: the in-cluster ServiceAccount)")
	fs.StringVar(&in.daemonSet, "daemonset", "fibmesh-agent", "`NAME` of the DaemonSet running this installer: at SIGTERM the entry is removed only if it is gone or being deleted")
	fs.StringVar(&in.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "`NAMESPACE` of that DaemonSet (default $POD_NAMESPACE, from the downward API metadata.namespace)")
	fs.BoolVar(&in.uninstallOnExit, "uninstall-on-exit", false, "at SIGTERM, remove the entry, kubeconfig and binary whatever the DaemonSet's state")
	fs.BoolVar(&in.once, "once", false, "install and exit, without watching the configuration directory")
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// runInstall is `fibmesh-cni install`.
func runInstall(args []string, stderr io.Writer) error {
	in := &installer{}
	fs := flag.NewFlagSet("fibmesh-cni install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in.installFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, installUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("install: unexpected argument %q", fs.Arg(0))
	}
	in.log = newLogger(in.settings.LogLevel, stderr)
	in.settings.ExcludeNamespaces = []string{} // written as [] when empty: none excluded
	for ns := range strings.SplitSeq(in.excluded, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			in.settings.ExcludeNamespaces = append(in.settings.ExcludeNamespaces, ns)
		}
	}
	in.settings.Type = cniconf.PluginType
	if in.settings.Node == "" {
		return errors.New("install: --node (or $NODE_NAME) is required: the node's name, as the agent's --node (in the DaemonSet: env NODE_NAME from fieldRef spec.nodeName)")
	}
	self := in.self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("install: own binary: %w", err)
		}
	}
	if err := copyBinary(self, filepath.Join(in.binDir, cniconf.PluginType)); err != nil {
		return err
	}
	in.log.Info("binary installed", "path", filepath.Join(in.binDir, cniconf.PluginType))
	switch in.kubeconfig {
	case "none":
		in.log.Warn("no kubeconfig: the plugin captures every pod outside --exclude-namespaces, whatever its labels")
	case "":
		written, err := in.writeKubeconfig()
		if err != nil {
			return err
		}
		if written {
			in.settings.Kubeconfig = filepath.Join(in.hostConfDir, KubeconfigName)
		}
	default:
		in.settings.Kubeconfig = in.kubeconfig
	}
	if err := in.settings.Validate(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	ensureErr := in.ensure()
	if in.once {
		return ensureErr
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := in.watch(ctx); err != nil {
		return err
	}
	return in.exit()
}

// ensure puts the entry into the primary conflist (a no-op when it is
// there as it should be).
func (in *installer) ensure() error {
	res, err := cniconf.Insert(in.confDir, in.settings)
	if err != nil {
		in.log.Error("entry not inserted: pods on this node start uncaptured until it is", "conf_dir", in.confDir, "err", err)
		return fmt.Errorf("install: %w", err)
	}
	if res.Converted != "" {
		in.log.Info("single-plugin configuration made a conflist", "from", res.Converted, "to", res.Path)
	}
	for _, f := range res.RemovedFrom {
		in.log.Info("entry removed from a former primary configuration", "path", f)
	}
	if res.Changed {
		in.log.Info("entry inserted last", "conflist", res.Path, "node", in.settings.Node, "kubeconfig", in.settings.Kubeconfig)
	} else {
		in.log.Debug("entry in place", "conflist", res.Path)
	}
	return nil
}

// watch re-inserts the entry whenever the configuration directory changes
// (the primary plugin rewriting its file, a new primary) and rewrites the
// kubeconfig when the ServiceAccount token rotates, until ctx is done.
func (in *installer) watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("install: watch: %w", err)
	}
	defer w.Close()
	if err := w.Add(in.confDir); err != nil {
		return fmt.Errorf("install: watch %s: %w", in.confDir, err)
	}
	if in.token != nil {
		if err := w.Add(in.saDir); err != nil {
			return fmt.Errorf("install: watch %s: %w", in.saDir, err)
		}
	}
	in.log.Info("watching the CNI configuration directory", "dir", in.confDir)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			in.log.Warn("watch", "err", err)
		case ev := <-w.Events:
			dir, name := filepath.Dir(ev.Name), filepath.Base(ev.Name)
			if dir == filepath.Clean(in.saDir) {
				if _, err := in.writeKubeconfig(); err != nil {
					in.log.Error("kubeconfig not refreshed", "err", err)
				}
				continue
			}
			if strings.HasPrefix(name, ".") || !slices.Contains(cniconf.Extensions, filepath.Ext(name)) {
				continue // our temporary files, the kubeconfig
			}
			in.log.Debug("configuration directory changed", "event", ev.String())
			_ = in.ensure() // logged; the next change retries
		}
	}
}

// exit decides, at SIGTERM, whether the entry goes: only when the
// DaemonSet is being deleted (or --uninstall-on-exit). An upgrade or a
// drain keeps it, so that pods started meanwhile wait for the next agent
// instead of starting uncaptured.
func (in *installer) exit() error {
	why := ""
	if in.uninstallOnExit {
		why = "--uninstall-on-exit"
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		deleted, err := in.daemonSetDeleted(ctx)
		cancel()
		switch {
		case err != nil:
			in.log.Warn("cannot tell whether the DaemonSet is being deleted: entry kept (fail closed; `fibmesh-cni uninstall` on the node removes it)", "err", err)
		case deleted != "":
			why = deleted
		}
	}
	if why == "" {
		in.log.Info("exiting; entry kept: pods wait for the next agent", "daemonset", in.namespace+"/"+in.daemonSet)
		return nil
	}
	in.log.Info("uninstalling", "why", why)
	return in.uninstall()
}

// daemonSetDeleted says why the DaemonSet counts as deleted ("" when it
// does not).
func (in *installer) daemonSetDeleted(ctx context.Context) (string, error) {
	if in.namespace == "" {
		return "", errors.New("no --namespace (or $POD_NAMESPACE): the DaemonSet cannot be looked up")
	}
	cfg, err := in.apiConfig()
	if err != nil {
		return "", err
	}
	m, err := getMeta(ctx, cfg, "/apis/apps/v1/namespaces/"+url.PathEscape(in.namespace)+"/daemonsets/"+url.PathEscape(in.daemonSet))
	if errors.Is(err, errNotFound) {
		return "DaemonSet " + in.namespace + "/" + in.daemonSet + " is gone", nil
	}
	if err != nil {
		return "", err
	}
	if m.DeletionTimestamp != nil {
		return "DaemonSet " + in.namespace + "/" + in.daemonSet + " is being deleted", nil
	}
	return "", nil
}

// apiConfig is the installer's own API server access.
func (in *installer) apiConfig() (*rest.Config, error) {
	if in.apiKubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", in.apiKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--api-kubeconfig %s: %w", in.apiKubeconfig, err)
		}
		return cfg, nil
	}
	server, ca, token, err := in.inCluster()
	if err != nil {
		return nil, err
	}
	return &rest.Config{Host: server, BearerToken: string(token), TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, nil
}

// inCluster reads the API server's address and this pod's ServiceAccount.
func (in *installer) inCluster() (server string, ca, token []byte, err error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", nil, nil, errors.New("not in a cluster: $KUBERNETES_SERVICE_HOST/PORT unset")
	}
	token, err = os.ReadFile(filepath.Join(in.saDir, "token"))
	if err != nil {
		return "", nil, nil, fmt.Errorf("ServiceAccount token: %w (mount the pod's ServiceAccount token: automountServiceAccountToken)", err)
	}
	ca, err = os.ReadFile(filepath.Join(in.saDir, "ca.crt"))
	if err != nil {
		return "", nil, nil, fmt.Errorf("ServiceAccount CA: %w", err)
	}
	return "https://" + net.JoinHostPort(host, port), ca, bytes.TrimSpace(token), nil
}

// writeKubeconfig writes the plugin's kubeconfig from the ServiceAccount
// when the token changed; it reports false (and logs why) outside a
// cluster.
func (in *installer) writeKubeconfig() (bool, error) {
	server, ca, token, err := in.inCluster()
	if err != nil {
		if in.token == nil {
			in.log.Warn("no kubeconfig for the plugin: it captures every pod outside --exclude-namespaces, whatever its labels", "why", err)
			return false, nil
		}
		return false, err
	}
	if bytes.Equal(token, in.token) {
		return true, nil
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["fibmesh-cni"] = &clientcmdapi.AuthInfo{Token: string(token)}
	cfg.Contexts["fibmesh-cni"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "fibmesh-cni"}
	cfg.CurrentContext = "fibmesh-cni"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return false, fmt.Errorf("kubeconfig: %w", err)
	}
	if err := cniconf.WriteFile(filepath.Join(in.confDir, KubeconfigName), b, 0o600); err != nil {
		return false, fmt.Errorf("kubeconfig: %w", err)
	}
	in.token = token
	in.log.Info("kubeconfig written for the plugin", "path", filepath.Join(in.confDir, KubeconfigName), "server", server)
	return true, nil
}

// uninstall removes the entry from every configuration, the kubeconfig
// and the binary.
func (in *installer) uninstall() error {
	changed, err := cniconf.Remove(in.confDir)
	for _, f := range changed {
		in.log.Info("entry removed", "conflist", f)
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range []string{filepath.Join(in.confDir, KubeconfigName), filepath.Join(in.binDir, cniconf.PluginType)} {
		if err := os.Remove(p); err == nil {
			in.log.Info("removed", "path", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	return nil
}

// runUninstall is `fibmesh-cni uninstall`.
func runUninstall(args []string, stderr io.Writer) error {
	in := &installer{}
	fs := flag.NewFlagSet("fibmesh-cni uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in.commonFlags(fs)
	level := fs.String("log-level", "info", "`LEVEL`: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: fibmesh-cni uninstall [flags]\n\nRemoves fibmesh-cni's entry from every CNI configuration in --conf-dir, its\nkubeconfig there, and its binary from --bin-dir. Pods started afterwards are\nnot captured.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	in.log = newLogger(*level, stderr)
	return in.uninstall()
}

// copyBinary copies src to dst atomically (a temporary file in dst's
// directory renamed in place): a runtime running the old binary keeps it,
// the next call runs the new one.
func copyBinary(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("install binary: %w", err)
	}
	if err := cniconf.WriteFile(dst, b, 0o755); err != nil {
		return fmt.Errorf("install binary: %w (is the host's CNI bin directory mounted at %s?)", err, filepath.Dir(dst))
	}
	return nil
}
