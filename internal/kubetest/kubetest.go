// Package kubetest runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver as processes on loopback, with their own certificates,
// RBAC authorization and an admin kubeconfig, stopped and removed when the
// test ends (what controller-runtime's envtest does, without downloads).
// There is no kubelet, scheduler or controller-manager: objects are stored
// and validated, admission webhooks are called, RBAC is enforced, but no
// pod ever runs and no controller acts on anything (no ServiceAccount
// "default", no EndpointSlices derived from Pods).
//
// The binaries come from $FIBMESH_KUBE_APISERVER and $FIBMESH_ETCD (make
// test sets both: it builds kube-apiserver with hack/kube-apiserver and
// installs Debian's etcd-server), else bin/kube-apiserver in the checkout
// and etcd on PATH. Without them Start skips the test, saying how to get
// them; under CI ($CI set) it fails it instead.
package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Environment variables naming the binaries.
const (
	APIServerEnv = "FIBMESH_KUBE_APISERVER"
	EtcdEnv      = "FIBMESH_ETCD"
)

// ServiceCIDR is the cluster's --service-cluster-ip-range. The API
// server gives its own Service "kubernetes" (namespace default) the first
// address, 10.96.0.1; tests' Services may pick others in it.
const ServiceCIDR = "10.96.0.0/16"

// Issuer is the ServiceAccount token issuer (and default audience).
const Issuer = "https://kubernetes.default.svc.cluster.local"

// startTimeout bounds how long etcd and the API server may take to be
// ready: 4.4 to 7 s measured on a 2-core machine at load average 14
// (most of it the API server's own startup: its post-start hooks and
// bootstrap objects), more when go test runs packages in parallel.
const startTimeout = 90 * time.Second

// Cluster is a running etcd + kube-apiserver.
type Cluster struct {
	// Dir holds the certificates, the kubeconfig and the processes' logs.
	Dir string
	// Kubeconfig is an admin kubeconfig (group system:masters).
	Kubeconfig string
	// Config is the admin's client config.
	Config *rest.Config
	// Clientset is a client with Config.
	Clientset *kubernetes.Clientset
	// Took is how long Start took, from nothing to /readyz.
	Took time.Duration

	pki       *pki
	apiserver *proc
	etcd      *proc
}

// Binaries returns the paths of kube-apiserver and etcd, or an error
// saying how to get the one that is missing.
func Binaries() (apiserver, etcd string, err error) {
	apiserver = os.Getenv(APIServerEnv)
	if apiserver == "" {
		if root, ok := moduleRoot(); ok {
			apiserver = filepath.Join(root, "bin", "kube-apiserver")
		}
	}
	if st, serr := os.Stat(apiserver); apiserver == "" || serr != nil || st.Mode().Perm()&0o111 == 0 {
		return "", "", fmt.Errorf("no kube-apiserver at %q (%s): run `make kube-apiserver` (builds it from k8s.io/kubernetes into bin/, cached per version) or set %s", apiserver, APIServerEnv, APIServerEnv)
	}
	etcd = os.Getenv(EtcdEnv)
	if etcd == "" {
		if etcd, err = exec.LookPath("etcd"); err != nil {
			etcd = "/usr/bin/etcd"
		}
	}
	if st, serr := os.Stat(etcd); serr != nil || st.Mode().Perm()&0o111 == 0 {
		return "", "", fmt.Errorf("no etcd at %q (%s): install Debian's etcd-server (`hack/deps.sh kube`, as root) or set %s", etcd, EtcdEnv, EtcdEnv)
	}
	return apiserver, etcd, nil
}

// moduleRoot finds the checkout's root from the working directory (a
// package's directory under go test).
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/fibmesh/fibmesh\n")) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// Start starts etcd and kube-apiserver, waits until the API server's
// /readyz answers ok, and returns the cluster; both processes are stopped
// and their files removed when the test ends. It skips the test when the
// binaries are missing (fails it under CI).
func Start(t testing.TB) *Cluster {
	t.Helper()
	apiserverBin, etcdBin, err := Binaries()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kubetest: %v (CI is set: make test builds and installs both)", err)
		}
		t.Skipf("kubetest: needs a real API server: %v", err)
	}
	start := time.Now()
	c := &Cluster{Dir: t.TempDir()}
	if c.pki, err = newPKI(c.Dir); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	// etcd fsyncs each write (etcd 3.4 has no --unsafe-no-fsync); on
	// tmpfs that costs nothing, and the API server writes its bootstrap
	// objects (RBAC roles, priority classes, namespaces) one by one.
	dataParent := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dataParent = "/dev/shm"
	}
	data, err := os.MkdirTemp(dataParent, "kubetest-etcd-")
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	etcdURL, err := c.startEtcd(ctx, etcdBin, data)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(func() { c.etcd.stop() })
	if err := c.startAPIServer(ctx, apiserverBin, etcdURL); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(func() {
		c.apiserver.stop()
		if t.Failed() {
			t.Logf("kube-apiserver's log (last lines):\n%s", tail(c.apiserver.logPath, 40))
		}
	})
	c.Took = time.Since(start)
	return c
}

// proc is a running process whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // Wait's, once exited is closed
}

