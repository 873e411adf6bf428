package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/cluster"
	"github.com/fibmesh/fibmesh/lab/echo"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

// The L7 acceptance tests of the slow path (issue "The slow path, L7"):
// what an Istio user sees, request by request, through two agents and
// the mTLS tunnel between them, checked against Istio's (Envoy's)
// semantics. Requests are sent from inside a pod's network namespace, so
// its capture and identity apply as for its app; the echo app (lab/echo)
// says which pod and version answered and what headers it saw.
//
// TestL7Examples runs examples/ as they are: the 90/10 canary within
// 99.9% binomial bounds and its header override, the 1% fault delay,
// the names a service is called by, the authorization policy (methods,
// paths, identities, the generated x-request-id), ratings' timeout, and
// examples/README's commands.
//
// TestL7Mesh runs testdata/l7: HTTP/1.1 and h2c (headers, trace context,
// x-forwarded-client-cert and its sanitizing), gRPC health (Check,
// Watch), h2load, large bodies both ways, keep-alive, pipelining,
// Expect: 100-continue, HEAD, path normalization, upgrades; retries
// (VirtualService and Istio's default, bodies, another endpoint),
// per-try and route timeouts, fault abort and delay, outlier detection
// (two ejections), consistent hashing, the circuit breaker and its
// overflow metric; live route and policy edits on open connections;
// authorization on headers, DENY before ALLOW, counted by policy;
// plaintext in (PERMISSIVE) and out (DISABLE); agent restarts.

// l7Prefix is the network namespace prefix of the labs of this file.
const l7Prefix = "fm-e7-"

// rbacDenied is the body of Envoy's (and Istio's) RBAC 403.
const rbacDenied = "RBAC: access denied"

// uuidRE is the form of an x-request-id Envoy generates (a UUID).
var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// manifestsIn reads the YAML files of dir into upMesh's map.
func manifestsIn(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	if len(m) == 0 {
		t.Fatalf("no .yaml manifests in %s", dir)
	}
	return m
}

// serviceVIP is the ClusterIP the lab allocated to Service ns/name, with
// port (from the lab's allocations, as kubectl get svc would show).
func (l *meshLab) serviceVIP(t *testing.T, ns, name string, port uint16) netip.AddrPort {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.state, kubelet.AllocationsFile))
	if err != nil {
		t.Fatal(err)
	}
	var a cluster.Allocations
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s: %v", kubelet.AllocationsFile, err)
	}
	ip, err := netip.ParseAddr(a.Services[cluster.Key(ns, name)])
	if err != nil {
		t.Fatalf("service %s/%s has no ClusterIP in the lab's allocations (%v)", ns, name, a.Services)
	}
	return netip.AddrPortFrom(ip, port)
}

// podNamed is the one pod of namespace ns whose name starts with prefix
// (a Deployment's pod: name-<hash>-<suffix>).
func (l *meshLab) podNamed(t *testing.T, ns, prefix string) kubelet.PodStatus {
	t.Helper()
	var got []kubelet.PodStatus
	for _, p := range l.status(t).Pods {
		if p.Namespace == ns && strings.HasPrefix(p.Name, prefix) {
			got = append(got, p)
		}
	}
	if len(got) != 1 {
		t.Fatalf("pods %s/%s*: %d of them, want 1", ns, prefix, len(got))
	}
	return got[0]
}

