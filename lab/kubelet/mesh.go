package kubelet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/lab"
)

// Addresses of the mesh in a lab: the controller listens on the fabric
// bridge's address, each agent's admin API on the node's localhost.
const (
	ControllerXDS        = lab.FabricControllerIP + ":15012"
	ControllerMonitoring = lab.FabricControllerIP + ":15014"
	AgentAdmin           = "127.0.0.1:15000"
	// meshGrace is how long the controller and agents get between
	// SIGTERM and SIGKILL.
	meshGrace = 10 * time.Second
)

// mesh runs the controller and the agents.
type mesh struct {
	d          *daemon
	controller *proc
	wg         sync.WaitGroup

	mu     sync.Mutex
	agents map[string]*proc // by node name
	ready  map[*proc]bool
	// created is closed once the agents exist.
	created chan struct{}
}

func (d *daemon) newMesh() *mesh {
	return &mesh{d: d, agents: map[string]*proc{}, ready: map[*proc]bool{}, created: make(chan struct{})}
}

// RunDir returns the agents' --run-dir of a lab: the default
// (/run/fibmesh, enrol.DefaultRunDir) for the default prefix, else
// <stateDir>/run so that two labs' sockets do not collide.
func RunDir(stateDir, prefix string) string {
	if prefix == lab.DefaultPrefix {
		return ""
	}
	return filepath.Join(stateDir, RunSubdir)
}

// AgentPinDir returns where a lab's agent for node pins its FIB:
// /sys/fs/bpf/fibmesh/<prefix><node>, the node's netns name.
func AgentPinDir(prefix, node string) string { return filepath.Join(fib.DefaultPinRoot, prefix+node) }

func (d *daemon) enrolSocket(node string) string {
	return enrol.SocketPath(RunDir(d.o.StateDir, d.o.Prefix), node)
}

// agentStarted returns a channel closed when node's agent next starts
// (never, without a mesh).
func (d *daemon) agentStarted(node string) <-chan struct{} {
	d.mu.Lock()
	m := d.mesh
	d.mu.Unlock()
	if m == nil {
		return nil
	}
	m.mu.Lock()
	a := m.agents[node]
	m.mu.Unlock()
	if a == nil {
		return m.created // the agents do not exist yet
	}
	return a.started()
}