func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	p := &proc{name: name, cmd: exec.Command(bin, args...), logPath: logPath, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = sysProcAttr()
	// Pdeathsig (sysProcAttr) fires when the OS thread that started the
	// process exits, not the process: Go ends a thread when a goroutine
	// locked to it returns (as tests that enter network namespaces do).
	// So the process is started from a goroutine locked to its thread,
	// which stays until the process has exited.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// stop ends the process: SIGTERM, then SIGKILL if it is still there
// after 10 s. Its state is thrown away, so a clean shutdown buys nothing
// but the wait; the grace period is for its own files' sake.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(terminate)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// exitedErr reports an exit before readiness, with the log's end.
func (p *proc) exitedErr() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v) before it was ready; its log ends:\n%s", p.name, p.err, tail(p.logPath, 30))
	default:
		return nil
	}
}

// addrInUse reports whether p exited because its port was taken between
// freePort and its bind: the caller retries with new ports.
func (p *proc) addrInUse() bool {
	b, _ := os.ReadFile(p.logPath)
	return bytes.Contains(b, []byte("address already in use"))
}

// freePort returns a loopback port that was free a moment ago. etcd and
// kube-apiserver cannot report a port they chose themselves, so another
// process may take it in between: the starts retry on "address already
// in use".
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

const attempts = 3

func (c *Cluster) startEtcd(ctx context.Context, bin, data string) (string, error) {
	for i := 1; ; i++ {
		client, err1 := freePort()
		peer, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return "", err
		}
		clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
		os.RemoveAll(data)
		p, err := startProc("etcd", filepath.Join(c.Dir, "etcd.log"), bin,
			"--name", "kubetest",
			"--data-dir", data,
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "kubetest="+peerURL,
			"--logger", "zap", "--log-level", "warn",
		)
		if err != nil {
			return "", err
		}
		c.etcd = p
		err = waitReady(ctx, p, func(ctx context.Context) error {
			return httpOK(ctx, http.DefaultClient, clientURL+"/health", `"health":"true"`)
		})
		if err == nil {
			return clientURL, nil
		}
		p.stop()
		if i == attempts || !p.addrInUse() {
			return "", err
		}
	}
}

func (c *Cluster) startAPIServer(ctx context.Context, bin, etcdURL string) error {
	for i := 1; ; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		host := "https://127.0.0.1:" + strconv.Itoa(port)
		k := c.pki
		p, err := startProc("kube-apiserver", filepath.Join(c.Dir, "kube-apiserver.log"), bin,
			"--etcd-servers", etcdURL,
			"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
			"--secure-port", strconv.Itoa(port),
			"--tls-cert-file", k.servingCert, "--tls-private-key-file", k.servingKey,
			"--client-ca-file", k.caCert,
			"--authorization-mode", "RBAC",
			"--service-account-issuer", Issuer,
			"--service-account-key-file", k.saPub,
			"--service-account-signing-key-file", k.saKey,
			"--service-cluster-ip-range", ServiceCIDR,
			// What a kubeadm cluster sets: the agent's DaemonSet
			// asks for capabilities and hostNetwork.
			"--allow-privileged",
			// No cloud, no kubelet to fetch logs from, no metrics
			// pipeline: nothing else to configure.
			"--profiling=false",
			"--v", "1",
		)
		if err != nil {
			return err
		}
		c.apiserver = p
		if err := c.writeKubeconfig(host); err != nil {
			p.stop()
			return err
		}
		err = waitReady(ctx, p, func(ctx context.Context) error {
			b, err := c.Clientset.RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			if err != nil {
				return fmt.Errorf("/readyz: %w: %s", err, b)
			}
			return nil
		})
		if err == nil {
			return nil
		}
		p.stop()
		if i == attempts || !p.addrInUse() {
			return err
		}
	}
}

// waitReady polls ready with a growing interval (10 ms up to 250 ms)
// until it returns nil, the process exits, or ctx ends. This is a
// readiness endpoint, as a kubelet probes it, not a sleep standing in for
// an event.
func waitReady(ctx context.Context, p *proc, ready func(context.Context) error) error {
	interval := 10 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := ready(rctx)
		cancel()
		if err == nil {
			return nil
		}
		if perr := p.exitedErr(); perr != nil {
			return perr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s: %w; its log ends:\n%s", p.name, startTimeout, err, tail(p.logPath, 30))
		case <-p.exited:
			return p.exitedErr()
		case <-time.After(interval):
		}
		interval = min(2*interval, 250*time.Millisecond)
	}
}

func httpOK(ctx context.Context, hc *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b.String())
	}
	return nil
}

// writeKubeconfig writes the admin kubeconfig (certificates inline, so
// that it works from any directory) and makes Config and Clientset.
func (c *Cluster) writeKubeconfig(host string) error {
	k := c.pki
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: k.PEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: k.adminCertPEM, ClientKeyData: k.adminKeyPEM}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "admin"}
	kc.CurrentContext = "kubetest"
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, c.Kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", c.Kubeconfig, err)
	}
	// Tests create objects in bursts (a manifest's documents); the
	// default 5 QPS would make them wait on the client, not the server.
	cfg.QPS, cfg.Burst = 500, 1000
	c.Config = cfg
	c.Clientset, err = kubernetes.NewForConfig(cfg)
	return err
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var kubectlPath = sync.OnceValues(func() (string, error) { return exec.LookPath("kubectl") })

// Kubectl returns the path of kubectl, or an error when it is not
// installed (callers fall back to client-go, see Apply).
func Kubectl() (string, error) { return kubectlPath() }

// Kubectl runs kubectl with the admin kubeconfig and returns its combined
// output; the error includes the output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := Kubectl()
	if err != nil {
		return nil, err
	}
	// Its discovery cache goes with the cluster, not to ~/.kube/cache
	// (one directory per host:port, a new port every test).
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", c.Kubeconfig, "--cache-dir", filepath.Join(c.Dir, "kubectl-cache")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w:\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}
