package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// bank is the slow path's test mesh: a TCP service (vault) on node2 that
// only the teller's identity may call, a teller and a robber (another
// identity) on node1, an outsider pod on node1 that is not captured
// (plaintext, no identity), and a PERMISSIVE namespace (legacy) with the
// same app. Mesh-wide STRICT.
var bank = map[string]string{
	"namespaces.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
---
apiVersion: v1
kind: Namespace
metadata:
  name: bank
---
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
`,
	"accounts.yaml": serviceAccounts("bank", "vault", "teller", "robber"),
	"policy.yaml": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: legacy
spec:
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: vault-tellers
  namespace: bank
spec:
  selector:
    matchLabels: {app: vault}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/bank/sa/teller"]
    to:
    - operation:
        ports: ["9000"]
`,
	"vault.yaml": manifests(
		echoPod{namespace: "bank", name: "vault", node: "node2", serviceAccount: "vault", port: 9000, ready: true}.yaml(),
		echoService{namespace: "bank", name: "vault", app: "vault", clusterIP: "10.96.90.9", ports: []string{"tcp-vault:9000"}}.yaml()),
	"callers.yaml": manifests(
		echoPod{namespace: "bank", name: "teller", node: "node1", serviceAccount: "teller", port: 8080}.yaml(),
		echoPod{namespace: "bank", name: "robber", node: "node1", serviceAccount: "robber", port: 8080}.yaml(),
		echoPod{namespace: "bank", name: "outsider", node: "node1", labels: map[string]string{"fibmesh.io/capture": "disabled"}, port: 8080}.yaml()),
	"legacy.yaml": echoPod{namespace: "legacy", name: "old", node: "node2", port: 9000, ready: true}.yaml(),
}

// vaultVIP is the vault Service's ClusterIP (set in its manifest).
var vaultVIP = netip.MustParseAddrPort("10.96.90.9:9000")

