package l4bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/lab/cluster"
)

func testFiles(t *testing.T) (Topology, Files) {
	t.Helper()
	top := DefaultTopology()
	dir := t.TempDir()
	f, err := WritePKI(dir, top)
	if err != nil {
		t.Fatal(err)
	}
	f.HAProxyClient, f.HAProxyServer = filepath.Join(dir, "haproxy-client.cfg"), filepath.Join(dir, "haproxy-server.cfg")
	return top, f
}

// The manifests go through the lab's own strict decoder: every pod
// where the bench expects it, with the labels that keep the plain pair
// out of the mesh.
func TestManifests(t *testing.T) {
	top, f := testFiles(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "l4.yaml"), []byte(Manifests(top, "/usr/sbin/haproxy", f)), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := cluster.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Errors) > 0 {
		t.Fatalf("the lab refuses parts of the manifests: %v", m.Errors)
	}
	type pod struct {
		Node, IP, SA, Capture string
		Containers            []string
	}
	got := map[string]pod{}
	for _, p := range m.Pods {
		var cs []string
		for _, c := range p.Spec.Containers {
			cs = append(cs, c.Name+": "+strings.Join(c.Command, " "))
		}
		got[cluster.PodKey(p)] = pod{p.Spec.NodeName, p.Status.PodIP, p.Spec.ServiceAccountName, p.Labels[model.LabelCapture], cs}
	}
	want := map[string]pod{
		"bench/client": {"node1", "10.200.1.11", "client", "", []string{"idle: sleep infinity"}},
		"bench/server": {"node2", "10.200.2.11", "server", "", []string{"iperf3: iperf3 --server --port 5201", "echo: fibmesh-lab app echo --port 8080"}},
		"bench-plain/client-plain": {"node1", "10.200.1.12", "", "disabled", []string{"idle: sleep infinity",
			"haproxy: /usr/sbin/haproxy -db -f " + f.HAProxyClient}},
		"bench-plain/server-plain": {"node2", "10.200.2.12", "", "disabled", []string{"iperf3: iperf3 --server --port 5201",
			"echo: fibmesh-lab app echo --port 8080", "haproxy: /usr/sbin/haproxy -db -f " + f.HAProxyServer}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("pods (-want +got):\n%s", d)
	}
	if len(m.Services) != 1 {
		t.Fatalf("%d services, want 1", len(m.Services))
	}
	s := m.Services[0]
	if s.Namespace != "bench" || s.Spec.ClusterIP != "10.96.0.200" || s.Spec.Selector["app"] != "server" || len(s.Spec.Ports) != 2 ||
		s.Spec.Ports[0].Port != 5201 || s.Spec.Ports[1].Port != 8080 {
		t.Errorf("service: %+v", s)
	}
	var kinds []string
	for _, o := range m.Others {
		kinds = append(kinds, o.Kind+" "+o.Namespace+"/"+o.Name)
	}
	for _, want := range []string{"PeerAuthentication bench/default", "Namespace /bench-plain", "ServiceAccount bench/server"} {
		if !strings.Contains(strings.Join(kinds, "\n"), want) {
			t.Errorf("objects %v lack %s", kinds, want)
		}
	}
}

