package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// The L7 lab: the same two pods (client in A, server in B, one Proxy),
// configured by the controller's own translation of a small mesh: a
// Service "web" (VIP webVIP) and one "held" (heldVIP, a circuit breaker
// of one connection and one pending request), both on the server pod's
// httpPort, STRICT mTLS, an AuthorizationPolicy on /admin.
var (
	webVIP   = netip.MustParseAddrPort("10.96.0.20:80")
	heldVIP  = netip.MustParseAddrPort("10.96.0.21:80")
	httpPort = uint16(8081)
)

func l7Manifests(client, server netip.Addr) map[string]string {
	pod := func(name string, ip netip.Addr) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: default, labels: {app: %[1]s}}
spec:
  serviceAccountName: %[1]s
  nodeName: node1
  containers: [{name: app, image: app, ports: [{name: http, containerPort: %[3]d}]}]
status: {phase: Running, podIP: %[2]s, podIPs: [{ip: %[2]s}]}
`, name, ip, httpPort)
	}
	svc := func(name string, vip netip.AddrPort) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: default}
spec:
  clusterIP: %[2]s
  selector: {app: server}
  ports: [{name: http, port: %[3]d, targetPort: %[4]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-1, namespace: default, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports: [{name: http, port: %[4]d, protocol: TCP}]
endpoints:
- addresses: [%[5]s]
  conditions: {ready: true}
  nodeName: node1
  targetRef: {kind: Pod, namespace: default, name: server}
`, name, vip.Addr(), vip.Port(), httpPort, server)
	}
	return map[string]string{
		"ns.yaml": `apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: server, namespace: default}
`,
		"pods.yaml": pod("client", client) + "---\n" + pod("server", server),
		"svc.yaml":  svc("web", webVIP) + "---\n" + svc("held", heldVIP),
		"policy.yaml": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
`,
		"routes.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - name: retry
    match: [{uri: {prefix: /retry}}]
    route: [{destination: {host: web}}]
    retries: {attempts: 2, retryOn: 5xx}
  - name: timeout
    match: [{uri: {prefix: /slow}}]
    route: [{destination: {host: web}}]
    timeout: 0.3s
  - name: abort
    match: [{uri: {prefix: /abort}}]
    route: [{destination: {host: web}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
  - name: default
    route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: held, namespace: default}
spec:
  host: held
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
`,
	}
}

// l7Snapshot compiles the manifests for node1 as the agent would.
func l7Snapshot(t testing.TB, files map[string]string) *xdsconf.Snapshot {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(st, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := envoy.BuildMesh(m)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := envoy.NodeListeners(m, "node1")
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]map[string]proto.Message{
		resource.ClusterType: {}, resource.EndpointType: {}, resource.ListenerType: {}, resource.RouteType: {},
	}
	for _, c := range mesh.Clusters {
		res[resource.ClusterType][c.GetName()] = c
	}
	for _, e := range mesh.Endpoints {
		res[resource.EndpointType][e.GetClusterName()] = e
	}
	for _, r := range mesh.Routes {
		res[resource.RouteType][r.GetName()] = r
	}
	res[resource.ListenerType][mesh.Outbound.GetName()] = mesh.Outbound
	for _, l := range ls {
		res[resource.ListenerType][l.GetName()] = l
	}
	s := xdsconf.NewStore()
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		if err := s.Update(typ, res[typ], "v1"); err != nil {
			t.Fatalf("Update(%s): %v", typ, err)
		}
	}
	return s.Snapshot()
}

// l7Lab is the lab with the L7 config, an HTTP app in B and a client in A
// whose connections each say which VIP they were for.
type l7Lab struct {
	*lab
	dsts      sync.Map // client's local port → original destination
	nextPort  atomic.Uint32
	attempts  sync.Map // key → *atomic.Int32 (the app's /retry counter)
	held      chan struct{}
	heldIn    atomic.Int32
	lastHdr   atomic.Pointer[http.Header]
	transport *http.Transport
}

func newL7Lab(t testing.TB) *l7Lab {
	l7 := &l7Lab{held: make(chan struct{})}
	l7.nextPort.Store(41000)
	var snap atomic.Pointer[xdsconf.Snapshot]
	l := newLabTB(t, nil, func(c *Config) {
		c.Snapshot = snap.Load
		orig := c.OriginalDestination
		c.OriginalDestination = func(conn *net.TCPConn, pod Pod, port int) (netip.AddrPort, error) {
			if pod.Name == "client" && port == slowpath.OutboundPort {
				if v, ok := l7.dsts.Load(addrPortOf(conn.RemoteAddr()).Port()); ok {
					return v.(netip.AddrPort), nil
				}
			}
			return orig(conn, pod, port)
		}
	})
	l7.lab = l
	snap.Store(l7Snapshot(t, l7Manifests(l.pair.A.Addr, l.pair.B.Addr)))
	l7.startApp(t)
	l7.transport = &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return l7.dial(ap)
		},
		MaxIdleConnsPerHost: 64,
	}
	t.Cleanup(l7.transport.CloseIdleConnections)
	return l7
}

// dial connects the client app to its outbound port, for dst.
func (l *l7Lab) dial(dst netip.AddrPort) (net.Conn, error) {
	port := uint16(l.nextPort.Add(1))
	l.dsts.Store(port, dst)
	var c net.Conn
	err := l.pair.A.Do(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: l.pair.A.Addr.AsSlice(), Port: int(port)}, Timeout: 5 * time.Second}
		var err error
		c, err = d.Dial("tcp", l.pair.A.AddrPort(slowpath.OutboundPort).String())
		return err
	})
	return c, err
}