// adminJSON GETs path from node's agent admin API.
func adminJSON(l *meshLab, node, path string, v any) error {
	c := kubelet.NetnsHTTPClient(l.nodeNetns(node), 5*time.Second)
	resp, err := c.Get("http://" + kubelet.AgentAdmin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s: %s", path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// dialIn connects to addr from inside a pod's network namespace, as the
// pod's app would (so its capture applies).
func dialIn(l *meshLab, t *testing.T, ns, pod string, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	p := l.pod(t, ns, pod)
	var c net.Conn
	err := lab.InNetns(p.Netns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// roundTripOn sends a message the echo app echoes and reads it back.
func roundTripOn(c net.Conn, i int) error {
	f := &flow{c: c, buf: make([]byte, 64)}
	return f.roundTrip(i)
}

// podAddr is a pod's IP with port.
func podAddr(t *testing.T, l *meshLab, ns, name string, port uint16) netip.AddrPort {
	t.Helper()
	p := l.pod(t, ns, name)
	a, err := netip.ParseAddr(p.IP)
	if err != nil {
		t.Fatalf("pod %s/%s has no IP: %q", ns, name, p.IP)
	}
	return netip.AddrPortFrom(a, port)
}

func connections(t *testing.T, l *meshLab, node, pod string) []admin.Connection {
	t.Helper()
	var cs []admin.Connection
	if err := adminJSON(l, node, "/connections?pod="+url.QueryEscape(pod), &cs); err != nil {
		t.Fatalf("%s /connections: %v", node, err)
	}
	return cs
}

func TestSlowPath(t *testing.T) {
	l, _ := upMeshReady(t, "fm-e2s-", bank, 30*time.Second, "--backoff-base", "1s")
	vip := vaultVIP
	vault := podAddr(t, l, "bank", "vault", 9000)
	teller := l.pod(t, "bank", "teller")
	l.waitEcho(t, "bank", "teller", vip, 20*time.Second)

	t.Run("TCP64MiBOverMTLS", func(t *testing.T) {
		const size = 64 << 20
		payload := make([]byte, size)
		r := mrand.NewChaCha8([32]byte{1, 2, 3})
		r.Read(payload)
		payload[0] = 0 // not an HTTP method: the echo app echoes
		// Anything between the pods must not carry the payload in clear.
		fw := watchFabric(t, l.fabricNetns(), func(_, _ netip.AddrPort) [][]byte { return [][]byte{payload} })

		c, err := dialIn(l, t, "bank", "teller", vip, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(payload)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			errc <- err
		}()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if werr := <-errc; werr != nil {
			t.Fatalf("write: %v", werr)
		}
		if err != nil || n != size {
			t.Fatalf("read back %d bytes of %d: %v", n, size, err)
		}
		if got, want := h.Sum(nil), sha256.Sum256(payload); !bytes.Equal(got, want[:]) {
			t.Fatal("the bytes echoed back differ from the bytes sent")
		}
		took := time.Since(start)
		t.Logf("64 MiB each way through two agents over mTLS in %s (%.2f Gbit/s each way)", took.Round(time.Millisecond), float64(size*8)/took.Seconds()/1e9)

		records, streams, dropped := fw.stop(t)

		// Under load the capture can fall behind and drop frames; a
		// stream with a gap loses its record framing from there on, so
		// the record count is only exact without drops.
		wantRecords := int64(size / (16 << 10))
		if dropped > 0 {
			t.Logf("the capture dropped %d frames (a busy machine): the record count covers the stream up to the first gap", dropped)
			wantRecords = 1
		}
		if streams == 0 || records < wantRecords {
			t.Errorf("the fabric carried %d TLS records on port %d in %d streams (dropped frames %d): the payload did not cross it in a tunnel", records, slowpath.TunnelPort, streams, dropped)
		}

		// Both agents list the connection with both identities.
		want := map[string][2]string{
			"node1": {"spiffe://cluster.local/ns/bank/sa/teller", "spiffe://cluster.local/ns/bank/sa/vault"},
			"node2": {"spiffe://cluster.local/ns/bank/sa/vault", "spiffe://cluster.local/ns/bank/sa/teller"},
		}
		for node, ids := range want {
			pod := "bank/teller"
			if node == "node2" {
				pod = "bank/vault"
			}
			ok := false
			var seen []string
			for _, cn := range connections(t, l, node, pod) {
				seen = append(seen, fmt.Sprintf("%s %s→%s %s↔%s %d/%d", cn.Direction, cn.Source, cn.Destination, cn.LocalIdentity, cn.PeerIdentity, cn.BytesOut, cn.BytesIn))
				if cn.LocalIdentity == ids[0] && cn.PeerIdentity == ids[1] && cn.BytesOut >= size && cn.BytesIn >= size {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s lists no %s connection %s ↔ %s with 64 MiB each way; it lists:\n%s", node, pod, ids[0], ids[1], strings.Join(seen, "\n"))
			}
		}
	})

	t.Run("PodByIPAndByName", func(t *testing.T) {
		// A mesh pod called by its IP is tunnelled too, and verified as
		// that pod.
		c, err := dialIn(l, t, "bank", "teller", vault, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTripOn(c, 8); err != nil {
			t.Fatalf("teller → vault pod IP: %v", err)
		}
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		found := false
		for _, cn := range connections(t, l, "node1", "bank/teller") {
			if cn.Source.Port() == local.Port() && cn.Destination == vault {
				found = true
				if cn.Mode != "tunnel" || cn.PeerIdentity != "spiffe://cluster.local/ns/bank/sa/vault" {
					t.Errorf("teller → vault by pod IP went %s to %s (peer %q), want the tunnel to the vault's identity", cn.Mode, cn.Upstream, cn.PeerIdentity)
				}
			}
		}
		if !found {
			t.Errorf("node1's agent does not list the connection from %s to %s", local, vault)
		}
		// By name, with no cluster DNS: the agent's DNS proxy answers the
		// mesh's names (and the short form in the pod's namespace), and
		// curl reaches the echo app through the mesh.
		for _, host := range []string{"vault.bank.svc.cluster.local", "vault"} {
			out, err := l.exec("bank/teller", "curl", "-sS", "-m", "5", fmt.Sprintf("http://%s:9000/by-name", host))
			if err != nil || !strings.Contains(string(out), `"path": "/by-name"`) && !strings.Contains(string(out), `"path":"/by-name"`) {
				t.Errorf("curl http://%s:9000/ in bank/teller: %v\n%s", host, err, out)
			}
		}
		// Other names are refused (the lab has no upstream resolver).
		if out, err := l.exec("bank/teller", "curl", "-sS", "-m", "5", "http://example.com/"); err == nil {
			t.Errorf("curl http://example.com/ resolved in the lab:\n%s", out)
		}
	})

	t.Run("StrictRefusesPlaintext", func(t *testing.T) {
		f := l.fib(t, "node2")
		before := strictDrops(t, f)
		// The outsider is not captured: its plaintext SYNs to the vault's
		// STRICT port are dropped in node2's XDP.
		if c, err := dialIn(l, t, "bank", "outsider", vault, 2*time.Second); err == nil {
			err = roundTripOn(c, 2)
			t.Fatalf("plaintext from an uncaptured pod to a STRICT port connected (round trip: %v)", err)
		}
		if after := strictDrops(t, f); after <= before {
			t.Errorf("node2's drop_strict_plaintext counter %d → %d: XDP did not drop the plaintext", before, after)
		}
		// The same to a PERMISSIVE namespace works.
		c, err := dialIn(l, t, "bank", "outsider", podAddr(t, l, "legacy", "old", 9000), 5*time.Second)
		if err != nil {
			t.Fatalf("plaintext to a PERMISSIVE pod: %v", err)
		}
		if err := roundTripOn(c, 3); err != nil {
			t.Fatalf("plaintext to a PERMISSIVE pod: %v", err)
		}
	})

	t.Run("KubeletProbeOfStrictPort", func(t *testing.T) {
		// A kubelet probes from its node, in plaintext: node2's agent
		// source-NATs the node's own connections to its pods to the probe
		// address, which the vault's capture lets reach the app, STRICT
		// or not.
		var c net.Conn
		if err := lab.InNetns(l.nodeNetns("node2"), func() (err error) {
			c, err = net.DialTimeout("tcp", vault.String(), 5*time.Second)
			return err
		}); err != nil {
			t.Fatalf("node2 → the vault's STRICT port (a kubelet probe): %v", err)
		}
		defer c.Close()
		if err := roundTripOn(c, 4); err != nil {
			t.Fatalf("node2 → the vault's STRICT port (a kubelet probe): %v", err)
		}
		// The exemption is the node's own: node1's connection to the
		// vault crosses the fabric in plaintext and node2's XDP drops it.
		f := l.fib(t, "node2")
		before := strictDrops(t, f)
		err := lab.InNetns(l.nodeNetns("node1"), func() error {
			c, err := net.DialTimeout("tcp", vault.String(), 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			t.Fatal("node1 → the vault's STRICT port connected: only the vault's own node may probe it in plaintext")
		}
		if after := strictDrops(t, f); after <= before {
			t.Errorf("node1 → vault failed (%v) but node2's drop_strict_plaintext stayed %d: not dropped as plaintext", err, before)
		}
	})

	t.Run("TunnelRefusesBadPeers", func(t *testing.T) {
		tunnel := netip.AddrPortFrom(vault.Addr(), slowpath.TunnelPort)
		ca := labCA(t, l)
		other := newTestCA(t, "evil.example")
		cases := []struct {
			name string
			cfg  *tls.Config
		}{
			{"no client certificate", &tls.Config{NextProtos: []string{slowpath.TunnelALPN}}},
			{"another trust domain", &tls.Config{NextProtos: []string{slowpath.TunnelALPN}, Certificates: []tls.Certificate{other.svid(t, "spiffe://evil.example/ns/bank/sa/teller")}}},
			{"wrong ALPN", &tls.Config{NextProtos: []string{"h2"}, Certificates: []tls.Certificate{ca.svid(t, "spiffe://cluster.local/ns/bank/sa/teller")}}},
		}
		refused := func() float64 { return l.agentMetric(t, "node2", "fibmesh_agent_proxy_refused_total") }
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := refused()
				tc.cfg.InsecureSkipVerify = true // the test checks the server side only
				tc.cfg.MinVersion = tls.VersionTLS13
				raw, err := dialIn(l, t, "bank", "outsider", tunnel, 5*time.Second)
				if err != nil {
					t.Fatalf("TCP to %s: %v", tunnel, err)
				}
				tc2 := tls.Client(raw, tc.cfg)
				tc2.SetDeadline(time.Now().Add(5 * time.Second))
				err = tc2.Handshake()
				if err == nil {
					// TLS 1.3: the server's verdict on the client
					// certificate arrives with the first read.
					_, err = tc2.Read(make([]byte, 1))
				}
				if err == nil {
					t.Fatal("the tunnel accepted the handshake")
				}
				testenv.Eventually(t, 5*time.Second, "refusal counted", func() error {
					if after := refused(); after <= before {
						return fmt.Errorf("fibmesh_agent_proxy_refused_total %v → %v", before, after)
					}
					return nil
				})
			})
		}
		t.Run("garbage and truncated PROXY header", func(t *testing.T) {
			for i, send := range [][]byte{
				[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
				bytes.Repeat([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, 10),
			} {
				raw, err := dialIn(l, t, "bank", "outsider", tunnel, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				raw.SetDeadline(time.Now().Add(15 * time.Second))
				raw.Write(send)
				if _, err := io.ReadAll(raw); err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("garbage %d: the tunnel did not close the connection: %v", i, err)
				}
			}
			// A valid handshake, then a PROXY header cut short.
			cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{slowpath.TunnelALPN}, MinVersion: tls.VersionTLS13,
				Certificates: []tls.Certificate{ca.svid(t, "spiffe://cluster.local/ns/bank/sa/teller")}}
			raw, err := dialIn(l, t, "bank", "outsider", tunnel, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, cfg)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if err := c.Handshake(); err != nil {
				t.Fatalf("handshake with a valid SVID: %v", err)
			}
			c.Write([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00")) // the v2 signature, then too little
			c.CloseWrite()
			if b, err := io.ReadAll(c); len(b) != 0 {
				t.Errorf("a truncated PROXY header got %q (%v), want the connection closed", b, err)
			}
		})
	})

	t.Run("AuthorizationPolicy", func(t *testing.T) {
		denied := func() float64 { return l.agentMetric(t, "node2", "fibmesh_agent_proxy_rbac_denied_total") }
		before := denied()
		c, err := dialIn(l, t, "bank", "robber", vip, 5*time.Second)
		if err == nil {
			if err := roundTripOn(c, 4); err == nil {
				t.Fatal("the robber's identity got through to the vault")
			}
		}
		testenv.Eventually(t, 5*time.Second, "denial counted on node2", func() error {
			if after := denied(); after <= before {
				return fmt.Errorf("fibmesh_agent_proxy_rbac_denied_total %v → %v", before, after)
			}
			return nil
		})
		// The teller still gets through.
		c, err = dialIn(l, t, "bank", "teller", vip, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTripOn(c, 5); err != nil {
			t.Fatalf("teller → vault after the robber was refused: %v", err)
		}
	})

	t.Run("AgentKilledFailsClosed", func(t *testing.T) {
		vaultConns := func() int { return len(connections(t, l, "node2", "bank/vault")) }
		// Killed twice in a row, the agent is restarted after the lab's
		// back-off (1s), not at once: a window without an agent.
		var killed int
		for round := range 2 {
			agent := l.process(t, "agent-node1")
			killed = agent.PID
			if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if round == 1 {
				break
			}
			testenv.Eventually(t, 20*time.Second, "the lab restarted node1's agent", func() error {
				if p := l.process(t, "agent-node1"); p.PID == agent.PID || p.State != "Running" {
					return fmt.Errorf("agent-node1: %s pid %d", p.State, p.PID)
				}
				return nil
			})
		}
		// While no agent runs, the teller's connections are refused
		// (the capture rules stay, nothing listens) and none reaches
		// the vault in any form.
		testenv.Eventually(t, 10*time.Second, "the lab saw node1's agent die", func() error {
			if p := l.process(t, "agent-node1"); p.PID == killed && p.State == "Running" {
				return fmt.Errorf("agent-node1: %s pid %d", p.State, p.PID)
			}
			return nil
		})
		before := vaultConns()
		down := 0
		for {
			p := l.process(t, "agent-node1")
			if p.State == "Running" {
				break
			}
			c, err := dialIn(l, t, "bank", "teller", vip, 2*time.Second)
			if err == nil {
				err = roundTripOn(c, 6)
				c.Close()
				t.Fatalf("with node1's agent down (%s), the teller's connection to the vault connected (round trip: %v)", p.State, err)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("with node1's agent down, connect: %v, want connection refused", err)
			}
			down++
			time.Sleep(50 * time.Millisecond) // pacing the probes, not synchronisation
		}
		if down == 0 {
			t.Fatal("the agent came back before a connection could be tried without it: no fail-closed check was made")
		}
		t.Logf("%d connections refused while node1's agent was down", down)
		if got := vaultConns(); got != before {
			t.Errorf("vault's agent saw %d connections while the teller's agent was down (%d before)", got, before)
		}
		testenv.Eventually(t, 30*time.Second, "the teller reaches the vault again", func() error {
			c, err := dialIn(l, t, "bank", "teller", vip, 2*time.Second)
			if err != nil {
				return fmt.Errorf("teller → vault: %w", err)
			}
			defer c.Close()
			return roundTripOn(c, 7)
		})
		// The capture rules stayed in the teller's namespace the whole
		// time: a listener-less window refuses, it never bypasses.
		f, err := os.Open(lab.NetnsPath(teller.Netns))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if ok, err := capture.Installed(int(f.Fd())); err != nil || !ok {
			t.Errorf("the teller's capture table after the restart: installed %v, %v", ok, err)
		}
	})
}

// exec runs a command in a pod's (or node's) network namespace with
// fibmesh-lab exec, as a user would.
func (l *meshLab) exec(name string, args ...string) ([]byte, error) {
	cmd := osexec.Command(filepath.Join(binDir, "fibmesh-lab"), append([]string{"exec", "--state-dir", l.state, name, "--"}, args...)...)
	return cmd.CombinedOutput()
}

// strictDrops is node's XDP drop counter for plaintext to STRICT ports.
func strictDrops(t *testing.T, f *fib.FIB) uint64 {
	t.Helper()
	cs, err := f.Stats.Read()
	if err != nil {
		t.Fatal(err)
	}
	return cs[fib.ReasonDropStrict].Packets
}

// testCA is a CA that signs SVIDs for the test: the lab's (read from its
// state directory: the test is root on the lab's host) or a stranger's.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func labCA(t *testing.T, l *meshLab) *testCA {
	t.Helper()
	dir := filepath.Join(l.state, kubelet.CADir)
	cb, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(cb)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := pem.Decode(kb)
	var key *ecdsa.PrivateKey
	if pk, err := x509.ParsePKCS8PrivateKey(k.Bytes); err == nil {
		key, _ = pk.(*ecdsa.PrivateKey)
	} else if key, err = x509.ParseECPrivateKey(k.Bytes); err != nil {
		t.Fatalf("lab CA key: %v", err)
	}
	if key == nil {
		t.Fatal("lab CA key is not ECDSA")
	}
	return &testCA{cert: cert, key: key}
}

func newTestCA(t *testing.T, td string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://" + td)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: td}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// svid issues an X.509 SVID for id.
func (ca *testCA) svid(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}