// metricMatching sums the samples of every metric on node's agent whose
// name (the part before the labels) satisfies match.
func (l *meshLab) metricMatching(t *testing.T, node string, match func(name string) bool) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(l.get(t, l.nodeNetns(node), "http://127.0.0.1:15090/metrics")))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if !match(name) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// metricWith sums the samples of metric name on node's agent whose
// labels contain substr.
func (l *meshLab) metricWith(t *testing.T, node, name, substr string) float64 {
	t.Helper()
	var sum float64
	for line := range strings.Lines(string(l.get(t, l.nodeNetns(node), "http://127.0.0.1:15090/metrics"))) {
		labels, ok := strings.CutPrefix(line, name+"{")
		if !ok || !strings.Contains(labels[:max(strings.IndexByte(labels, '}'), 0)], substr) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// podClient sends HTTP from inside a pod's network namespace, so that
// the pod's capture and identity apply, as if its app sent it.
type podClient struct {
	pod  kubelet.PodStatus
	h1   *http.Client // HTTP/1.1, keep-alive
	h2c  *http.Client // HTTP/2 with prior knowledge
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func newPodClient(t *testing.T, p kubelet.PodStatus) *podClient {
	t.Helper()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := lab.InNetns(p.Netns, func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	h1 := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, DisableCompression: true}
	h2 := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(func() { h1.CloseIdleConnections(); h2.CloseIdleConnections() })
	return &podClient{pod: p, dial: dial,
		h1:  &http.Client{Transport: h1, Timeout: 30 * time.Second},
		h2c: &http.Client{Transport: h2, Timeout: 30 * time.Second}}
}

// call is one request: to addr (a Service VIP and port) with Host host.
type call struct {
	method string // GET when empty
	path   string // / when empty
	host   string // the Host header (:authority), e.g. reviews:9080
	hdr    []string
	h2c    bool
	body   []byte
	// chunked sends body with no length (HTTP/1.1 chunked, HTTP/2 DATA
	// frames without content-length).
	chunked bool
	// to, when valid, is where fanOut sends this one instead of its
	// addr.
	to netip.AddrPort
}

// answer is what came back, the echo app's Reply decoded where the body
// is one (isReply).
type answer struct {
	status  int
	header  http.Header
	body    []byte
	reply   echo.Reply
	isReply bool
	sent    time.Time
	took    time.Duration
}

// from says who answered: the echo app's pod, or "mesh" when the app did
// not (a 403, 503, 504 the proxy made).
func (a answer) from() string {
	if a.isReply {
		return a.reply.Pod
	}
	if p := a.header.Get(echo.HeaderPod); p != "" {
		return p
	}
	return "mesh"
}

func (a answer) String() string {
	return fmt.Sprintf("%d from %s in %v: %.300q", a.status, a.from(), a.took.Round(time.Millisecond), a.body)
}

func (pc *podClient) do(ctx context.Context, addr netip.AddrPort, c call) (answer, error) {
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
		if c.chunked {
			body = io.MultiReader(body) // hides the length
		}
	}
	req, err := http.NewRequestWithContext(ctx, cmpOr(c.method, "GET"), "http://"+addr.String()+cmpOr(c.path, "/"), body)
	if err != nil {
		return answer{}, err
	}
	if c.chunked {
		req.ContentLength = -1
	}
	if c.host != "" {
		req.Host = c.host
	}
	for i := 0; i+1 < len(c.hdr); i += 2 {
		req.Header.Set(c.hdr[i], c.hdr[i+1])
	}
	cl := pc.h1
	if c.h2c {
		cl = pc.h2c
	}
	a := answer{sent: time.Now()}
	resp, err := cl.Do(req)
	if err != nil {
		return a, fmt.Errorf("%s %s (Host %s) from %s/%s: %w", req.Method, req.URL, req.Host, pc.pod.Namespace, pc.pod.Name, err)
	}
	defer resp.Body.Close()
	a.body, err = io.ReadAll(resp.Body)
	a.took = time.Since(a.sent)
	a.status, a.header = resp.StatusCode, resp.Header
	if err != nil {
		return a, fmt.Errorf("%s %s from %s/%s: reading the body: %w", req.Method, req.URL, pc.pod.Namespace, pc.pod.Name, err)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && json.Unmarshal(a.body, &a.reply) == nil {
		a.isReply = true
	}
	return a, nil
}

// must is do for a request that has to get an answer.
func (pc *podClient) must(t *testing.T, addr netip.AddrPort, c call) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := pc.do(ctx, addr, c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// fanOut runs n requests on workers goroutines; req(i) is the i-th. It
// returns the answers in order, and fails the test on the first
// transport error.
func (pc *podClient) fanOut(t *testing.T, addr netip.AddrPort, n, workers int, req func(i int) call) []answer {
	t.Helper()
	out := make([]answer, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for range workers {
		wg.Go(func() {
			for i := range next {
				c := req(i)
				to := addr
				if c.to.IsValid() {
					to = c.to
				}
				out[i], errs[i] = pc.do(ctx, to, c)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%d requests: %v", n, firstLines(err.Error(), 5))
	}
	return out
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l[n] = "..."
	}
	return strings.Join(l, "\n")
}

// binomialBounds returns the range [lo, hi] a Binomial(n, p) count falls
// in with probability at least conf: P(X < lo) and P(X > hi) are each at
// most (1-conf)/2, with lo as large and hi as small as that allows
// (exact tails, summed in log space).
func binomialBounds(n int, p, conf float64) (lo, hi int) {
	tail := (1 - conf) / 2
	lgN, _ := math.Lgamma(float64(n + 1))
	pmf := func(k int) float64 {
		a, _ := math.Lgamma(float64(k + 1))
		b, _ := math.Lgamma(float64(n - k + 1))
		return math.Exp(lgN - a - b + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
	}
	cum := 0.0
	for lo = 0; lo < n; lo++ {
		if cum+pmf(lo) > tail {
			break
		}
		cum += pmf(lo)
	}
	cum = 0
	for hi = n; hi > 0; hi-- {
		if cum+pmf(hi) > tail {
			break
		}
		cum += pmf(hi)
	}
	return lo, hi
}

func TestBinomialBounds(t *testing.T) {
	tests := []struct {
		n    int
		p    float64
		conf float64
		// normal approximation: mean ± z·σ, which the exact bounds stay
		// close to for these n.
		z float64
	}{
		{2000, 0.1, 0.999, 3.2905},
		{2000, 0.01, 0.999, 3.2905},
		{400, 0.5, 0.999, 3.2905},
		{400, 0.5, 0.95, 1.96},
	}
	for _, tt := range tests {
		lo, hi := binomialBounds(tt.n, tt.p, tt.conf)
		mean, sd := float64(tt.n)*tt.p, math.Sqrt(float64(tt.n)*tt.p*(1-tt.p))
		t.Logf("n=%d p=%v conf=%v: [%d, %d]", tt.n, tt.p, tt.conf, lo, hi)
		if math.Abs(float64(lo)-(mean-tt.z*sd)) > 3 || math.Abs(float64(hi)-(mean+tt.z*sd)) > 4 {
			t.Errorf("binomialBounds(%d, %v, %v) = [%d, %d], want near [%.1f, %.1f]", tt.n, tt.p, tt.conf, lo, hi, mean-tt.z*sd, mean+tt.z*sd)
		}
	}
	// The symmetric case is symmetric.
	if lo, hi := binomialBounds(400, 0.5, 0.999); lo+hi != 400 {
		t.Errorf("binomialBounds(400, 0.5) = [%d, %d], want symmetric around 200", lo, hi)
	}
}

// checkBinomial fails the test when k successes of n lie outside the
// 99.9% bounds of p.
func checkBinomial(t *testing.T, what string, k, n int, p float64) {
	t.Helper()
	lo, hi := binomialBounds(n, p, 0.999)
	t.Logf("%s: %d of %d (%.2f%%), 99.9%% bounds for p=%v: [%d, %d]", what, k, n, 100*float64(k)/float64(n), p, lo, hi)
	if k < lo || k > hi {
		t.Errorf("%s: %d of %d lies outside the 99.9%% binomial bounds [%d, %d] of p=%v", what, k, n, lo, hi, p)
	}
}

// xfccURI is the URI (the peer's SPIFFE ID) of the last element of an
// x-forwarded-client-cert header, and its By (the server's own ID).
func xfcc(h string) (by, uri string) {
	elems := strings.Split(h, ",")
	for kv := range strings.SplitSeq(elems[len(elems)-1], ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch strings.ToLower(k) {
		case "by":
			by = strings.Trim(v, `"`)
		case "uri":
			uri = strings.Trim(v, `"`)
		}
	}
	return by, uri
}

// checkMeshHeaders checks what the server-side app saw of a request that
// came through the mesh from the SPIFFE ID from to the one by.
func checkMeshHeaders(t *testing.T, a answer, from, by string) {
	t.Helper()
	if !a.isReply {
		t.Errorf("not an echo reply: %v", a)
		return
	}
	h := a.reply.Headers
	if gb, gu := xfcc(h.Get("X-Forwarded-Client-Cert")); gu != from || gb != by {
		t.Errorf("the app saw x-forwarded-client-cert %q: By %q URI %q, want By=%s and URI=%s (Istio's format)", h.Get("X-Forwarded-Client-Cert"), gb, gu, by, from)
	}
	if h.Get("X-Request-Id") == "" {
		t.Errorf("the app saw no x-request-id (headers %v)", h)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("the app saw x-forwarded-proto %q, want http", got)
	}
}

// waitL7 polls until c answers with status want from the echo app (the
// agents have the L7 config), so the subtests start on a settled mesh.
func waitL7(t *testing.T, pc *podClient, addr netip.AddrPort, c call, want int) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("%s → %s answered %d by the app", pc.pod.Name, addr, want), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := pc.do(ctx, addr, c)
		if err != nil {
			return err
		}
		if a.status != want || !a.isReply {
			return fmt.Errorf("got %v", a)
		}
		return nil
	})
}

// diagnoseOnFailure logs, when the test has failed, what the controller
// says each node has ACKed and what node's agent holds of EDS, before
// the lab goes down (a route or endpoint that never arrived shows
// there).
func diagnoseOnFailure(t *testing.T, l *meshLab, nodes ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if st, err := l.tryControllerStatus(); err == nil {
			b, _ := json.MarshalIndent(st, "", "  ")
			t.Logf("controller config status:\n%s", tailBytes(b, 8192))
		} else {
			t.Logf("controller config status: %v", err)
		}
		for _, n := range nodes {
			c := kubelet.NetnsHTTPClient(l.nodeNetns(n), 5*time.Second)
			resp, err := c.Get("http://" + kubelet.AgentAdmin + "/config_dump?type=EDS")
			if err != nil {
				t.Logf("%s's EDS: %v", n, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("%s's EDS (%s, last 8 KiB):\n%s", n, resp.Status, tailBytes(b, 8192))
		}
	})
}

func spiffe(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// TestL7Examples runs examples/ as they are and checks the canary
// (10-reviews-virtualservice.yaml), the authorization policy
// (21-reviews-authorizationpolicy.yaml) and ratings' timeout
// (12-ratings.yaml) request by request, from the frontend pod as its
// app would call them.
func TestL7Examples(t *testing.T) {
	l := upMesh(t, l7Prefix, manifestsIn(t, "../examples"))
	diagnoseOnFailure(t, l, "node1", "node2")
	frontend := newPodClient(t, l.podNamed(t, "production", "frontend-"))
	v1, v2 := l.podNamed(t, "production", "reviews-v1-"), l.podNamed(t, "production", "reviews-v2-")
	reviews := l.serviceVIP(t, "production", "reviews", 9080)
	ratings := l.serviceVIP(t, "production", "ratings", 9080)
	const reviewsHost = "reviews:9080"
	rid := func(s string, i int) []string { return []string{"X-Request-Id", fmt.Sprintf("e7-%s-%d", s, i)} }
	waitL7(t, frontend, reviews, call{path: "/api/reviews/0", host: reviewsHost, hdr: rid("ready", 0)}, 200)
	t.Logf("frontend %s on %s; reviews-v1 %s on %s, reviews-v2 %s on %s; reviews %s",
		frontend.pod.Name, frontend.pod.Node, v1.Name, v1.Node, v2.Name, v2.Node, reviews)

	// versionOf checks that a came from reviews and says which version.
	versionOf := func(t *testing.T, a answer) string {
		t.Helper()
		switch {
		case a.status != 200 || !a.isReply:
			t.Errorf("want 200 from reviews, got %v", a)
		case a.reply.Version == "v1" && a.reply.Pod == v1.Name, a.reply.Version == "v2" && a.reply.Pod == v2.Name:
			if a.header.Get(echo.HeaderVersion) != a.reply.Version {
				t.Errorf("response header %s %q, body version %q", echo.HeaderVersion, a.header.Get(echo.HeaderVersion), a.reply.Version)
			}
			return a.reply.Version
		default:
			t.Errorf("answered by %s/%s %s, want %s (v1) or %s (v2)", a.reply.Namespace, a.reply.Pod, a.reply.Version, v1.Name, v2.Name)
		}
		return ""
	}

	t.Run("canary split 90/10", func(t *testing.T) {
		// The split route also delays 1% of its requests by 5 s (the
		// example's fault): with 16 requests in flight these are waited
		// out in parallel, and counted.
		const n = 2000
		as := frontend.fanOut(t, reviews, n, 16, func(i int) call {
			return call{path: fmt.Sprintf("/api/reviews/%d", i), host: reviewsHost, hdr: rid("split", i)}
		})
		var count = map[string]int{}
		delayed := 0
		for i, a := range as {
			count[versionOf(t, a)]++
			if a.isReply && a.reply.Headers.Get("X-Request-Id") != fmt.Sprintf("e7-split-%d", i) {
				t.Errorf("request %d: the app saw x-request-id %q, want ours kept", i, a.reply.Headers.Get("X-Request-Id"))
			}
			if a.took >= 5*time.Second {
				delayed++
			}
		}
		t.Logf("split: v1=%d v2=%d (other %d) of %d; delayed ≥5s: %d", count["v1"], count["v2"], count[""], n, delayed)
		checkBinomial(t, "reviews v2 share of the split", count["v2"], n, 0.10)
		checkBinomial(t, "requests delayed 5 s by the split route's 1% fault", delayed, n, 0.01)
		checkMeshHeaders(t, as[0], spiffe("production", "frontend"), spiffe("production", "reviews"))
	})

	t.Run("the names reviews is called by", func(t *testing.T) {
		// The virtual host answers to every name of the service, with
		// and without the port (Istio's domains); the header route to v2
		// shows the VirtualService applied.
		for _, host := range []string{"reviews", "reviews:9080", "reviews.production", "reviews.production.svc:9080",
			"reviews.production.svc.cluster.local", "reviews.production.svc.cluster.local:9080", reviews.Addr().String(), reviews.String()} {
			a := frontend.must(t, reviews, call{path: "/api/reviews/1", host: host, hdr: []string{"X-Request-Id", "e7-host", "X-Canary-User", "true"}})
			if versionOf(t, a) != "v2" || a.reply.Host != host {
				t.Errorf("Host %s: got %v (the app saw Host %q), want v2 by the canary header route, Host kept", host, a, a.reply.Host)
			}
		}
	})

	t.Run("canary header x-canary-user: true → v2", func(t *testing.T) {
		const n = 200
		as := frontend.fanOut(t, reviews, n, 8, func(i int) call {
			return call{path: fmt.Sprintf("/api/reviews/%d", i), host: reviewsHost, hdr: append(rid("tester", i), "X-Canary-User", "true")}
		})
		count := map[string]int{}
		for _, a := range as {
			count[versionOf(t, a)]++
		}
		if count["v2"] != n {
			t.Errorf("with x-canary-user: true, %d of %d went to v2 (v1: %d), want all", count["v2"], n, count["v1"])
		}
		// Anything but exactly "true" is the split.
		as = frontend.fanOut(t, reviews, 400, 8, func(i int) call {
			return call{path: "/api/reviews/1", host: reviewsHost, hdr: append(rid("not-tester", i), "X-Canary-User", "True")}
		})
		v1n := 0
		for _, a := range as {
			if versionOf(t, a) == "v1" {
				v1n++
			}
		}
		if v1n == 0 {
			t.Errorf("x-canary-user: True (not the exact value): no request of 400 went to v1, want the 90/10 split")
		}
	})

	t.Run("authorization", func(t *testing.T) {
		client := newPodClient(t, l.pod(t, "production", "client"))            // production/sa/default
		ratingsPod := newPodClient(t, l.podNamed(t, "production", "ratings-")) // production/sa/ratings
		deniedBefore := l.agentMetric(t, v1.Node, "fibmesh_agent_proxy_rbac_denied_total")
		if v2.Node != v1.Node {
			deniedBefore += l.agentMetric(t, v2.Node, "fibmesh_agent_proxy_rbac_denied_total")
		}
		tests := []struct {
			name string
			from *podClient
			c    call
			want int
			// check looks further at an allowed answer.
			check func(t *testing.T, a answer)
		}{
			{"frontend GET /api/reviews/1 with x-request-id", frontend,
				call{path: "/api/reviews/1", hdr: []string{"X-Request-Id", "e7-authz-1"}}, 200,
				func(t *testing.T, a answer) {
					checkMeshHeaders(t, a, spiffe("production", "frontend"), spiffe("production", "reviews"))
					if got := a.reply.Headers.Get("X-Request-Id"); got != "e7-authz-1" {
						t.Errorf("the app saw x-request-id %q, want ours (e7-authz-1) kept", got)
					}
				}},
			// Istio: the caller's sidecar generates x-request-id where the
			// app sent none (Envoy's generate_request_id), before the
			// server side's RBAC reads it; so "without the header" is
			// allowed, and the app sees a generated UUID. (Under Envoy's
			// RBAC a header that is absent matches no value, so notValues
			// [""] would not deny it either.)
			{"frontend GET without x-request-id: the mesh generates one", frontend,
				call{path: "/api/reviews/1"}, 200,
				func(t *testing.T, a answer) {
					checkMeshHeaders(t, a, spiffe("production", "frontend"), spiffe("production", "reviews"))
					if got := a.reply.Headers.Get("X-Request-Id"); !uuidRE.MatchString(got) {
						t.Errorf("the app saw x-request-id %q, want one the mesh generated (a UUID)", got)
					}
				}},
			{"frontend GET over h2c", frontend,
				call{path: "/api/reviews/1", hdr: []string{"X-Request-Id", "e7-authz-h2c"}, h2c: true}, 200,
				func(t *testing.T, a answer) {
					checkMeshHeaders(t, a, spiffe("production", "frontend"), spiffe("production", "reviews"))
				}},
			{"frontend GET /api/reviews/1/comments (the wildcard's suffix)", frontend,
				call{path: "/api/reviews/1/comments", hdr: []string{"X-Request-Id", "e7-authz-2"}}, 200, nil},
			{"frontend POST", frontend, call{method: "POST", path: "/api/reviews/1", hdr: []string{"X-Request-Id", "e7-authz-3"}}, 403, nil},
			{"frontend DELETE", frontend, call{method: "DELETE", path: "/api/reviews/1", hdr: []string{"X-Request-Id", "e7-authz-4"}}, 403, nil},
			{"frontend another path", frontend, call{path: "/api/ratings/1", hdr: []string{"X-Request-Id", "e7-authz-5"}}, 403, nil},
			{"frontend /api/reviews without the slash", frontend, call{path: "/api/reviews", hdr: []string{"X-Request-Id", "e7-authz-6"}}, 403, nil},
			{"frontend /", frontend, call{path: "/", hdr: []string{"X-Request-Id", "e7-authz-7"}}, 403, nil},
			{"another identity (production/sa/default)", client, call{path: "/api/reviews/1", hdr: []string{"X-Request-Id", "e7-authz-8"}}, 403, nil},
			{"another identity (production/sa/ratings)", ratingsPod, call{path: "/api/reviews/1", hdr: []string{"X-Request-Id", "e7-authz-9"}}, 403, nil},
			{"another identity over h2c", client, call{path: "/api/reviews/1", hdr: []string{"X-Request-Id", "e7-authz-10"}, h2c: true}, 403, nil},
		}
		denied := 0
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tt.c.host = reviewsHost
				a := tt.from.must(t, reviews, tt.c)
				if a.status != tt.want {
					t.Fatalf("%s %s from %s: got %v, want %d", cmpOr(tt.c.method, "GET"), tt.c.path, tt.from.pod.Name, a, tt.want)
				}
				if tt.want == 403 {
					denied++
					if got := strings.TrimSpace(string(a.body)); got != rbacDenied || a.from() != "mesh" {
						t.Errorf("403 body %q from %s, want %q from the mesh (the app must not see the request)", got, a.from(), rbacDenied)
					}
					return
				}
				versionOf(t, a)
				if tt.check != nil {
					tt.check(t, a)
				}
			})
		}
		deniedAfter := l.agentMetric(t, v1.Node, "fibmesh_agent_proxy_rbac_denied_total")
		if v2.Node != v1.Node {
			deniedAfter += l.agentMetric(t, v2.Node, "fibmesh_agent_proxy_rbac_denied_total")
		}
		if got := deniedAfter - deniedBefore; got < float64(denied) {
			t.Errorf("fibmesh_agent_proxy_rbac_denied_total on the reviews nodes grew by %v, want ≥ %d (the 403s)", got, denied)
		}
	})

	t.Run("examples/README's commands", func(t *testing.T) {
		// As a user types them: curl in the pods by service name (the
		// mesh's DNS), through fibmesh-lab exec.
		for _, tt := range []struct {
			pod     string
			args    []string
			status  string
			version string // of the echo reply; "" for a 403
		}{
			{"production/deploy/frontend", []string{"reviews:9080/api/reviews/1"}, "200", "v1|v2"},
			{"production/deploy/frontend", []string{"-H", "x-canary-user: true", "reviews:9080/api/reviews/1"}, "200", "v2"},
			{"production/deploy/frontend", []string{"-X", "POST", "reviews:9080/api/reviews/1"}, "403", ""},
			{"production/client", []string{"reviews:9080/api/reviews/1"}, "403", ""},
		} {
			args := append([]string{"curl", "-s", "-m", "10", "-w", "\n%{http_code}"}, tt.args...)
			out, err := l.exec(tt.pod, args...)
			// The body, then the status on the last line.
			trimmed := strings.TrimSpace(string(out))
			i := strings.LastIndexByte(trimmed, '\n')
			body, code := trimmed[:max(i, 0)], trimmed[i+1:]
			if err != nil || code != tt.status {
				t.Errorf("fibmesh-lab exec %s -- %s: %v, status %q, want %s:\n%s", tt.pod, strings.Join(args, " "), err, code, tt.status, out)
				continue
			}
			if tt.version == "" {
				if body != rbacDenied {
					t.Errorf("%s %v: body %q, want %q", tt.pod, tt.args, body, rbacDenied)
				}
				continue
			}
			var r echo.Reply
			if err := json.Unmarshal([]byte(body), &r); err != nil || !slices.Contains(strings.Split(tt.version, "|"), r.Version) || r.Service != "reviews" {
				t.Errorf("%s %v: reply %q (%v), want reviews %s", tt.pod, tt.args, body, err, tt.version)
			}
		}
	})

	t.Run("ratings timeout 3s", func(t *testing.T) {
		// 12-ratings.yaml: timeout 3s; the app is asked to take 4 s.
		waitL7(t, frontend, ratings, call{path: "/", host: "ratings:9080"}, 200)
		checkTimeout(t, frontend, ratings, call{path: "/", host: "ratings:9080", hdr: []string{echo.HeaderDelay, "4s"}}, 3*time.Second, 1)
	})
}

// checkTimeout sends c n times (one at a time) and checks each gets a
// 504 made by the mesh, the median after timeout ±10%; it logs the
// measured figures.
func checkTimeout(t *testing.T, pc *podClient, addr netip.AddrPort, c call, timeout time.Duration, n int) {
	t.Helper()
	var took []time.Duration
	for range n {
		a := pc.must(t, addr, c)
		took = append(took, a.took)
		if a.status != http.StatusGatewayTimeout || a.from() != "mesh" {
			t.Errorf("want 504 from the mesh after %v, got %v", timeout, a)
		}
		if a.took < timeout*9/10 {
			t.Errorf("answered after %v, before the route's timeout %v", a.took, timeout)
		}
	}
	slices.Sort(took)
	med := took[len(took)/2]
	t.Logf("timeout %v: measured %v (median %v, %+.1f%%)", timeout, took, med, 100*(float64(med)/float64(timeout)-1))
	if med < timeout*9/10 || med > timeout*11/10 {
		t.Errorf("timeout %v: median answer after %v, want within ±10%%", timeout, med)
	}
}

// TestL7Mesh runs testdata/l7: a caller on node1 calls backends on both
// nodes through the agents. Subtests share the lab (its start-up is the
// slow part).
func TestL7Mesh(t *testing.T) {
	l := upMesh(t, l7Prefix, manifestsIn(t, "testdata/l7"))
	diagnoseOnFailure(t, l, "node1")
	caller := newPodClient(t, l.pod(t, "l7", "caller"))
	stranger := newPodClient(t, l.pod(t, "l7", "stranger"))
	web := l.serviceVIP(t, "l7", "web", 8080)
	retry := l.serviceVIP(t, "l7", "retry", 8080)
	flaky := l.serviceVIP(t, "l7", "flaky", 8080)
	narrow := l.serviceVIP(t, "l7", "narrow", 8080)
	guarded := l.serviceVIP(t, "l7", "guarded", 8080)
	rpc := l.serviceVIP(t, "l7", "rpc", 9090)
	waitL7(t, caller, web, call{host: "web:8080"}, 200)
	callerID, backendID := spiffe("l7", "caller"), spiffe("l7", "backend")

	t.Run("protocols", func(t *testing.T) {
		t.Run("HTTP/1.1 and h2c: who answered, headers", func(t *testing.T) {
			for _, h2c := range []bool{false, true} {
				trace := []string{"Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
					"X-B3-Traceid", "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-Spanid", "e457b5a2e4d86bd1", "X-B3-Sampled", "1"}
				// An app's own x-forwarded-client-cert is not forwarded
				// (Istio's outbound SANITIZE): the server's app sees one
				// element, the verified caller (checkMeshHeaders).
				forged := []string{"X-Forwarded-Client-Cert", "By=spiffe://cluster.local/ns/l7/sa/backend;URI=spiffe://cluster.local/ns/l7/sa/admin"}
				a := caller.must(t, web, call{path: "/hello", host: "web:8080", hdr: append(append([]string{"X-Request-Id", "e7-proto"}, forged...), trace...), h2c: h2c})
				if a.status != 200 || a.from() != "backend-0" {
					t.Errorf("h2c=%v: got %v, want 200 from backend-0", h2c, a)
					continue
				}
				checkMeshHeaders(t, a, callerID, backendID)
				if x := a.reply.Headers.Values("X-Forwarded-Client-Cert"); len(x) != 1 || strings.Contains(x[0], "sa/admin") || strings.Count(x[0], "URI=") != 1 {
					t.Errorf("h2c=%v: the app saw x-forwarded-client-cert %q, want only the verified caller's element (the app's own dropped)", h2c, x)
				}
				for i := 0; i < len(trace); i += 2 {
					if got := a.reply.Headers.Get(trace[i]); got != trace[i+1] {
						t.Errorf("h2c=%v: %s %q reached the app, want %q passed through unchanged", h2c, trace[i], got, trace[i+1])
					}
				}
				if a.reply.Headers.Get("X-Request-Id") != "e7-proto" || a.reply.Path != "/hello" || a.reply.Host != "web:8080" {
					t.Errorf("h2c=%v: the app saw x-request-id %q, path %q, host %q; want e7-proto, /hello, web:8080", h2c, a.reply.Headers.Get("X-Request-Id"), a.reply.Path, a.reply.Host)
				}
			}
			// On a port named grpc the request stays HTTP/2 end to end.
			a := caller.must(t, rpc, call{path: "/h2", host: "rpc:9090", h2c: true})
			if a.status != 200 || a.from() != "rpc-0" || a.reply.Proto != "HTTP/2.0" {
				t.Errorf("h2c to the grpc port: got %v (proto %q), want 200 from rpc-0 over HTTP/2.0", a, a.reply.Proto)
			} else {
				checkMeshHeaders(t, a, callerID, spiffe("l7", "rpc"))
			}
		})

		t.Run("gRPC health check", func(t *testing.T) {
			conn, err := grpc.NewClient("passthrough:///rpc:9090",
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
					return caller.dial(ctx, "tcp", rpc.String())
				}))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			hc := healthpb.NewHealthClient(conn)
			for _, tt := range []struct {
				service string
				want    healthpb.HealthCheckResponse_ServingStatus
				code    codes.Code
			}{
				{"", healthpb.HealthCheckResponse_SERVING, codes.OK},
				{"rpc", healthpb.HealthCheckResponse_SERVING, codes.OK},
				{"no-such-service", 0, codes.NotFound},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: tt.service})
				cancel()
				if status.Code(err) != tt.code {
					t.Errorf("Check(%q): %v, want code %v", tt.service, err, tt.code)
					continue
				}
				if err == nil && resp.GetStatus() != tt.want {
					t.Errorf("Check(%q) = %v, want %v", tt.service, resp.GetStatus(), tt.want)
				}
			}
			// A server stream: Watch sends the status at once and keeps
			// the stream open.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "rpc"})
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			if resp, err := w.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Watch: first message %v, %v; want SERVING", resp, err)
			}
		})

		t.Run("h2load", func(t *testing.T) {
			if _, err := exec.LookPath("h2load"); err != nil {
				t.Fatalf("h2load is missing: apt-get install nghttp2-client (Debian's; make deps installs it where hack/deps.sh runtime lists it): %v", err)
			}
			for _, tt := range []struct {
				name string
				addr netip.AddrPort
			}{{"grpc port", rpc}, {"http port", web}} {
				// 4 connections, 10 streams each at a time, 1,000 requests.
				out, err := l.exec("l7/caller", "h2load", "-n", "1000", "-c", "4", "-m", "10", "-T", "10", "http://"+tt.addr.String()+"/h2load")
				t.Logf("h2load to %s (%s):\n%s", tt.name, tt.addr, lastLines(string(out), 14))
				if err != nil {
					t.Errorf("h2load to %s: %v", tt.name, err)
					continue
				}
				checkH2load(t, tt.name, string(out), 1000)
			}
		})

		t.Run("large bodies, concurrent, both ways", func(t *testing.T) {
			for _, tc := range []struct {
				name string
				to   netip.AddrPort
				host string
				h2c  bool
			}{{"HTTP/1.1 to the http port", web, "web:8080", false}, {"h2c to the http port", web, "web:8080", true}, {"h2c to the grpc port", rpc, "rpc:9090", true}} {
				t.Run(tc.name, func(t *testing.T) {
					var wg sync.WaitGroup
					var mu sync.Mutex
					var errs []error
					fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					for i := range 4 {
						wg.Go(func() { // upload, half of them with no length
							body := make([]byte, 3<<20+i*4099)
							for j := range body {
								body[j] = byte(j*7 + j>>12 + i)
							}
							a, err := caller.do(ctx, tc.to, call{method: "POST", path: "/upload", host: tc.host, h2c: tc.h2c, body: body, chunked: i%2 == 1})
							sum := sha256.Sum256(body)
							switch {
							case err != nil:
								fail(err)
							case a.status != 200 || !a.isReply || a.reply.BodyBytes != int64(len(body)) || a.reply.BodySHA256 != hex.EncodeToString(sum[:]):
								fail(fmt.Errorf("upload %d of %d bytes (chunked %v): got %v, app saw %d bytes sha256 %.12s…", i, len(body), i%2 == 1, a, a.reply.BodyBytes, a.reply.BodySHA256))
							}
						})
						wg.Go(func() { // download
							n := 5<<20 + i*7
							a, err := caller.do(ctx, tc.to, call{path: "/download", host: tc.host, h2c: tc.h2c, hdr: []string{echo.HeaderBodyBytes, strconv.Itoa(n)}})
							switch {
							case err != nil:
								fail(err)
							case a.status != 200 || len(a.body) != n:
								fail(fmt.Errorf("download %d of %d bytes: %d %d bytes", i, n, a.status, len(a.body)))
							default:
								if err := echo.CheckPattern(a.body); err != nil {
									fail(fmt.Errorf("download %d: %w", i, err))
								}
							}
						})
					}
					wg.Wait()
					for _, err := range errs {
						t.Error(err)
					}
				})
			}
		})

		t.Run("HTTP/1.1 keep-alive", func(t *testing.T) {
			c := dialPod(t, caller, web)
			br := bufio.NewReader(c)
			const n = 50
			for i := range n {
				fmt.Fprintf(c, "GET /keepalive/%d HTTP/1.1\r\nHost: web:8080\r\nX-Request-Id: e7-ka-%d\r\n\r\n", i, i)
				a := readAnswer(t, br, "GET")
				if a.status != 200 || a.from() != "backend-0" || a.reply.Path != fmt.Sprintf("/keepalive/%d", i) || a.reply.Headers.Get("X-Request-Id") != fmt.Sprintf("e7-ka-%d", i) {
					t.Fatalf("request %d of %d on one connection: got %v, want 200 from backend-0 for /keepalive/%d", i+1, n, a, i)
				}
				if a.header.Get("Connection") == "close" {
					t.Fatalf("request %d: the mesh closes the connection (Connection: close)", i+1)
				}
			}
		})

		t.Run("HTTP/1.1 Expect: 100-continue, HEAD, an escaped path and query", func(t *testing.T) {
			c := dialPod(t, caller, web)
			br := bufio.NewReader(c)
			body := strings.Repeat("x", 4096)
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: web:8080\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
			// The client waits for 100 Continue before it sends the body
			// (curl does for large uploads); the final answer follows.
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusContinue {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("got %s %q, want 100 Continue before the body is sent", resp.Status, b)
			}
			io.WriteString(c, body)
			if a := readAnswer(t, br, "POST"); a.status != 200 || a.reply.BodyBytes != int64(len(body)) {
				t.Errorf("after 100 Continue: got %v, app saw %d body bytes; want 200 and %d", a, a.reply.BodyBytes, len(body))
			}
			// HEAD: headers only, the length of the GET's body.
			fmt.Fprintf(c, "HEAD /head HTTP/1.1\r\nHost: web:8080\r\n%s: 12345\r\n\r\n", echo.HeaderBodyBytes)
			if a := readAnswer(t, br, "HEAD"); a.status != 200 || len(a.body) != 0 || a.header.Get("Content-Length") != "12345" || a.header.Get(echo.HeaderPod) != "backend-0" {
				t.Errorf("HEAD: got %d, %d body bytes, Content-Length %q, pod %q; want 200, none, 12345, backend-0", a.status, len(a.body), a.header.Get("Content-Length"), a.header.Get(echo.HeaderPod))
			}
			// Dot segments are removed before routing, and the app gets
			// the normalized path (Envoy's normalize_path, Istio's BASE).
			fmt.Fprintf(c, "GET /a/./b/../c HTTP/1.1\r\nHost: web:8080\r\n\r\n")
			if a := readAnswer(t, br, "GET"); a.status != 200 || a.reply.Path != "/a/c" {
				t.Errorf("GET /a/./b/../c: got %v, the app saw %q, want /a/c", a, a.reply.Path)
			}
			// The same connection still works, and a path and query with
			// reserved escapes reach the app as sent.
			const uri = "/api/a%2Fb/caf%C3%A9?q=a%20b&r=%2F&empty="
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: web:8080\r\n\r\n", uri)
			if a := readAnswer(t, br, "GET"); a.status != 200 || a.reply.Path != uri {
				t.Errorf("GET %s: got %v, the app saw %q", uri, a, a.reply.Path)
			}
		})

		t.Run("HTTP/1.1 pipelining", func(t *testing.T) {
			c := dialPod(t, caller, web)
			var reqs strings.Builder
			for i := range 3 {
				fmt.Fprintf(&reqs, "GET /pipelined/%d HTTP/1.1\r\nHost: web:8080\r\nX-Request-Id: e7-pipe-%d\r\n\r\n", i, i)
			}
			if _, err := io.WriteString(c, reqs.String()); err != nil { // one write
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			for i := range 3 {
				a := readAnswer(t, br, "GET")
				if a.status != 200 || a.reply.Path != fmt.Sprintf("/pipelined/%d", i) || a.reply.Headers.Get("X-Request-Id") != fmt.Sprintf("e7-pipe-%d", i) {
					t.Errorf("pipelined answer %d: got %v (path %q), want 200 for /pipelined/%d, in order", i, a, a.reply.Path, i)
				}
			}
		})

		t.Run("Upgrade: websocket passes through", func(t *testing.T) {
			c := dialPod(t, caller, web)
			const key = "dGhlIHNhbXBsZSBub25jZQ=="
			fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", key)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
				resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) || resp.Header.Get(echo.HeaderPod) != "backend-0" {
				t.Fatalf("got %s %v, want 101 from backend-0 with Upgrade: websocket and the key's Sec-WebSocket-Accept", resp.Status, resp.Header)
			}
			for i := range 20 {
				msg := fmt.Sprintf("frame %d after the upgrade, both ways;", i)
				if _, err := io.WriteString(c, msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
					t.Fatalf("echo %d: %q, %v; want %q", i, got, err, msg)
				}
			}
		})

		t.Run("other upgrades: 403 for unknown protocols, h2c served as HTTP/1.1", func(t *testing.T) {
			// Istio allows websocket upgrades only: Envoy answers 403
			// (upgrade_failed) to others, ignores Upgrade: h2c, and the
			// connection stays HTTP either way.
			c := dialPod(t, caller, web)
			br := bufio.NewReader(c)
			fmt.Fprintf(c, "GET /other HTTP/1.1\r\nHost: web:8080\r\nConnection: Upgrade\r\nUpgrade: fibtest/1\r\n\r\n")
			if a := readAnswer(t, br, "GET"); a.status != 403 || a.from() != "mesh" {
				t.Errorf("Upgrade: fibtest/1: got %v, want 403 from the mesh", a)
			}
			fmt.Fprintf(c, "GET /after-refused HTTP/1.1\r\nHost: web:8080\r\n\r\n")
			if a := readAnswer(t, br, "GET"); a.status != 200 || a.reply.Path != "/after-refused" {
				t.Errorf("the next request on the connection: got %v, want 200 for /after-refused", a)
			}
			fmt.Fprintf(c, "GET /h2c-upgrade HTTP/1.1\r\nHost: web:8080\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
			if a := readAnswer(t, br, "GET"); a.status != 200 || a.reply.Path != "/h2c-upgrade" {
				t.Errorf("Upgrade: h2c: got %v, want 200 in HTTP/1.1 for /h2c-upgrade", a)
			}
			fmt.Fprintf(c, "GET /after-h2c HTTP/1.1\r\nHost: web:8080\r\n\r\n")
			if a := readAnswer(t, br, "GET"); a.status != 200 || a.reply.Path != "/after-h2c" {
				t.Errorf("the next request on the connection: got %v, want 200 for /after-h2c", a)
			}
		})
	})

	t.Run("route matching", func(t *testing.T) {
		// testdata/l7/25-router.yaml: each route marks itself with an
		// abort status (461..468); the last one sends to the app.
		router := l.serviceVIP(t, "l7", "router", 8080)
		testenv.Eventually(t, 60*time.Second, "router's first route in force", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if a, err := caller.do(ctx, router, call{host: "router:8080", path: "/exact"}); err != nil || a.status != 461 {
				return fmt.Errorf("GET /exact: %v, %v", a, err)
			}
			return nil
		})
		tests := []struct {
			name string
			c    call
			want int
		}{
			{"uri exact", call{path: "/exact"}, 461},
			{"uri exact is not a prefix", call{path: "/exact/more"}, 200},
			{"uri exact ignores the query", call{path: "/exact?x=1"}, 461},
			{"uri prefix", call{path: "/prefix/x"}, 462},
			{"uri prefix needs its slash", call{path: "/prefix"}, 200},
			{"uri regex (a full match)", call{path: "/re/123"}, 463},
			{"uri regex does not match part of a path", call{path: "/re/12x"}, 200},
			{"header prefix", call{hdr: []string{"X-H", "prefixed"}}, 464},
			{"header regex (a full match)", call{hdr: []string{"X-H", "rx-abc"}}, 465},
			{"header regex is case-sensitive", call{hdr: []string{"X-H", "rx-ABC"}}, 200},
			{"method", call{method: "DELETE"}, 466},
			{"header presence", call{hdr: []string{"X-P", "anything"}}, 467},
			{"the first route that matches wins", call{path: "/prefix/x", hdr: []string{"X-H", "prefixed", "X-P", "1"}}, 462},
			{"a match block needs all its conditions", call{path: "/a/1"}, 200},
			{"all conditions of a block", call{path: "/a/1", hdr: []string{"X-And", "1"}}, 468},
			{"any block of a route", call{path: "/b/1"}, 468},
			{"no route but the last", call{path: "/elsewhere", hdr: []string{"X-H", "other"}}, 200},
		}
		for _, tt := range tests {
			for _, h2c := range []bool{false, true} {
				tt.c.host, tt.c.h2c = "router:8080", h2c
				a := caller.must(t, router, tt.c)
				want := "the mesh"
				if tt.want == 200 {
					want = "backend-0"
				}
				if a.status != tt.want || (tt.want == 200) != (a.from() == "backend-0") {
					t.Errorf("%s (%s %s, headers %q, h2c %v): got %v, want %d from %s", tt.name, cmpOr(tt.c.method, "GET"), cmpOr(tt.c.path, "/"), tt.c.hdr, h2c, a, tt.want, want)
				}
			}
		}
	})

	t.Run("retries", func(t *testing.T) {
		waitL7(t, caller, retry, call{host: "retry:8080"}, 200)
		waitL7(t, caller, web, call{host: "web:8080"}, 200)
		tests := []struct {
			name       string
			to         netip.AddrPort
			host       string
			route      string
			failFirst  int
			failStatus int // 0: the app's 503
			want       int
			attempts   int // tries the app saw (x-echo-attempt of the last)
		}{
			// Istio's attempts is the number of retries (Envoy's
			// num_retries): attempts: 3 allows 4 tries.
			{"attempts 3, the first two fail: the third succeeds", retry, "retry:8080", "retry-3", 2, 0, 200, 3},
			{"attempts 3, the first four fail: 503 after 4 tries", retry, "retry:8080", "retry-3", 4, 0, 503, 4},
			{"attempts 1, the first two fail: 503 after 2 tries", retry, "retry:8080", "retry-1", 2, 0, 503, 2},
			{"attempts 0 (timeout route), the first fails: no retry", retry, "retry:8080", "timeout", 1, 0, 503, 1},
			// retryOn conditions.
			{"5xx retries a 500", retry, "retry:8080", "retry-3", 2, 500, 200, 3},
			{"gateway-error retries a 502", retry, "retry:8080", "retry-gw", 1, 502, 200, 2},
			{"gateway-error retries a 504", retry, "retry:8080", "retry-gw", 1, 504, 200, 2},
			{"gateway-error does not retry a 500", retry, "retry:8080", "retry-gw", 1, 500, 500, 1},
			{"retryOn 409 retries a 409", retry, "retry:8080", "retry-409", 1, 409, 200, 2},
			{"retryOn 409 does not retry a 503", retry, "retry:8080", "retry-409", 1, 503, 503, 1},
			// No VirtualService: Istio's default policy, 2 retries on
			// connect-failure, refused-stream, unavailable, cancelled and
			// retriable-status-codes 503.
			{"no VirtualService, the first two 503: the third succeeds", web, "web:8080", "", 2, 0, 200, 3},
			{"no VirtualService, the first three 503: 503 after 3 tries", web, "web:8080", "", 3, 0, 503, 3},
			{"no VirtualService, a 500 is not retried", web, "web:8080", "", 1, 500, 500, 1},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				key := fmt.Sprintf("e7-retry-%d-%d", i, time.Now().UnixNano())
				hdr := []string{"X-Route", tt.route, echo.HeaderFailFirst, strconv.Itoa(tt.failFirst), echo.HeaderAttemptKey, key, "X-Request-Id", key}
				if tt.failStatus != 0 {
					hdr = append(hdr, echo.HeaderFailStatus, strconv.Itoa(tt.failStatus))
				}
				a := caller.must(t, tt.to, call{host: tt.host, hdr: hdr})
				if a.status != tt.want || a.from() != "backend-0" || a.header.Get(echo.HeaderAttempt) != strconv.Itoa(tt.attempts) {
					t.Errorf("got %v, %s %q; want %d from backend-0 after %d tries", a, echo.HeaderAttempt, a.header.Get(echo.HeaderAttempt), tt.want, tt.attempts)
				}
				if a.isReply && a.reply.Headers.Get("X-Request-Id") != key {
					t.Errorf("the last try carried x-request-id %q, want %q (a retry keeps the request's id)", a.reply.Headers.Get("X-Request-Id"), key)
				}
				// No try is left over: the next request is the app's
				// attempts+1-th with this key.
				b := caller.must(t, tt.to, call{host: tt.host, hdr: []string{"X-Route", "timeout", echo.HeaderAttemptKey, key}})
				if b.header.Get(echo.HeaderAttempt) != strconv.Itoa(tt.attempts+1) {
					t.Errorf("after it, the app counts %q tries with the key, want %d: the mesh tried %q times, not %d", b.header.Get(echo.HeaderAttempt), tt.attempts+1, b.header.Get(echo.HeaderAttempt), tt.attempts)
				}
			})
		}
	})

	t.Run("a retried request carries its whole body every try", func(t *testing.T) {
		// Envoy buffers a request body for retries up to its buffer limit
		// (the listener's per_connection_buffer_limit_bytes, 1 MiB),
		// whether its length is known or not (chunked HTTP/1.1, HTTP/2
		// without content-length: every gRPC call): each try reaches the
		// app whole.
		for _, tc := range []struct {
			name    string
			size    int
			h2c     bool
			chunked bool
		}{
			{"HTTP/1.1, 20 kB with a length", 20_000, false, false},
			{"HTTP/1.1, 20 kB chunked", 20_000, false, true},
			{"h2c, 20 kB with content-length", 20_000, true, false},
			{"h2c, 20 kB without content-length (as gRPC sends)", 20_000, true, true},
			{"HTTP/1.1, 200 kB with a length (under Envoy's 1 MiB)", 200_000, false, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body := make([]byte, tc.size)
				for i := range body {
					body[i] = byte(i*31 + i>>9)
				}
				sum := sha256.Sum256(body)
				key := fmt.Sprintf("e7-body-retry-%d", time.Now().UnixNano())
				a := caller.must(t, retry, call{method: "POST", path: "/orders", host: "retry:8080", h2c: tc.h2c, body: body, chunked: tc.chunked,
					hdr: []string{"X-Route", "retry-3", echo.HeaderFailFirst, "2", echo.HeaderAttemptKey, key}})
				if a.status != 200 || a.reply.Attempt != 3 || a.reply.BodyBytes != int64(len(body)) || a.reply.BodySHA256 != hex.EncodeToString(sum[:]) {
					t.Errorf("got %d from %s: try %d, the app read %d bytes (sha256 %.12s…); want 200 on try 3 with all %d bytes", a.status, a.from(), a.reply.Attempt, a.reply.BodyBytes, a.reply.BodySHA256, len(body))
				}
			})
		}
	})

	t.Run("a retry goes to another endpoint", func(t *testing.T) {
		// spread: flaky-good-0, flaky-good-1 and flaky-bad (500), RANDOM.
		spread := l.serviceVIP(t, "l7", "spread", 8080)
		const n = 90
		waitL7(t, caller, spread, call{host: "spread:8080"}, 200)
		bad := 0
		for _, a := range caller.fanOut(t, spread, n, 4, func(int) call { return call{host: "spread:8080", hdr: []string{"X-Route", "once"}} }) {
			switch {
			case a.status == 500 && a.from() == "flaky-bad":
				bad++
			case a.status != 200 || !strings.HasPrefix(a.from(), "flaky-good-"):
				t.Errorf("got %v, want 200 from flaky-good-* or 500 from flaky-bad", a)
			}
		}
		checkBinomial(t, "no retries: answers by flaky-bad (RANDOM over 3)", bad, n, 1.0/3)
		// One retry on 5xx, on another host: every request succeeds.
		for _, a := range caller.fanOut(t, spread, n, 4, func(int) call { return call{host: "spread:8080"} }) {
			if a.status != 200 || !strings.HasPrefix(a.from(), "flaky-good-") {
				t.Errorf("with 1 retry on 5xx: got %v, want 200 from flaky-good-* (the retry avoids the host that failed)", a)
			}
		}
	})

	t.Run("per-try timeout", func(t *testing.T) {
		// attempts 2, perTryTimeout 0.3s, retryOn 5xx (a per-try timeout
		// is a 504, so retried): three tries time out, then 504, after
		// about 0.9 s (plus Envoy's retry back-off, 25 ms base).
		key := fmt.Sprintf("e7-pertry-%d", time.Now().UnixNano())
		a := caller.must(t, retry, call{host: "retry:8080", hdr: []string{"X-Route", "per-try", echo.HeaderDelay, "2s", echo.HeaderAttemptKey, key}})
		t.Logf("per-try timeout 0.3s × 3 tries: %v", a)
		if a.status != http.StatusGatewayTimeout || a.from() != "mesh" || a.took < 900*time.Millisecond || a.took > 1500*time.Millisecond {
			t.Errorf("got %v, want 504 from the mesh after 0.9..1.5 s", a)
		}
		b := caller.must(t, retry, call{host: "retry:8080", hdr: []string{"X-Route", "timeout", echo.HeaderAttemptKey, key}})
		if b.header.Get(echo.HeaderAttempt) != "4" {
			t.Errorf("the app counts %q tries before this one, want 3 (1 + 2 retries)", b.header.Get(echo.HeaderAttempt))
		}
	})

	t.Run("route timeout caps the retries", func(t *testing.T) {
		// timeout 1s over attempts 5 × perTryTimeout 0.4s: the whole
		// request, retries included, ends after 1 s (Istio's timeout).
		checkTimeout(t, caller, retry, call{host: "retry:8080", hdr: []string{"X-Route", "capped", echo.HeaderDelay, "2s"}}, time.Second, 3)
	})

	t.Run("timeout 500ms", func(t *testing.T) {
		checkTimeout(t, caller, retry, call{host: "retry:8080", hdr: []string{"X-Route", "timeout", echo.HeaderDelay, "2s"}}, 500*time.Millisecond, 5)
		// Within the timeout the answer is the app's.
		if a := caller.must(t, retry, call{host: "retry:8080", hdr: []string{"X-Route", "timeout", echo.HeaderDelay, "100ms"}}); a.status != 200 || a.from() != "backend-0" {
			t.Errorf("a 100ms answer under a 500ms timeout: got %v, want 200 from backend-0", a)
		}
	})

	t.Run("fault abort 50%", func(t *testing.T) {
		const n = 400
		as := caller.fanOut(t, retry, n, 8, func(i int) call {
			return call{host: "retry:8080", hdr: []string{"X-Route", "abort", "X-Request-Id", fmt.Sprintf("e7-abort-%d", i)}}
		})
		aborted := 0
		for _, a := range as {
			switch {
			case a.status == 418 && a.from() == "mesh":
				aborted++
			case a.status == 200 && a.from() == "backend-0":
			default:
				t.Errorf("got %v, want 418 from the mesh or 200 from backend-0", a)
			}
		}
		checkBinomial(t, "requests aborted with 418", aborted, n, 0.5)
	})

	t.Run("fault delay 1s", func(t *testing.T) {
		for range 3 {
			a := caller.must(t, retry, call{host: "retry:8080", hdr: []string{"X-Route", "delay"}})
			t.Logf("delayed answer after %v", a.took)
			if a.status != 200 || a.from() != "backend-0" || a.took < time.Second || a.took > 1500*time.Millisecond {
				t.Errorf("got %v, want 200 from backend-0 after 1s..1.5s", a)
			}
		}
		if a := caller.must(t, retry, call{host: "retry:8080"}); a.took > 500*time.Millisecond {
			t.Errorf("the default route (no fault) took %v", a.took)
		}
	})

	t.Run("outlier detection", func(t *testing.T) {
		checkOutlier(t, caller, flaky)
	})

	t.Run("consistent hash on x-user", func(t *testing.T) {
		sticky := l.serviceVIP(t, "l7", "sticky", 8080)
		waitL7(t, caller, sticky, call{host: "sticky:8080", hdr: []string{"X-User", "u0"}}, 200)
		const users, each = 24, 5
		as := caller.fanOut(t, sticky, users*each, 8, func(i int) call {
			return call{host: "sticky:8080", hdr: []string{"X-User", fmt.Sprintf("user-%d", i%users)}}
		})
		podOf := map[string]string{}
		perPod := map[string]int{}
		for i, a := range as {
			u := fmt.Sprintf("user-%d", i%users)
			if a.status != 200 || !strings.HasPrefix(a.from(), "flaky-good-") {
				t.Errorf("%s: got %v, want 200 from flaky-good-*", u, a)
				continue
			}
			if p, ok := podOf[u]; ok && p != a.from() {
				t.Errorf("%s answered by %s and by %s, want one pod per x-user", u, p, a.from())
			}
			if _, ok := podOf[u]; !ok {
				perPod[a.from()]++
			}
			podOf[u] = a.from()
		}
		t.Logf("%d users over the pods: %v", users, perPod)
		// With 2 pods, all 24 users on one has probability 2^-23.
		if len(perPod) != 2 {
			t.Errorf("users by pod %v: want both good pods used", perPod)
		}
	})

	t.Run("consistent hash on a cookie the mesh sets (MAGLEV)", func(t *testing.T) {
		cookieSvc := l.serviceVIP(t, "l7", "cookie", 8080)
		waitL7(t, caller, cookieSvc, call{host: "cookie:8080", hdr: []string{"Cookie", "e7-session=warm-up"}}, 200)
		// No cookie: the mesh picks an endpoint and sets one that leads
		// back to it (Envoy's generated cookie: name, path, Max-Age).
		first := caller.must(t, cookieSvc, call{host: "cookie:8080"})
		var session *http.Cookie
		for _, line := range first.header.Values("Set-Cookie") {
			if c, err := http.ParseSetCookie(line); err == nil && c.Name == "e7-session" {
				session = c
			}
		}
		if first.status != 200 || !strings.HasPrefix(first.from(), "flaky-good-") || session == nil || session.Value == "" || session.Path != "/" || session.MaxAge != 3600 {
			t.Fatalf("first request: got %v, Set-Cookie %q; want 200 from flaky-good-* and e7-session with Path=/ and Max-Age=3600", first, first.header.Values("Set-Cookie"))
		}
		for i := range 10 {
			a := caller.must(t, cookieSvc, call{host: "cookie:8080", hdr: []string{"Cookie", "e7-session=" + session.Value}})
			if a.status != 200 || a.from() != first.from() {
				t.Fatalf("request %d with the cookie the mesh set: got %v, want %s (the first answer's pod)", i, a, first.from())
			}
			if a.header.Get("Set-Cookie") != "" {
				t.Errorf("request %d sent the cookie and got another: %q", i, a.header.Get("Set-Cookie"))
			}
		}
		// Cookies of many sessions: each keeps its pod, both pods used.
		const sessions, each = 24, 4
		as := caller.fanOut(t, cookieSvc, sessions*each, 8, func(i int) call {
			return call{host: "cookie:8080", hdr: []string{"Cookie", fmt.Sprintf("other=1; e7-session=s-%d", i%sessions)}}
		})
		podOf, perPod := map[int]string{}, map[string]int{}
		for i, a := range as {
			if a.status != 200 {
				t.Errorf("session %d: got %v", i%sessions, a)
				continue
			}
			if p, ok := podOf[i%sessions]; ok && p != a.from() {
				t.Errorf("session %d answered by %s and by %s, want one pod per cookie", i%sessions, p, a.from())
			} else if !ok {
				podOf[i%sessions] = a.from()
				perPod[a.from()]++
			}
		}
		t.Logf("%d sessions over the pods: %v", sessions, perPod)
		if len(perPod) != 2 {
			t.Errorf("sessions by pod %v: want both good pods used", perPod)
		}
	})

	t.Run("circuit breaker", func(t *testing.T) {
		waitL7(t, caller, narrow, call{host: "narrow:8080"}, 200)
		isOverflow := func(name string) bool { return strings.Contains(name, "overflow") }
		// HTTP/1.1 (8 app connections) and h2c (8 streams on one): the
		// limits are the upstream's, whatever the app speaks.
		for _, h2c := range []bool{false, true} {
			before := l.metricMatching(t, caller.pod.Node, isOverflow)
			// n slow requests at once: one has the connection, one waits,
			// the rest overflow at once (Envoy: 503, x-envoy-overloaded).
			const n = 8
			var wg sync.WaitGroup
			as := make([]answer, n)
			errs := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					as[i], errs[i] = caller.do(ctx, narrow, call{host: "narrow:8080", h2c: h2c, hdr: []string{echo.HeaderDelay, "1s", "X-Request-Id", fmt.Sprintf("e7-cb-%d", i)}})
				})
			}
			close(start)
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			ok, overflow := 0, 0
			for _, a := range as {
				switch {
				case a.status == 200 && a.from() == "narrow-0":
					ok++
				case a.status == 503 && a.from() == "mesh":
					overflow++
					if a.took > 900*time.Millisecond {
						t.Errorf("an overflow answered after %v: it waited instead of failing fast", a.took)
					}
					if a.header.Get("X-Envoy-Overloaded") == "" {
						t.Logf("note: overflow 503 without x-envoy-overloaded (Envoy sets it): %v", a)
					}
				default:
					t.Errorf("got %v, want 200 from narrow-0 or a 503 overflow from the mesh", a)
				}
			}
			t.Logf("h2c %v: %d concurrent requests: %d answered, %d overflowed", h2c, n, ok, overflow)
			if ok < 1 || ok > 2 || overflow != n-ok {
				t.Errorf("h2c %v: maxConnections 1 + http1MaxPendingRequests 1: %d answered and %d overflowed, want 1..2 answered (one on the connection, one pending) and the rest overflowed", h2c, ok, overflow)
			}
			after := l.metricMatching(t, caller.pod.Node, isOverflow)
			t.Logf("%s's agent: metrics named *overflow* %v → %v", caller.pod.Node, before, after)
			if after-before < float64(overflow) {
				t.Errorf("%s's agent: metrics named *overflow* grew by %v, want ≥ %d (the overflows)", caller.pod.Node, after-before, overflow)
			}
		}
		// The pool recovers.
		if a := caller.must(t, narrow, call{host: "narrow:8080"}); a.status != 200 {
			t.Errorf("after the burst: got %v, want 200", a)
		}
	})

	t.Run("mixed load: many services, both protocols, at once", func(t *testing.T) {
		// Pools, breakers and tunnels under concurrency: every request
		// answered by the right app, none lost.
		sticky := l.serviceVIP(t, "l7", "sticky", 8080)
		targets := []struct {
			to   netip.AddrPort
			host string
			pod  string // prefix of the answering pod
			hdr  []string
		}{
			{web, "web:8080", "backend-0", nil},
			{retry, "retry:8080", "backend-0", nil},
			{rpc, "rpc:9090", "rpc-0", nil},
			{sticky, "sticky:8080", "flaky-good-", []string{"X-User", "mixed"}},
			{guarded, "guarded:8080", "guarded-0", []string{"X-Tenant", "acme"}},
		}
		const n = 3000
		t0 := time.Now()
		as := caller.fanOut(t, web, n, 24, func(i int) call {
			tg := targets[i%len(targets)]
			return call{to: tg.to, path: fmt.Sprintf("/mixed/%d", i), host: tg.host, h2c: i/len(targets)%2 == 1,
				hdr: append([]string{"X-Request-Id", fmt.Sprintf("e7-mixed-%d", i)}, tg.hdr...)}
		})
		t.Logf("%d requests over %d services, HTTP/1.1 and h2c, 24 at a time: %v", n, len(targets), time.Since(t0).Round(time.Millisecond))
		bad := 0
		for i, a := range as {
			tg := targets[i%len(targets)]
			if a.status != 200 || !strings.HasPrefix(a.from(), tg.pod) || a.reply.Path != fmt.Sprintf("/mixed/%d", i) ||
				a.reply.Headers.Get("X-Request-Id") != fmt.Sprintf("e7-mixed-%d", i) {
				if bad++; bad <= 5 {
					t.Errorf("request %d to %s: got %v (path %q), want 200 from %s* for /mixed/%d", i, tg.host, a, a.reply.Path, tg.pod, i)
				}
			}
		}
		if bad > 5 {
			t.Errorf("... %d wrong answers of %d in all", bad, n)
		}
	})

	t.Run("a route edit applies to open connections", func(t *testing.T) {
		// A keep-alive connection from before the edit; a VirtualService
		// for web written (a 100% abort with 451), then removed.
		c := dialPod(t, caller, web)
		br := bufio.NewReader(c)
		get := func() answer {
			fmt.Fprintf(c, "GET /edit HTTP/1.1\r\nHost: web:8080\r\n\r\n")
			return readAnswer(t, br, "GET")
		}
		if a := get(); a.status != 200 || a.from() != "backend-0" {
			t.Fatalf("before the edit: got %v", a)
		}
		l.write(t, "70-web-abort.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: l7
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web}
    fault:
      abort:
        percentage: {value: 100}
        httpStatus: 451
`)
		took := testenv.Eventually(t, 30*time.Second, "the edit on the open connection", func() error {
			if a := get(); a.status != 451 || a.from() != "mesh" {
				return fmt.Errorf("got %v", a)
			}
			return nil
		})
		t.Logf("the VirtualService written: in force on the open connection after %v", took.Round(time.Millisecond))
		if a := caller.must(t, web, call{host: "web:8080", h2c: true}); a.status != 451 {
			t.Errorf("h2c on a new connection after the edit: got %v, want 451", a)
		}
		l.remove(t, "70-web-abort.yaml")
		took = testenv.Eventually(t, 30*time.Second, "the route back on the open connection", func() error {
			if a := get(); a.status != 200 || a.from() != "backend-0" {
				return fmt.Errorf("got %v", a)
			}
			return nil
		})
		t.Logf("the VirtualService removed: the default route back after %v", took.Round(time.Millisecond))
	})

	t.Run("the edges of the mesh: plaintext in (PERMISSIVE) and out (DISABLE)", func(t *testing.T) {
		outsider := newPodClient(t, l.pod(t, "l7", "outsider"))
		plainIP := podAddr(t, l, "open", "plain-0", 8080)
		plainVIP := l.serviceVIP(t, "open", "plain", 8080)
		legacy := l.serviceVIP(t, "l7", "legacy", 8080)
		waitL7(t, outsider, plainIP, call{path: "/public/ready"}, 200)
		// In, plaintext: the inbound side still routes, generates the
		// request id and decides RBAC per request; there is no client
		// certificate, so no x-forwarded-client-cert.
		a := outsider.must(t, plainIP, call{path: "/public/x", hdr: []string{"X-Forwarded-Client-Cert", "URI=spiffe://cluster.local/ns/l7/sa/caller"}})
		if a.status != 200 || a.from() != "plain-0" {
			t.Fatalf("outsider GET /public/x: got %v, want 200 from plain-0", a)
		}
		if h := a.reply.Headers; !uuidRE.MatchString(h.Get("X-Request-Id")) || h.Get("X-Forwarded-Client-Cert") != "" {
			t.Errorf("outsider GET /public/x (with a forged x-forwarded-client-cert): the app saw x-request-id %q and x-forwarded-client-cert %q; want a generated UUID and none", h.Get("X-Request-Id"), h.Get("X-Forwarded-Client-Cert"))
		}
		for _, c := range []call{{path: "/private"}, {method: "POST", path: "/public/x"}} {
			if a := outsider.must(t, plainIP, c); a.status != 403 || a.from() != "mesh" || strings.TrimSpace(string(a.body)) != rbacDenied {
				t.Errorf("outsider %s %s: got %v, want the mesh's 403 %q", cmpOr(c.method, "GET"), c.path, a, rbacDenied)
			}
		}
		// In, mTLS from a mesh pod to the same PERMISSIVE workload.
		waitL7(t, caller, plainVIP, call{path: "/public/ready", host: "plain.open:8080"}, 200)
		if a := caller.must(t, plainVIP, call{path: "/public/y", host: "plain.open:8080"}); a.status != 200 || a.from() != "plain-0" {
			t.Errorf("caller GET /public/y: got %v, want 200 from plain-0", a)
		} else {
			checkMeshHeaders(t, a, callerID, spiffe("open", "plain"))
		}
		// Out, plaintext to a workload outside the mesh.
		waitL7(t, caller, legacy, call{path: "/old", host: "legacy:8080"}, 200)
		for _, h2c := range []bool{false, true} {
			a := caller.must(t, legacy, call{path: "/old", host: "legacy:8080", h2c: h2c, hdr: []string{"X-Request-Id", "e7-legacy"}})
			if a.status != 200 || a.from() != "outsider" {
				t.Errorf("caller → legacy (h2c %v): got %v, want 200 from outsider", h2c, a)
				continue
			}
			if h := a.reply.Headers; h.Get("X-Request-Id") != "e7-legacy" || h.Get("X-Forwarded-Client-Cert") != "" {
				t.Errorf("caller → legacy (h2c %v): the app saw x-request-id %q, x-forwarded-client-cert %q; want ours and none", h2c, h.Get("X-Request-Id"), h.Get("X-Forwarded-Client-Cert"))
			}
		}
	})

	t.Run("a policy edit applies to open connections", func(t *testing.T) {
		// A keep-alive connection from caller to guarded (allowed); a
		// DENY policy on /orders is written, then removed.
		waitL7(t, caller, guarded, call{host: "guarded:8080", hdr: []string{"X-Tenant", "acme"}}, 200)
		c := dialPod(t, caller, guarded)
		br := bufio.NewReader(c)
		get := func() answer {
			fmt.Fprintf(c, "GET /orders HTTP/1.1\r\nHost: guarded:8080\r\nX-Tenant: acme\r\n\r\n")
			return readAnswer(t, br, "GET")
		}
		h2 := newPodClient(t, caller.pod) // its pooled tunnel and h2c connection are open too
		h2get := func() answer {
			return h2.must(t, guarded, call{path: "/orders", host: "guarded:8080", h2c: true, hdr: []string{"X-Tenant", "acme"}})
		}
		if a, b := get(), h2get(); a.status != 200 || b.status != 200 {
			t.Fatalf("before the edit: %v; h2c %v", a, b)
		}
		l.write(t, "71-guarded-no-orders.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: guarded-no-orders
  namespace: l7
spec:
  selector:
    matchLabels: {app: guarded}
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/orders"]
`)
		took := testenv.Eventually(t, 30*time.Second, "the new DENY on the open connections", func() error {
			a, b := get(), h2get()
			if a.status != 403 || b.status != 403 || strings.TrimSpace(string(a.body)) != rbacDenied {
				return fmt.Errorf("HTTP/1.1 %v; h2c %v", a, b)
			}
			return nil
		})
		t.Logf("the AuthorizationPolicy written: in force on the open connections after %v", took.Round(time.Millisecond))
		l.remove(t, "71-guarded-no-orders.yaml")
		took = testenv.Eventually(t, 30*time.Second, "the DENY gone on the open connections", func() error {
			if a, b := get(), h2get(); a.status != 200 || b.status != 200 {
				return fmt.Errorf("HTTP/1.1 %v; h2c %v", a, b)
			}
			return nil
		})
		t.Logf("the AuthorizationPolicy removed: requests allowed again after %v", took.Round(time.Millisecond))
	})

	t.Run("authorization on a header the mesh does not generate", func(t *testing.T) {
		tests := []struct {
			name string
			from *podClient
			c    call
			want int
		}{
			{"caller with x-tenant: acme", caller, call{path: "/orders", hdr: []string{"X-Tenant", "acme"}}, 200},
			{"caller without x-tenant", caller, call{path: "/orders"}, 403},
			{"caller with x-tenant: other", caller, call{path: "/orders", hdr: []string{"X-Tenant", "other"}}, 403},
			{"caller with x-tenant: acme to /admin/ (DENY first)", caller, call{path: "/admin/users", hdr: []string{"X-Tenant", "acme"}}, 403},
			{"caller h2c with x-tenant: acme", caller, call{path: "/orders", hdr: []string{"X-Tenant", "acme"}, h2c: true}, 200},
			// Paths are normalized before authorization (Istio's sidecars:
			// RFC 3986 dot segments, unreserved percent-encodings), so a
			// spelling of /admin/ cannot slip past the DENY.
			{"caller to /public/../admin/users", caller, call{path: "/public/../admin/users", hdr: []string{"X-Tenant", "acme"}}, 403},
			{"caller to /%61dmin/users", caller, call{path: "/%61dmin/users", hdr: []string{"X-Tenant", "acme"}}, 403},
			{"caller to /./admin/users over h2c", caller, call{path: "/./admin/users", hdr: []string{"X-Tenant", "acme"}, h2c: true}, 403},
			{"stranger with x-tenant: acme", stranger, call{path: "/orders", hdr: []string{"X-Tenant", "acme"}}, 403},
			{"a suffix wildcard: */secret", caller, call{path: "/x/secret", hdr: []string{"X-Tenant", "acme"}}, 403},
			{"a suffix wildcard is not a prefix", caller, call{path: "/secret/x", hdr: []string{"X-Tenant", "acme"}}, 200},
			{"DELETE under notPaths", caller, call{method: "DELETE", path: "/orders/1", hdr: []string{"X-Tenant", "acme"}}, 200},
			{"DELETE elsewhere", caller, call{method: "DELETE", path: "/users/1", hdr: []string{"X-Tenant", "acme"}}, 403},
			{"stranger forging caller's x-forwarded-client-cert", stranger, call{path: "/orders", hdr: []string{"X-Tenant", "acme",
				"X-Forwarded-Client-Cert", "By=spiffe://cluster.local/ns/l7/sa/guarded;URI=spiffe://cluster.local/ns/l7/sa/caller"}}, 403},
		}
		waitL7(t, caller, guarded, call{host: "guarded:8080", hdr: []string{"X-Tenant", "acme"}}, 200)
		node := l.pod(t, "l7", "guarded-0").Node
		const deniedMetric = "fibmesh_agent_proxy_rbac_denied_total"
		byDeny, byDefault := l.metricWith(t, node, deniedMetric, "guarded-no-admin"), l.metricWith(t, node, deniedMetric, "default-deny")
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tt.c.host = "guarded:8080"
				a := tt.from.must(t, guarded, tt.c)
				switch {
				case a.status != tt.want:
					t.Errorf("got %v, want %d", a, tt.want)
				case tt.want == 403 && (strings.TrimSpace(string(a.body)) != rbacDenied || a.from() != "mesh"):
					t.Errorf("got %v, want the mesh's 403 %q", a, rbacDenied)
				case tt.want == 200:
					checkMeshHeaders(t, a, callerID, spiffe("l7", "guarded"))
				}
			})
		}
		// An upgrade RBAC refuses does not open a byte stream: the
		// connection stays HTTP and its next request is decided again.
		c := dialPod(t, caller, guarded)
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET /admin/ws HTTP/1.1\r\nHost: guarded:8080\r\nX-Tenant: acme\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		if a := readAnswer(t, br, "GET"); a.status != 403 || a.from() != "mesh" {
			t.Errorf("websocket upgrade to /admin/ws: got %v, want the mesh's 403", a)
		}
		fmt.Fprintf(c, "GET /admin/users HTTP/1.1\r\nHost: guarded:8080\r\nX-Tenant: acme\r\n\r\n")
		if a := readAnswer(t, br, "GET"); a.status != 403 || a.from() != "mesh" {
			t.Errorf("GET /admin/users after a refused upgrade on the same connection: got %v, want the mesh's 403", a)
		}
		// Counted by the deciding policy: the DENY policy for /admin/,
		// default-deny where no ALLOW matched (4 of them).
		if d := l.metricWith(t, node, deniedMetric, "guarded-no-admin") - byDeny; d != 8 {
			t.Errorf("%s{policy~guarded-no-admin} on %s grew by %v, want 8", deniedMetric, node, d)
		}
		if d := l.metricWith(t, node, deniedMetric, "default-deny") - byDefault; d != 4 {
			t.Errorf("%s{policy=default-deny} on %s grew by %v, want 4", deniedMetric, node, d)
		}
	})

	// Last: it restarts an agent.
	t.Run("the server side's agent restarts: pooled tunnels are replaced", func(t *testing.T) {
		// One keep-alive connection from the caller's app, its requests
		// carried by node1's pooled tunnel to backend-0 on node2; node2's
		// agent is killed (its end of every tunnel goes) and restarted by
		// the lab. Requests may fail while it is gone; once it is back,
		// the same app connection gets answers again (a dead pooled
		// tunnel is not reused forever), and so do new ones over h2c.
		c := dialPod(t, caller, web)
		br := bufio.NewReader(c)
		var broken []string // errors on the app's connection
		get := func() (answer, error) {
			a, err := getOn(c, br)
			if err != nil {
				// The agent closed the app's connection: Envoy keeps a
				// downstream connection across upstream failures (it
				// answers 503 to a request it could not forward).
				broken = append(broken, fmt.Sprintf("%v at %s", err, time.Now().Format("15:04:05.000")))
				c = dialPod(t, caller, web)
				br = bufio.NewReader(c)
			}
			return a, err
		}
		for range 5 {
			if a, err := get(); err != nil || a.status != 200 || a.from() != "backend-0" {
				t.Fatalf("before the restart: %v, %v", a, err)
			}
		}
		agent := l.process(t, "agent-node2")
		if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		testenv.Eventually(t, 30*time.Second, "the lab restarted node2's agent", func() error {
			if p := l.process(t, "agent-node2"); p.PID == agent.PID || p.State != "Running" {
				return fmt.Errorf("agent-node2: %s pid %d", p.State, p.PID)
			}
			return nil
		})
		l.agentReady(t, "node2", 30*time.Second)
		ready := time.Since(killed)
		var failed []string
		start := time.Now()
		for {
			a, err := get()
			if err == nil && a.status == 200 && a.from() == "backend-0" {
				break
			}
			if err == nil {
				failed = append(failed, a.String())
			}
			if time.Since(start) > 30*time.Second {
				// What else works: another pod to the same service, the
				// caller to another service on node2, and what node1's
				// agent holds for the caller.
				for _, probe := range []struct {
					name string
					pc   *podClient
					to   netip.AddrPort
					host string
				}{{"stranger → web (backend-0)", stranger, web, "web:8080"}, {"caller → guarded (guarded-0, node2)", caller, guarded, "guarded:8080"}} {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					a, err := probe.pc.do(ctx, probe.to, call{host: probe.host, hdr: []string{"X-Tenant", "acme"}})
					cancel()
					t.Logf("probe %s: %v, %v", probe.name, a, err)
				}
				for _, pod := range []string{"l7/caller", "l7/backend-0"} {
					out, err := l.exec(pod, "ss", "-tnoi", "state", "all", "( sport = :15008 or dport = :15008 )")
					t.Logf("ss in %s (%v):\n%s", pod, err, out)
				}
				// Where node1's agent waits: its goroutines in the tunnel
				// pool and dials.
				if dump, err := kubelet.NetnsHTTPClient(l.nodeNetns("node1"), 10*time.Second).Get("http://" + kubelet.AgentAdmin + "/debug/pprof/goroutine?debug=2"); err == nil {
					b, _ := io.ReadAll(dump.Body)
					dump.Body.Close()
					var stacks []string
					for g := range strings.SplitSeq(string(b), "\n\n") {
						if strings.Contains(g, "tunnelPool") || strings.Contains(g, "tunnelALPN") || strings.Contains(g, "podState).dial") {
							stacks = append(stacks, g)
						}
					}
					t.Logf("node1's agent: %d goroutines in the tunnel pool or dials:\n%s", len(stacks), tailBytes([]byte(strings.Join(stacks, "\n\n")), 12000))
				} else {
					t.Logf("node1's goroutines: %v", err)
				}
				var cs []admin.Connection
				err := adminJSON(l, "node1", "/connections?pod=l7/caller", &cs)
				b, _ := json.MarshalIndent(cs, "", " ")
				t.Logf("node1's connections of l7/caller (%v):\n%s", err, tailBytes(b, 6000))
				t.Fatalf("no answer from backend-0 within 30 s after node2's agent was ready (killed → ready %v): last %v, %v; failed answers %.3q; the app's connection closed by the agent: %q",
					ready.Round(time.Millisecond), a, err, failed, broken)
			}
		}
		took := time.Since(start)
		t.Logf("node2's agent killed, ready again after %v; then the first answer from backend-0 after %v; failed answers meanwhile: %.3q; the app's connection closed by the agent: %q",
			ready.Round(time.Millisecond), took.Round(time.Millisecond), failed, broken)
		if len(broken) > 0 {
			t.Errorf("node1's agent (alive) closed the caller's app connection %d times after node2's agent went away (%q); want it kept, with 503s at worst for requests it could not forward (Envoy keeps downstream connections across upstream failures)", len(broken), broken)
		}
		for i := range 20 {
			if a, err := get(); err != nil || a.status != 200 || a.from() != "backend-0" {
				t.Fatalf("request %d after the restart: %v, %v", i, a, err)
			}
		}
		for _, h2c := range []bool{false, true} {
			if a := caller.must(t, web, call{host: "web:8080", h2c: h2c}); a.status != 200 || a.from() != "backend-0" {
				t.Errorf("a new connection (h2c %v) after the restart: got %v", h2c, a)
			} else {
				checkMeshHeaders(t, a, callerID, backendID)
			}
		}
	})

	t.Run("the client side's agent restarts: new connections work", func(t *testing.T) {
		// The caller's connections go with node1's agent (capture is
		// fail-closed: nothing passes while it is away); once the lab has
		// restarted it, new connections get answers, HTTP/1.1 and h2c,
		// and the retries, routes and policies are back.
		agent := l.process(t, "agent-node1")
		if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "the lab restarted node1's agent", func() error {
			if p := l.process(t, "agent-node1"); p.PID == agent.PID || p.State != "Running" {
				return fmt.Errorf("agent-node1: %s pid %d", p.State, p.PID)
			}
			return nil
		})
		l.agentReady(t, "node1", 30*time.Second)
		fresh := newPodClient(t, caller.pod) // no connection from before
		took := testenv.Eventually(t, 20*time.Second, "caller → web answered by backend-0", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			a, err := fresh.do(ctx, web, call{host: "web:8080"})
			if err != nil {
				return err
			}
			if a.status != 200 || a.from() != "backend-0" {
				return fmt.Errorf("got %v", a)
			}
			return nil
		})
		t.Logf("node1's agent ready; caller → web answered after %v more", took.Round(time.Millisecond))
		for _, h2c := range []bool{false, true} {
			if a := fresh.must(t, web, call{host: "web:8080", h2c: h2c}); a.status != 200 || a.from() != "backend-0" {
				t.Errorf("h2c %v: got %v", h2c, a)
			} else {
				checkMeshHeaders(t, a, callerID, backendID)
			}
		}
		key := fmt.Sprintf("e7-after-restart-%d", time.Now().UnixNano())
		if a := fresh.must(t, retry, call{host: "retry:8080", hdr: []string{"X-Route", "retry-3", echo.HeaderFailFirst, "2", echo.HeaderAttemptKey, key}}); a.status != 200 || a.header.Get(echo.HeaderAttempt) != "3" {
			t.Errorf("retries after the restart: got %v (try %q), want 200 on the third try", a, a.header.Get(echo.HeaderAttempt))
		}
		if a := fresh.must(t, guarded, call{host: "guarded:8080", path: "/admin/x", hdr: []string{"X-Tenant", "acme"}}); a.status != 403 {
			t.Errorf("the DENY policy after the restart: got %v, want 403", a)
		}
	})
}