// startApp serves HTTP/1.1 and h2c on httpPort in B: "/" answers "hello
// <proto>" and echoes the forwarded headers; "/retry/<key>" fails twice
// per key with 503; "/slow" waits a second; "/held" waits for l.held;
// "/ws" upgrades and echoes.
func (l *l7Lab) startApp(t testing.TB) {
	ln := l.pair.B.Listen(t, httpPort)
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		l.lastHdr.Store(&h)
		fmt.Fprintf(w, "hello %s", r.Proto)
	})
	mux.HandleFunc("/retry/", func(w http.ResponseWriter, r *http.Request) {
		v, _ := l.attempts.LoadOrStore(r.URL.Path, new(atomic.Int32))
		if v.(*atomic.Int32).Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "third time")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/held", func(w http.ResponseWriter, r *http.Request) {
		l.heldIn.Add(1)
		select {
		case <-l.held:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	})
	srv := &http.Server{Handler: mux, Protocols: protos}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

func (l *l7Lab) get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := l.transport.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestHTTPRouting(t *testing.T) {
	l := newL7Lab(t)
	web := "http://" + webVIP.String()

	t.Run("request through the tunnel", func(t *testing.T) {
		resp, body := l.get(t, web+"/", nil)
		if resp.StatusCode != 200 || body != "hello HTTP/1.1" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		h := *l.lastHdr.Load()
		if h.Get("X-Request-Id") == "" {
			t.Error("the app got no x-request-id")
		}
		if xfcc := h.Get("X-Forwarded-Client-Cert"); !strings.Contains(xfcc, "URI="+l.clientID.String()) || !strings.Contains(xfcc, "By="+l.serverID.String()) {
			t.Errorf("x-forwarded-client-cert %q, want By=%s and URI=%s", xfcc, l.serverID, l.clientID)
		}
		if h.Get("X-Fibmesh-Protocol") != "" {
			t.Error("the internal protocol header reached the app")
		}
	})
	t.Run("x-request-id kept", func(t *testing.T) {
		l.get(t, web+"/", map[string]string{"X-Request-Id": "abc-123"})
		if got := l.lastHdr.Load().Get("X-Request-Id"); got != "abc-123" {
			t.Errorf("x-request-id %q, want abc-123", got)
		}
	})
	t.Run("h2c from the app is h2c to the app", func(t *testing.T) {
		protos := new(http.Protocols)
		protos.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: protos, DialContext: l.transport.DialContext}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, web+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || string(b) != "hello HTTP/2.0" {
			t.Fatalf("proto %s body %q", resp.Proto, b)
		}
	})
	t.Run("retries", func(t *testing.T) {
		resp, body := l.get(t, web+"/retry/a", nil)
		if resp.StatusCode != 200 || body != "third time" {
			t.Fatalf("status %d body %q, want 200 on the third attempt", resp.StatusCode, body)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		resp, body := l.get(t, web+"/slow", nil)
		took := time.Since(start)
		if resp.StatusCode != 504 || body != bodyTimeout {
			t.Fatalf("status %d body %q, want 504 %q", resp.StatusCode, body, bodyTimeout)
		}
		if took < 300*time.Millisecond || took > 900*time.Millisecond {
			t.Errorf("504 after %v, want about 300ms", took)
		}
		t.Logf("route timeout 300ms: 504 after %v", took)
	})
	t.Run("fault abort", func(t *testing.T) {
		resp, body := l.get(t, web+"/abort", nil)
		if resp.StatusCode != 418 || body != bodyFaultAbort {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
	})
	t.Run("HTTP RBAC", func(t *testing.T) {
		resp, body := l.get(t, web+"/admin/x", nil)
		if resp.StatusCode != 403 || body != bodyRBAC {
			t.Fatalf("status %d body %q, want 403 %q", resp.StatusCode, body, bodyRBAC)
		}
		if resp, _ := l.get(t, web+"/public", nil); resp.StatusCode != 200 {
			t.Fatalf("GET /public: %d", resp.StatusCode)
		}
	})
	t.Run("upgrade passes through", func(t *testing.T) {
		c, err := l.dial(webVIP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		io.WriteString(c, "ping")
		b := make([]byte, 4)
		if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
			t.Fatalf("echo after upgrade: %q %v", b, err)
		}
	})
	t.Run("pipelining", func(t *testing.T) {
		c, err := l.dial(webVIP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, strings.Repeat("GET / HTTP/1.1\r\nHost: web\r\n\r\n", 3))
		br := bufio.NewReader(c)
		for i := range 3 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != "hello HTTP/1.1" {
				t.Fatalf("response %d: %d %q", i, resp.StatusCode, b)
			}
		}
	})
	t.Run("circuit breaker", func(t *testing.T) {
		const n = 6
		var wg sync.WaitGroup
		codes := make(chan int, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, "http://"+heldVIP.String()+"/held", nil)
				resp, err := l.transport.RoundTrip(req)
				if err != nil {
					codes <- -1
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes <- resp.StatusCode
			}()
		}
		// 1 in flight, 1 pending, the rest overflow at once.
		overflow := 0
		for range n - 2 {
			select {
			case c := <-codes:
				if c != 503 {
					t.Fatalf("an early answer was %d, want 503 (overflow)", c)
				}
				overflow++
			case <-time.After(10 * time.Second):
				t.Fatalf("%d overflowed, want %d", overflow, n-2)
			}
		}
		close(l.held)
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != 200 {
				t.Errorf("an admitted request got %d", c)
			}
		}
		if got := l.heldIn.Load(); got != 2 {
			t.Errorf("the app saw %d requests, want 2", got)
		}
	})
}
