package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

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
	snap      *atomic.Pointer[xdsconf.Snapshot]
	transport *http.Transport
	// dialMu and dials track the client's dials (net/http dials in the
	// background, even for a request another connection served): the
	// namespaces must outlive them.
	dialMu     sync.Mutex
	dialsDone  bool
	dialsGroup sync.WaitGroup
}

func newL7Lab(t testing.TB, opts ...func(*Config)) *l7Lab {
	l7 := &l7Lab{held: make(chan struct{})}
	l7.nextPort.Store(41000)
	var snap atomic.Pointer[xdsconf.Snapshot]
	l7.snap = &snap
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
		for _, o := range opts {
			o(c)
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
	t.Cleanup(func() {
		l7.dialMu.Lock()
		l7.dialsDone = true
		l7.dialMu.Unlock()
		l7.dialsGroup.Wait()
		l7.transport.CloseIdleConnections()
	})
	return l7
}

// dial connects the client app to its outbound port, for dst.
func (l *l7Lab) dial(dst netip.AddrPort) (net.Conn, error) {
	l.dialMu.Lock()
	if l.dialsDone {
		l.dialMu.Unlock()
		return nil, net.ErrClosed
	}
	l.dialsGroup.Add(1)
	l.dialMu.Unlock()
	defer l.dialsGroup.Done()
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
		b, _ := io.ReadAll(r.Body)
		if v.(*atomic.Int32).Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "third time")
		if len(b) > 0 {
			fmt.Fprintf(w, " %d %x", len(b), sha256.Sum256(b))
		}
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

// rawConn is a client connection to web's VIP for hand-written
// requests, with a deadline; closed at the end of the test.
func (l *l7Lab) rawConn(t *testing.T) net.Conn {
	t.Helper()
	c, err := l.dial(webVIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
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
		forged := "By=spiffe://cluster.local/ns/default/sa/server;URI=spiffe://cluster.local/ns/default/sa/admin"
		resp, body := l.get(t, web+"/", map[string]string{"X-Forwarded-Client-Cert": forged})
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
		if xfcc := h.Values("X-Forwarded-Client-Cert"); len(xfcc) != 1 || strings.Contains(xfcc[0], "sa/admin") {
			t.Errorf("x-forwarded-client-cert %q: the app's own must not be forwarded", xfcc)
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
	t.Run("retries resend the body", func(t *testing.T) {
		// 200 KiB, chunked (no length): kept as it is sent, replayed.
		body := make([]byte, 200<<10)
		for i := range body {
			body[i] = byte(i * 7)
		}
		req, _ := http.NewRequest(http.MethodPost, web+"/retry/body", io.MultiReader(bytes.NewReader(body)))
		req.ContentLength = -1
		resp, err := l.transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("third time %d %x", len(body), sha256.Sum256(body))
		if resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("status %d body %q, want 200 %q", resp.StatusCode, got, want)
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
		// Dot segments are removed before authorization (Envoy's
		// normalize_path): no way around the DENY rule.
		for _, path := range []string{"/public/../admin/x", "/public/%2e%2e/admin/x", "/./admin/x"} {
			c := l.rawConn(t)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n", path)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			if err != nil || resp.StatusCode != 403 {
				t.Errorf("GET %s: %v %v, want 403", path, resp, err)
			}
		}
	})
	t.Run("a policy edit applies to open connections", func(t *testing.T) {
		// The pooled tunnel and the client's keep-alive connection stay;
		// the next request on them meets the new DENY.
		if resp, _ := l.get(t, web+"/public", nil); resp.StatusCode != 200 {
			t.Fatalf("before the edit: %d", resp.StatusCode)
		}
		files := l7Manifests(l.pair.A.Addr, l.pair.B.Addr)
		files["deny-public.yaml"] = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-public, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/public"]}}]}]
`
		old := l.snap.Load()
		l.snap.Store(l7Snapshot(t, files))
		defer l.snap.Store(old)
		tunnels := 0
		for _, c := range l.p.Connections() {
			if c.Mode == ModeTunnelH2 && c.State == StateEstablished {
				tunnels++
			}
		}
		if resp, body := l.get(t, web+"/public", nil); resp.StatusCode != 403 {
			t.Fatalf("after the edit: %d %q, want 403", resp.StatusCode, body)
		}
		after := 0
		for _, c := range l.p.Connections() {
			if c.Mode == ModeTunnelH2 && c.State == StateEstablished {
				after++
			}
		}
		if tunnels == 0 || after != tunnels {
			t.Errorf("pooled tunnels %d before, %d after: the edit must reach the open one", tunnels, after)
		}
	})
	t.Run("upgrade passes through", func(t *testing.T) {
		c := l.rawConn(t)
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
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
	t.Run("an upgrade the app does not take stays HTTP", func(t *testing.T) {
		// The app answers 200, not 101: the connection's next request
		// is authorized as any (the DENY on /admin/* holds).
		c := l.rawConn(t)
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET /public HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("upgrade refused by the app: %v %v, want its 200", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		fmt.Fprintf(c, "GET /admin/x HTTP/1.1\r\nHost: web\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 403 {
			t.Fatalf("the next request on the connection: %v %v, want 403", resp, err)
		}
	})
	t.Run("only websocket upgrades", func(t *testing.T) {
		c := l.rawConn(t)
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 403 {
			t.Fatalf("Upgrade: foo: %v %v, want 403", resp, err)
		}
	})
	t.Run("pipelining", func(t *testing.T) {
		c := l.rawConn(t)
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

// BenchmarkHTTPRequest is one keep-alive HTTP/1.1 request through both
// sides of the mesh (the client pod's outbound handler, the pooled
// HTTP/2 tunnel, the server pod's inbound handler and its connection to
// the app): its time and allocations, which include the test's client
// and app (the same process).
func BenchmarkHTTPRequest(b *testing.B) {
	l := newL7Lab(b)
	req, _ := http.NewRequest(http.MethodGet, "http://"+webVIP.String()+"/", nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := l.transport.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// TestHTTPServerPodRestart: the server pod's side goes away and comes
// back (its agent restarted): concurrent requests meanwhile get a 503
// at once (the failed tunnel dial releases every request waiting on
// it), and the next ones go through a new tunnel.
func TestHTTPServerPodRestart(t *testing.T) {
	l := newL7Lab(t)
	web := "http://" + webVIP.String() + "/"
	if resp, _ := l.get(t, web, nil); resp.StatusCode != 200 {
		t.Fatalf("before: %d", resp.StatusCode)
	}
	l.p.RemovePod(l.srv.Namespace, l.srv.Name)
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, web, nil)
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
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 503 {
			t.Errorf("a request while the server pod is gone: %d, want 503", c)
		}
	}
	if err := l.p.AddPod(l.srv); err != nil {
		t.Fatal(err)
	}
	if resp, _ := l.get(t, web, nil); resp.StatusCode != 200 {
		t.Fatalf("after: %d", resp.StatusCode)
	}
}
