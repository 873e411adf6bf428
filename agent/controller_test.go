package agent_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/lab"
)

// controller is the real controller's xDS server and CA, served in the
// test process on the lab's fabric bridge (lab.FabricControllerIP:15012,
// TLS with a serving certificate from the mesh CA), fed models built from
// the lab. Tests may import the controller; the agent may not.
type controller struct {
	lab       *lab.Lab
	ca        *ca.CA
	auth      ca.Authenticator
	addr      string
	rootFile  string
	tokenFile map[string]string // node -> file holding its token
	// requireNode authenticates xDS streams as fibmesh-controller's TLS
	// listener does (xds.RequireNode), from the next start.
	requireNode bool

	mu      sync.Mutex
	model   atomic.Pointer[model.Model]
	version uint64
	srv     *xds.Server
	g       *grpc.Server
	cancel  context.CancelFunc
	done    chan struct{}
}

const trustDomain = "cluster.local"

// startController serves the controller for l until the test ends.
func startController(t *testing.T, l *lab.Lab) *controller {
	t.Helper()
	dir := t.TempDir()
	c := &controller{lab: l, addr: net.JoinHostPort(lab.FabricControllerIP, "15012"), tokenFile: map[string]string{}}
	var err error
	if c.ca, err = ca.New(trustDomain); err != nil {
		t.Fatal(err)
	}
	var tokens string
	for _, n := range l.Nodes {
		tok := "tok-" + n.Name
		tokens += n.Name + " " + tok + "\n"
		c.tokenFile[n.Name] = filepath.Join(dir, n.Name+".token")
		writeFile(t, c.tokenFile[n.Name], tok+"\n")
	}
	writeFile(t, filepath.Join(dir, "tokens"), tokens)
	if c.auth, err = ca.TokenFile(filepath.Join(dir, "tokens")); err != nil {
		t.Fatal(err)
	}
	c.rootFile = filepath.Join(dir, "root-cert.pem")
	writeFile(t, c.rootFile, string(ca.EncodeCerts(c.ca.Bundle())))
	// The numbered lab has no address on its bridge; a manifest lab has
	// this one.
	if out, err := l.Command(context.Background(), l.FabricNetns, "ip", "addr", "replace", lab.FabricControllerIP+"/24", "dev", lab.Bridge).CombinedOutput(); err != nil {
		t.Fatalf("fabric address: %v: %s", err, out)
	}
	c.setModel(c.labModel(nil))
	c.start(t)
	t.Cleanup(c.stop)
	return c
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// labModel is the model of the lab: its nodes, and each pod as a
// workload with its own service account; edit changes it.
func (c *controller) labModel(edit func(*model.Model)) *model.Model {
	m := &model.Model{TrustDomain: trustDomain, MeshMTLS: model.ModePermissive}
	for _, n := range c.lab.Nodes {
		m.Nodes = append(m.Nodes, &model.Node{Name: n.Name, InternalIP: n.IP.String(), PodCIDRs: []string{n.PodCIDR.String()}})
		for _, p := range n.Pods {
			m.Workloads = append(m.Workloads, &model.Workload{
				Namespace: p.Namespace, Name: p.Name, IP: p.IP.String(), Node: n.Name, ServiceAccount: p.Name,
				Identity: fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, p.Namespace, p.Name), DefaultMode: model.ModePermissive,
			})
		}
	}
	if edit != nil {
		edit(m)
	}
	return m
}

// workload returns the workload of pod name in m.
func workload(m *model.Model, name string) *model.Workload {
	for _, w := range m.Workloads {
		if w.Name == name {
			return w
		}
	}
	panic("no workload " + name)
}

// setModel makes m the current model (a new version) and pushes it if
// the server runs.
func (c *controller) setModel(m *model.Model) {
	c.mu.Lock()
	c.version++
	m.Version = c.version
	m.Change = model.Change{Full: true}
	c.model.Store(m)
	srv := c.srv
	c.mu.Unlock()
	if srv != nil {
		srv.Update(m)
	}
}

// update edits the lab's model, pushes it and waits for the push.
func (c *controller) update(t *testing.T, edit func(*model.Model)) {
	t.Helper()
	c.setModel(c.labModel(edit))
	c.waitPushed(t)
}

func (c *controller) waitPushed(t *testing.T) {
	t.Helper()
	want := c.model.Load().Version
	c.mu.Lock()
	srv := c.srv
	c.mu.Unlock()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case v := <-srv.Pushed():
			if v >= want {
				return
			}
		case <-deadline:
			t.Fatalf("model version %d not pushed within 10s", want)
		}
	}
}

// start serves a fresh xDS server (as a restarted controller would) with
// the current model, on the same address.
func (c *controller) start(t *testing.T) {
	t.Helper()
	srv := xds.New(xds.Options{})
	if err := srv.SetTrustBundle(ca.BundleSecret(xdsapi.RootCASecret, c.ca.Bundle())); err != nil {
		t.Fatal(err)
	}
	cert, err := ca.NewServingCert(c.ca, []string{lab.FabricControllerIP}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{GetCertificate: cert.GetCertificate, MinVersion: tls.VersionTLS13}
	opts := append(xds.GRPCServerOptions(), grpc.Creds(credentials.NewTLS(tc)))
	if c.requireNode {
		// As fibmesh-controller's TLS listener: every stream
		// authenticated with its node token, held to its node.
		opts = append(opts, grpc.ChainStreamInterceptor(xds.RequireNode(func(ctx context.Context) (string, error) { return ca.AuthenticateNode(ctx, c.auth) })))
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)
	ca.NewServer(c.ca, c.auth, ca.ModelLookup(c.model.Load)).Register(g)
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = lab.InNetns(c.lab.FabricNetns, func() (err error) {
			ln, err = net.Listen("tcp", c.addr)
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) { // the address is still held after a stop
			t.Fatalf("controller listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runCtx, stopRun := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); srv.Run(runCtx) }()
		go func() { defer wg.Done(); g.Serve(ln) }()
		<-ctx.Done()
		// The connections go first (a controller that is gone), then the
		// push loop: stopping the loop first would end the streams while
		// the listener still accepts the agents' reconnects.
		g.Stop()
		stopRun()
		wg.Wait()
	}()
	c.mu.Lock()
	c.srv, c.g, c.cancel, c.done = srv, g, cancel, done
	c.mu.Unlock()
	srv.Update(c.model.Load())
	c.waitPushed(t)
}

// stop stops serving: agents lose their streams.
func (c *controller) stop() {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.cancel = nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// status returns the server's view of node.
func (c *controller) status(node string) *xds.NodeStatus {
	c.mu.Lock()
	srv := c.srv
	c.mu.Unlock()
	for _, s := range srv.Status() {
		if s.Node == node {
			return &s
		}
	}
	return nil
}