// getOn sends GET /restart for web on an app's HTTP/1.1 connection and
// reads the answer.
func getOn(c net.Conn, br *bufio.Reader) (answer, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /restart HTTP/1.1\r\nHost: web:8080\r\n\r\n"); err != nil {
		return answer{}, err
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		return a, err
	}
	a.isReply = json.Unmarshal(a.body, &a.reply) == nil
	return a, nil
}

// checkOutlier drives flaky (two good endpoints, flaky-bad answering 500,
// consecutive5xxErrors 3, interval 1s, baseEjectionTime 2s): once
// flaky-bad has answered 3 times in a row with 500 it gets no request
// for baseEjectionTime, then it gets requests again; ejected a second
// time, it stays out twice as long (baseEjectionTime × the number of
// ejections, Envoy's and Istio's).
func checkOutlier(t *testing.T, pc *podClient, addr netip.AddrPort) {
	t.Helper()
	const (
		consecutive = 3
		base        = 2 * time.Second
		interval    = time.Second
	)
	c := call{host: "flaky:8080"}
	waitL7(t, pc, addr, c, 200)
	bad := 0 // flaky-bad's consecutive 500s
	for round := 1; round <= 2; round++ {
		// Requests one after another; Envoy counts each host's
		// consecutive 5xx, successes of other hosts do not reset them.
		seen := map[string]int{}
		var ejectedAt time.Time
		for i := 0; ejectedAt.IsZero(); i++ {
			if bad == consecutive {
				ejectedAt = time.Now()
				break
			}
			if i == 100 {
				t.Fatalf("ejection %d: 100 requests: answers by pod %v, flaky-bad's 500s never reached %d", round, seen, consecutive)
			}
			a := pc.must(t, addr, c)
			seen[a.from()]++
			switch {
			case a.from() == "flaky-bad" && a.status == 500:
				bad++
			case strings.HasPrefix(a.from(), "flaky-good-") && a.status == 200:
			default:
				t.Fatalf("got %v, want 200 from flaky-good-* or 500 from flaky-bad", a)
			}
		}
		want := time.Duration(round) * base
		// Keep calling: no request reaches flaky-bad for want, then one
		// does.
		deadline := ejectedAt.Add(want + interval + 3*time.Second)
		during := map[string]int{}
		var back time.Duration
		for time.Now().Before(deadline) {
			a := pc.must(t, addr, c)
			if a.from() == "flaky-bad" {
				back, bad = a.sent.Sub(ejectedAt), 1
				break
			}
			during[a.from()]++
			if a.status != 200 {
				t.Errorf("ejection %d: got %v, want 200 from a good endpoint", round, a)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("ejection %d: before it, answers by pod %v; during it %v; flaky-bad back after %v (want %v: baseEjectionTime %v × %d, + up to the interval %v)",
			round, seen, during, back, want, base, round, interval)
		switch {
		case back == 0:
			t.Fatalf("ejection %d: flaky-bad got no request for %v after it, want it back after %v (+ up to the interval %v)", round, deadline.Sub(ejectedAt).Round(time.Millisecond), want, interval)
		case back < want-100*time.Millisecond:
			t.Errorf("ejection %d: flaky-bad got a request %v after it, want none for %v (baseEjectionTime %v × %d)", round, back, want, base, round)
		}
		// ROUND_ROBIN over the hosts left (Envoy balances over the
		// healthy set, so the ejected host's turns are shared, not all
		// given to its neighbour): each good endpoint gets about half.
		if n := during["flaky-good-0"] + during["flaky-good-1"]; len(during) != 2 || n < 10 ||
			math.Abs(float64(during["flaky-good-0"]-during["flaky-good-1"])) > math.Max(2, 0.15*float64(n)) {
			t.Errorf("ejection %d: answers by %v: want the two good endpoints to share ROUND_ROBIN about evenly", round, during)
		}
	}
}

// dialPod connects to addr from inside pc's pod.
func dialPod(t *testing.T, pc *podClient, addr netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pc.dial(ctx, "tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readAnswer reads one HTTP/1.1 response from br.
func readAnswer(t *testing.T, br *bufio.Reader, method string) answer {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	a.isReply = json.Unmarshal(a.body, &a.reply) == nil
	return a
}

// h2loadLine matches h2load's summary lines.
var (
	h2loadRequests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2loadCodes    = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// checkH2load checks h2load's output: n requests, all succeeded with a
// 2xx, over h2c.
func checkH2load(t *testing.T, what, out string, n int) {
	t.Helper()
	r, c := h2loadRequests.FindStringSubmatch(out), h2loadCodes.FindStringSubmatch(out)
	if r == nil || c == nil {
		t.Errorf("h2load to %s: no summary in its output", what)
		return
	}
	want := strconv.Itoa(n)
	if r[1] != want || r[4] != want || c[1] != want {
		t.Errorf("h2load to %s: %s; %s; want %d succeeded, all 2xx", what, r[0], c[0], n)
	}
	if !strings.Contains(out, "Application protocol: h2c") {
		t.Errorf("h2load to %s: not over h2c", what)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