func TestHAProxyConfigs(t *testing.T) {
	top, f := testFiles(t)
	client, server := HAProxyClientConfig(top, f, false), HAProxyServerConfig(top, f)
	noReuse := HAProxyClientConfig(top, f, true)
	if strings.Contains(client, "no-ssl-reuse") || strings.Count(noReuse, "verifyhost server-plain.bench-plain.svc no-ssl-reuse\n") != 2 {
		t.Errorf("no-ssl-reuse: default config:\n%s\nnoReuse config:\n%s", client, noReuse)
	}
	for _, tc := range []struct {
		name, cfg string
		want      []string
	}{
		{"client", client, []string{
			"bind 127.0.0.1:15201",
			"server server_plain 10.200.2.12:25201 ssl verify required ca-file " + f.CA + " crt " + f.ClientPEM +
				" sni str(server-plain.bench-plain.svc) verifyhost server-plain.bench-plain.svc",
			"bind 127.0.0.1:18080", "10.200.2.12:28080 ssl verify required",
			"ssl-default-server-options ssl-min-ver TLSv1.3", "mode tcp",
		}},
		{"client, no session reuse", noReuse, []string{"bind 127.0.0.1:15201"}},
		{"server", server, []string{
			"bind 10.200.2.12:25201 ssl crt " + f.ServerPEM + " ca-file " + f.CA + " verify required",
			"server app 127.0.0.1:5201", "bind 10.200.2.12:28080 ssl", "server app 127.0.0.1:8080",
			"ssl-default-bind-options ssl-min-ver TLSv1.3",
		}},
	} {
		for _, w := range tc.want {
			if !strings.Contains(tc.cfg, w) {
				t.Errorf("%s config lacks %q:\n%s", tc.name, w, tc.cfg)
			}
		}
		if strings.Contains(tc.cfg, "maxconn") {
			t.Errorf("%s config sets maxconn (haproxy refuses to start when it needs more descriptors than the limit)", tc.name)
		}
		// haproxy itself checks the files (the certificates included).
		hp, err := exec.LookPath("haproxy")
		if err != nil {
			t.Logf("haproxy not installed (hack/deps.sh bench-l4): configuration not checked by haproxy -c")
			continue
		}
		path := filepath.Join(t.TempDir(), tc.name+".cfg")
		if err := os.WriteFile(path, []byte(tc.cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(hp, "-c", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c %s: %v\n%s", tc.name, err, out)
		}
	}
}

// The throwaway PKI makes a TLS 1.3 handshake with client certificates
// work, names the SPIFFE IDs, and is refused by a peer that trusts
// another CA.
func TestWritePKI(t *testing.T) {
	top, f := testFiles(t)
	load := func(path string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(path, path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	clientCert, serverCert := load(f.ClientPEM), load(f.ServerPEM)
	for path, wantID := range map[string]string{f.ClientPEM: top.SpiffeID("bench-plain", "client-plain"), f.ServerPEM: top.SpiffeID("bench-plain", "server-plain")} {
		leaf := load(path).Leaf
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
			t.Errorf("%s: URI SANs %v, want %s", path, leaf.URIs, wantID)
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 (it holds the key)", path, st.Mode().Perm())
		}
	}
	handshake := func(roots *x509.CertPool) error {
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		srv := tls.Server(c2, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
		done := make(chan error, 1)
		go func() { done <- srv.Handshake() }()
		cl := tls.Client(c1, &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: roots, ServerName: top.ServerName(), MinVersion: tls.VersionTLS13})
		err := cl.Handshake()
		if err != nil {
			c1.Close()
			<-done
			return err
		}
		if err := <-done; err != nil {
			return err
		}
		if got := srv.ConnectionState().PeerCertificates[0].URIs[0].String(); got != top.SpiffeID("bench-plain", "client-plain") {
			t.Errorf("server saw client %s", got)
		}
		return nil
	}
	if err := handshake(pool); err != nil {
		t.Fatalf("mTLS handshake: %v", err)
	}
	// A second PKI is another CA: its root does not verify this server.
	other, err := WritePKI(t.TempDir(), top)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := os.ReadFile(other.CA)
	otherPool := x509.NewCertPool()
	otherPool.AppendCertsFromPEM(otherPEM)
	if err := handshake(otherPool); err == nil {
		t.Error("a client trusting another CA completed the handshake")
	}
}

func TestRunCPS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	ctx := context.Background()
	res := RunCPS(ctx, CPSOptions{Addr: ln.Addr().String(), Workers: 3, Count: 5})
	if res.Conns != 15 || res.Errors != 0 {
		t.Errorf("count run: %+v, want 15 connections, no errors", res)
	}
	res = RunCPS(ctx, CPSOptions{Addr: ln.Addr().String(), Workers: 2, Duration: 100 * time.Millisecond})
	if res.Conns == 0 || res.Errors != 0 || res.Seconds < 0.1 {
		t.Errorf("timed run: %+v", res)
	}

	// A server that answers with other bytes, and a closed port.
	bad, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	go func() {
		for {
			c, err := bad.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(strings.Repeat("?", len(Ping))))
			c.Close()
		}
	}()
	res = RunCPS(ctx, CPSOptions{Addr: bad.Addr().String(), Workers: 1, Count: 2})
	if res.Conns != 0 || res.Errors != 2 || !strings.Contains(res.FirstError, "echoed") {
		t.Errorf("wrong echo: %+v", res)
	}
	closed := ln.Addr().String()
	ln.Close()
	res = RunCPS(ctx, CPSOptions{Addr: closed, Workers: 1, Count: 1})
	if res.Conns != 0 || res.Errors != 1 || res.FirstError == "" {
		t.Errorf("closed port: %+v", res)
	}
}