// writeTokens gives every node a random bootstrap token: <stateDir>/tokens
// for the controller ("<node> <token>" lines) and <stateDir>/token-<node>
// for its agent, all 0600. Existing tokens are kept.
func (d *daemon) writeTokens() error {
	var lines []string
	for _, n := range d.lab.Nodes {
		path := filepath.Join(d.o.StateDir, "token-"+n.Name)
		tok, err := os.ReadFile(path)
		if err != nil || len(strings.TrimSpace(string(tok))) == 0 {
			b := make([]byte, 24)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			tok = []byte(hex.EncodeToString(b))
			if err := os.WriteFile(path, append(tok, '\n'), 0o600); err != nil {
				return fmt.Errorf("token for %s: %w", n.Name, err)
			}
		}
		lines = append(lines, n.Name+" "+strings.TrimSpace(string(tok)))
	}
	return os.WriteFile(filepath.Join(d.o.StateDir, TokensFile), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func (m *mesh) bin(name string) string {
	if m.d.o.BinDir == "" {
		return name
	}
	return filepath.Join(m.d.o.BinDir, name)
}

// start runs the controller in the fabric namespace and, once it is
// ready (its root certificate is written then), one agent per node.
func (m *mesh) start(ctx context.Context) error {
	d := m.d
	if err := d.writeTokens(); err != nil {
		return err
	}
	sd := d.o.StateDir
	if err := os.MkdirAll(filepath.Join(sd, CADir), 0o700); err != nil {
		return err
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=/root"}
	m.controller = newProc(procSpec{
		name: "controller", netns: d.lab.FabricNetns,
		argv: []string{m.bin("fibmesh-controller"),
			"--config-dir", filepath.Join(sd, ClusterDir), "--config-debounce", "10ms",
			"--ca-dir", filepath.Join(sd, CADir), "--bootstrap-tokens", filepath.Join(sd, TokensFile),
			"--xds-tls-listen", ControllerXDS, "--xds-tls-san", lab.FabricControllerIP,
			"--monitoring-listen", ControllerMonitoring},
		env: env, log: filepath.Join(sd, "controller.log"), policy: corev1.RestartPolicyAlways, grace: meshGrace,
	}, d.backoff(), d.statusChanged)
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.controller.run(ctx) }()
	go func() {
		defer m.wg.Done()
		m.probe(ctx, m.controller, d.lab.FabricNetns, "http://"+ControllerMonitoring+"/readyz")
	}()

	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		// Agents need the controller's root certificate, written once
		// it is ready.
		for !m.isReady(m.controller) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		for _, n := range d.lab.Nodes {
			if ctx.Err() != nil {
				return // stopping: start no agent after m.wait
			}
			args := []string{m.bin("fibmesh-agent"), "--node", n.Name, "--nic", n.NIC,
				"--controller", ControllerXDS, "--controller-ca", filepath.Join(sd, CADir, "root-cert.pem"),
				"--token-file", filepath.Join(sd, "token-"+n.Name), "--pin-dir", AgentPinDir(d.o.Prefix, n.Name)}
			if rd := RunDir(sd, d.o.Prefix); rd != "" {
				args = append(args, "--run-dir", rd)
			}
			args = append(append(args, d.o.AgentArgs["*"]...), d.o.AgentArgs[n.Name]...)
			a := newProc(procSpec{name: "agent-" + n.Name, netns: n.Netns, argv: args, env: env,
				log: filepath.Join(sd, "agent-"+n.Name+".log"), policy: corev1.RestartPolicyAlways, grace: meshGrace},
				d.backoff(), d.statusChanged)
			m.mu.Lock()
			m.agents[n.Name] = a
			m.mu.Unlock()
			m.wg.Add(2)
			go func() { defer m.wg.Done(); a.run(ctx) }()
			go func() { defer m.wg.Done(); m.probe(ctx, a, n.Netns, "http://"+AgentAdmin+"/readyz") }()
		}
		close(m.created)
		d.statusChanged()
	}()
	return nil
}

func (m *mesh) isReady(p *proc) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready[p]
}

// probe asks url (in netns) for readiness until ctx is done and records
// the answer: every 100 ms while not ready, every second once ready.
func (m *mesh) probe(ctx context.Context, p *proc, netns, url string) {
	c := NetnsHTTPClient(netns, time.Second)
	defer c.CloseIdleConnections()
	for {
		ok := false
		if p.status().State == StateRunning {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if resp, err := c.Do(req); err == nil {
				ok = resp.StatusCode == http.StatusOK
				resp.Body.Close()
			}
		}
		m.mu.Lock()
		changed := m.ready[p] != ok
		m.ready[p] = ok
		m.mu.Unlock()
		if changed {
			m.d.statusChanged()
		}
		wait := 100 * time.Millisecond
		if ok {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// NetnsHTTPClient returns an HTTP client whose connections are made
// inside the network namespace netns (the sockets are created there, with
// lab.InNetns), without keep-alives.
func NetnsHTTPClient(netns string, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := lab.InNetns(netns, func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

func (m *mesh) status() []ProcStatus {
	var out []ProcStatus
	if m.controller != nil {
		s := m.controller.status()
		s.Ready = m.isReady(m.controller)
		out = append(out, s)
	}
	for _, n := range m.d.lab.Nodes {
		m.mu.Lock()
		a := m.agents[n.Name]
		m.mu.Unlock()
		if a == nil {
			out = append(out, ProcStatus{Name: "agent-" + n.Name, State: StateWaiting, Reason: "WaitingForController"})
			continue
		}
		s := a.status()
		s.Ready = m.isReady(a)
		out = append(out, s)
	}
	return out
}

func (m *mesh) wait() { m.wg.Wait() }
