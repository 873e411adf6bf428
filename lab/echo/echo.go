// Package echo is the lab's demo application: one TCP listener that
// answers HTTP/1.1, HTTP/2 over cleartext (h2c, with prior knowledge or
// by Upgrade from HTTP/1.1) and raw TCP. It looks at the first bytes of
// a connection: an HTTP method or the HTTP/2 preface make it HTTP,
// anything else is echoed back byte for byte. To HTTP requests it answers
// with a JSON Reply saying who answered (service, version, pod,
// namespace, node), who asked (the peer address) and every request
// header it saw, so a test or a user can see what the mesh did to a
// request on its way.
//
// Requests can drive the answer, so a test can make one backend slow or
// failing without restarting it (the headers are listed in Control):
// x-echo-status answers that status, x-echo-delay sleeps first,
// x-echo-fail-first N with x-echo-attempt-key K answers 503 (or
// x-echo-fail-status) to the first N requests carrying K and 200
// afterwards (the count per key is kept by the server and reported as
// the reply's attempt). Options set the same
// for every request of a pod (a status, a delay, a failure rate), for
// outlier-detection tests.
//
// HTTP/2 requests with a gRPC content type go to a gRPC server on the
// same port that serves grpc.health.v1.Health (SERVING by default), so
// grpc_health_probe and Go's gRPC client can check the app over h2c.
//
// An HTTP/1.1 request asking to switch protocols (Connection: Upgrade,
// Upgrade: P, P other than h2c, such as a WebSocket handshake) gets 101
// Switching Protocols and then every byte is echoed back, raw (see
// ServeUpgrade). Every HTTP answer, 101 included, names who answered in
// response headers too (HeaderService, HeaderVersion, HeaderPod).
//
// fibmesh-lab app echo runs it; the examples' pods do.
package echo

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Info says who is answering. Empty fields are left out of replies.
type Info struct {
	Service   string `json:"service,omitempty"`
	Version   string `json:"version,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Node      string `json:"node,omitempty"`
}

// Reply is the JSON body of every HTTP answer.
type Reply struct {
	Info
	// Peer is the remote address of the connection, as the app saw it.
	Peer string `json:"peer"`
	// Proto is the request's protocol: "HTTP/1.1" or "HTTP/2.0".
	Proto  string `json:"proto"`
	Method string `json:"method"`
	Host   string `json:"host"`
	Path   string `json:"path"`
	// Headers are the request's headers as received.
	Headers http.Header `json:"headers"`
	// Status is the HTTP status the app answered with.
	Status int `json:"status"`
	// BodyBytes is the length of the request's body as received (at
	// most MaxBodyBytes are read), BodySHA256 its SHA-256 in hex (empty
	// for no body).
	BodyBytes  int64  `json:"bodyBytes,omitempty"`
	BodySHA256 string `json:"bodySha256,omitempty"`
	// Attempt is how many requests carrying the request's
	// x-echo-attempt-key the server has seen, this one included (0: the
	// request carried none).
	Attempt int `json:"attempt,omitempty"`
	// Error says why a request's control headers were refused (status
	// 400).
	Error string `json:"error,omitempty"`
}

// The request headers that control an answer (HTTP header names are
// case-insensitive; HTTP/2 sends them in lower case).
const (
	// HeaderStatus makes the app answer with this status (200..599).
	HeaderStatus = "X-Echo-Status"
	// HeaderDelay makes the app sleep this long (a Go duration such as
	// 250ms, 0..MaxDelay) before answering; a client that gives up first
	// gets nothing.
	HeaderDelay = "X-Echo-Delay"
	// HeaderFailFirst N makes the first N requests carrying the same
	// HeaderAttemptKey get 503, later ones their normal answer.
	HeaderFailFirst = "X-Echo-Fail-First"
	// HeaderFailStatus is the status HeaderFailFirst's failures answer
	// (200..599; 503 when not set), to tell retry conditions apart
	// (5xx, gateway-error, retriable status codes).
	HeaderFailStatus = "X-Echo-Fail-Status"
	// HeaderAttemptKey names a counter of requests kept by the server;
	// the reply's Attempt is its value after this request.
	HeaderAttemptKey = "X-Echo-Attempt-Key"
	// HeaderAttempt is set on answers to requests with an attempt key:
	// Reply.Attempt as a response header.
	HeaderAttempt = "X-Echo-Attempt"
	// HeaderBodyBytes N makes the app answer with N bytes of Pattern
	// (0..MaxBodyBytes, content type application/octet-stream) instead
	// of the JSON Reply, to move large answers through a proxy.
	HeaderBodyBytes = "X-Echo-Body-Bytes"
)

// Response headers on every HTTP answer (101 included) that say who
// answered: Info's Service, Version and Pod, where set.
const (
	HeaderService = "X-Echo-Service"
	HeaderVersion = "X-Echo-Version"
	HeaderPod     = "X-Echo-Pod"
)

// Bounds on what a request or a pod can ask for.
const (
	// MaxDelay is the longest delay a request header or Options.Delay
	// may ask for.
	MaxDelay = 30 * time.Second
	// MaxAttemptKeys is how many attempt keys the server remembers; when
	// a new key comes past it, the oldest one is forgotten (its count
	// starts again at 1 if it comes back).
	MaxAttemptKeys = 4096
	// MaxAttemptKeyLen is the longest attempt key accepted, in bytes.
	MaxAttemptKeyLen = 256
	// MaxBodyBytes bounds the request body read (the rest is not) and
	// x-echo-body-bytes.
	MaxBodyBytes = 64 << 20
	// maxFailFirst bounds x-echo-fail-first.
	maxFailFirst = 1_000_000
)

// Options set how a Server answers every request; the zero value answers
// 200 at once and reports SERVING to gRPC health checks. Request headers
// override Status and Delay for their request.
type Options struct {
	// Status is the HTTP status of every answer (0: 200).
	Status int
	// Delay is slept before every answer (0..MaxDelay).
	Delay time.Duration
	// FailRate is the probability (0..1) that a request, whatever its
	// headers ask, gets 503.
	FailRate float64
	// GRPCHealth is the status the gRPC health service reports for the
	// whole server ("" and for the Info's Service name): SERVING (the
	// default), NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN.
	GRPCHealth string
}

// Validate says what in o is out of range, naming the option and the
// fix.
func (o Options) Validate() error {
	if o.Status != 0 && (o.Status < 200 || o.Status > 599) {
		return fmt.Errorf("echo: status %d: want 200..599 (or 0 for 200)", o.Status)
	}
	if o.Delay < 0 || o.Delay > MaxDelay {
		return fmt.Errorf("echo: delay %v: want 0..%v", o.Delay, MaxDelay)
	}
	if !(o.FailRate >= 0 && o.FailRate <= 1) {
		return fmt.Errorf("echo: fail rate %v: want a probability 0..1", o.FailRate)
	}
	if _, err := ParseServingStatus(o.GRPCHealth); err != nil {
		return err
	}
	return nil
}

// ParseServingStatus parses a grpc.health.v1 serving status by its name
// (SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN; "" is SERVING).
func ParseServingStatus(s string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	if s == "" {
		return healthpb.HealthCheckResponse_SERVING, nil
	}
	v, ok := healthpb.HealthCheckResponse_ServingStatus_value[strings.ToUpper(s)]
	if !ok {
		return 0, fmt.Errorf("echo: gRPC health status %q: want SERVING, NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN", s)
	}
	return healthpb.HealthCheckResponse_ServingStatus(v), nil
}

// sniffTimeout is how long a connection whose first bytes could still
// become an HTTP request line may stay undecided before it is treated as
// raw TCP (a client that sends "GE" and waits for an echo).
var sniffTimeout = 300 * time.Millisecond

// Server serves Info on listeners.
type Server struct {
	info   Info
	http   *http.Server
	grpc   *grpc.Server
	health *health.Server
	conns  chan net.Conn

	mu     sync.Mutex
	closed bool
	raw    map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// New returns a Server that answers as info with the zero Options.
func New(info Info) *Server {
	s, _ := NewWithOptions(info, Options{}) // the zero Options are valid
	return s
}

// NewWithOptions returns a Server that answers as info, every request as
// o says. It fails when o does not Validate.
func NewWithOptions(info Info, o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	hs, _ := ParseServingStatus(o.GRPCHealth)
	s := &Server{info: info, conns: make(chan net.Conn), raw: map[net.Conn]struct{}{},
		grpc: grpc.NewServer(), health: health.NewServer()}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.SetServingStatus(hs)
	h := newHandler(info, o)
	s.http = &http.Server{
		Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				s.grpc.ServeHTTP(w, r)
				return
			}
			h.ServeHTTP(w, r)
		}), &http2.Server{}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return s, nil
}

// SetServingStatus changes what the gRPC health service reports for the
// whole server ("") and for the Info's Service name.
func (s *Server) SetServingStatus(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	if s.info.Service != "" {
		s.health.SetServingStatus(s.info.Service, st)
	}
}

// Handler returns the HTTP handler that writes Reply for every request,
// obeying the control headers, with the zero Options and without gRPC.
func Handler(info Info) http.Handler {
	return newHandler(info, Options{})
}

// handler answers HTTP requests with a Reply.
type handler struct {
	info     Info
	opts     Options
	attempts attempts
}

func newHandler(info Info, o Options) *handler {
	return &handler{info: info, opts: o, attempts: attempts{m: map[string]int{}}}
}

// control is what a request's headers ask for.
type control struct {
	status     int // 0: not asked
	delay      time.Duration
	hasDelay   bool
	failFirst  int
	failStatus int
	key        string
	bodyBytes  int64 // -1: not asked
}

// parseControl reads the control headers of h; the error names the
// header and what it wants.
func parseControl(h http.Header) (control, error) {
	c := control{bodyBytes: -1}
	if v := h.Get(HeaderBodyBytes); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 || n > MaxBodyBytes {
			return c, fmt.Errorf("header %s: %q: want a byte count 0..%d", strings.ToLower(HeaderBodyBytes), v, MaxBodyBytes)
		}
		c.bodyBytes = n
	}
	if v := h.Get(HeaderStatus); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 200 || n > 599 {
			return c, fmt.Errorf("header %s: %q: want an HTTP status 200..599", strings.ToLower(HeaderStatus), v)
		}
		c.status = n
	}
	if v := h.Get(HeaderDelay); v != "" {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 || d > MaxDelay {
			return c, fmt.Errorf("header %s: %q: want a duration 0..%v such as 250ms", strings.ToLower(HeaderDelay), v, MaxDelay)
		}
		c.delay, c.hasDelay = d, true
	}
	c.key = h.Get(HeaderAttemptKey)
	if len(c.key) > MaxAttemptKeyLen {
		return c, fmt.Errorf("header %s: %d bytes: want at most %d", strings.ToLower(HeaderAttemptKey), len(c.key), MaxAttemptKeyLen)
	}
	if v := h.Get(HeaderFailFirst); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > maxFailFirst {
			return c, fmt.Errorf("header %s: %q: want a count 0..%d", strings.ToLower(HeaderFailFirst), v, maxFailFirst)
		}
		if c.key == "" {
			return c, fmt.Errorf("header %s needs header %s: set it to an ID shared by the attempts of one request", strings.ToLower(HeaderFailFirst), strings.ToLower(HeaderAttemptKey))
		}
		c.failFirst = n
	}
	c.failStatus = http.StatusServiceUnavailable
	if v := h.Get(HeaderFailStatus); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 200 || n > 599 {
			return c, fmt.Errorf("header %s: %q: want an HTTP status 200..599", strings.ToLower(HeaderFailStatus), v)
		}
		c.failStatus = n
	}
	return c, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, kv := range [...][2]string{{HeaderService, h.info.Service}, {HeaderVersion, h.info.Version}, {HeaderPod, h.info.Pod}} {
		if kv[1] != "" {
			w.Header().Set(kv[0], kv[1])
		}
	}
	if r.ProtoMajor == 1 && upgradeRequested(r.Header) {
		serveUpgrade(w, r)
		return
	}
	rep := Reply{Info: h.info, Peer: r.RemoteAddr, Proto: r.Proto, Method: r.Method, Host: r.Host, Path: r.URL.RequestURI(), Headers: r.Header.Clone()}
	// The body is read (so a client streaming one gets its answer) and
	// reported.
	sum := sha256.New()
	rep.BodyBytes, _ = io.Copy(sum, io.LimitReader(r.Body, MaxBodyBytes))
	if rep.BodyBytes > 0 {
		rep.BodySHA256 = hex.EncodeToString(sum.Sum(nil))
	}
	c, err := parseControl(r.Header)
	if err != nil {
		rep.Status, rep.Error = http.StatusBadRequest, err.Error()
		writeReply(w, &rep)
		return
	}
	if c.key != "" {
		rep.Attempt = h.attempts.add(c.key)
		w.Header().Set(HeaderAttempt, strconv.Itoa(rep.Attempt))
	}
	delay := h.opts.Delay
	if c.hasDelay {
		delay = c.delay
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client is gone
		}
	}
	switch {
	case c.key != "" && rep.Attempt <= c.failFirst:
		rep.Status = c.failStatus
	case h.opts.FailRate > 0 && rand.Float64() < h.opts.FailRate:
		rep.Status = http.StatusServiceUnavailable
	case c.status != 0:
		rep.Status = c.status
	default:
		rep.Status = cmp.Or(h.opts.Status, http.StatusOK)
	}
	if c.bodyBytes >= 0 {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(c.bodyBytes, 10))
		w.WriteHeader(rep.Status)
		_ = WritePattern(w, c.bodyBytes)
		return
	}
	writeReply(w, &rep)
}

// patternLine is the length of one line of Pattern.
const patternLine = 16

// WritePattern writes the first n bytes of Pattern to w: 16-byte lines,
// each its own offset in 15 lower-case hex digits and a newline, so a
// reader can tell a byte lost, doubled or moved from its place.
func WritePattern(w io.Writer, n int64) error {
	buf := make([]byte, 0, 32<<10)
	for off := int64(0); off < n; {
		buf = buf[:0]
		for len(buf)+patternLine <= cap(buf) && off+int64(len(buf)) < n {
			buf = fmt.Appendf(buf, "%015x\n", off+int64(len(buf)))
		}
		chunk := buf[:min(int64(len(buf)), n-off)]
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		off += int64(len(chunk))
	}
	return nil
}

// CheckPattern says where b, read from offset 0, first differs from
// Pattern (nil: it is the first len(b) bytes of it).
func CheckPattern(b []byte) error {
	var line [patternLine]byte
	for off := 0; off < len(b); off += patternLine {
		want := fmt.Appendf(line[:0], "%015x\n", off)
		got := b[off:min(off+patternLine, len(b))]
		if !bytes.Equal(got, want[:len(got)]) {
			return fmt.Errorf("echo pattern: bytes %d..%d are %q, want %q", off, off+len(got), got, want[:len(got)])
		}
	}
	return nil
}

// upgradeRequested says whether h asks to switch protocols: Connection
// lists "upgrade" and Upgrade names a protocol other than h2c (h2c's
// handler serves those; a request it upgraded comes here as it was read,
// headers included, and is answered in HTTP/2).
func upgradeRequested(h http.Header) bool {
	if up := h.Get("Upgrade"); up == "" || strings.EqualFold(strings.TrimSpace(up), "h2c") {
		return false
	}
	for _, v := range h.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "upgrade") {
				return true
			}
		}
	}
	return false
}

// websocketGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// serveUpgrade answers an Upgrade request with 101 Switching Protocols
// (Upgrade: the protocol asked for, and Sec-WebSocket-Accept computed
// from a Sec-WebSocket-Key, as RFC 6455 asks), then echoes every byte
// the client sends until it closes its side. The echo is of raw bytes,
// not of WebSocket messages: a test writes bytes after the 101 and reads
// the same back, whatever sits in between.
func serveUpgrade(w http.ResponseWriter, r *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "echo: this connection cannot switch protocols", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Upgrade", r.Header.Get("Upgrade"))
	w.Header().Set("Connection", "Upgrade")
	if k := r.Header.Get("Sec-WebSocket-Key"); k != "" {
		sum := sha1.Sum([]byte(k + websocketGUID))
		w.Header().Set("Sec-WebSocket-Accept", base64.StdEncoding.EncodeToString(sum[:]))
	}
	w.WriteHeader(http.StatusSwitchingProtocols)
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	if err := brw.Flush(); err != nil {
		return
	}
	// Bytes the client sent right behind the request are in brw.Reader.
	_, _ = io.Copy(c, brw.Reader)
}

func writeReply(w http.ResponseWriter, rep *Reply) {
	b, _ := json.MarshalIndent(rep, "", "  ")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.Status)
	_, _ = w.Write(append(b, '\n'))
}

// attempts counts requests per attempt key, remembering at most
// MaxAttemptKeys keys (the oldest is forgotten first).
type attempts struct {
	mu    sync.Mutex
	m     map[string]int
	order []string // keys in the order they came, a ring of MaxAttemptKeys
	next  int      // where the next new key goes in order once it is full
}

// add counts one more request for key and returns the count.
func (a *attempts) add(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n, ok := a.m[key]; ok {
		a.m[key] = n + 1
		return n + 1
	}
	if len(a.order) < MaxAttemptKeys {
		a.order = append(a.order, key)
	} else {
		delete(a.m, a.order[a.next])
		a.order[a.next] = key
		a.next = (a.next + 1) % MaxAttemptKeys
	}
	a.m[key] = 1
	return 1
}

// Serve accepts connections on ln until ctx is done or Close is called,
// then closes ln. It returns nil after a shutdown and the listener's
// error otherwise.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	httpLn := &chanListener{addr: ln.Addr(), conns: s.conns, done: make(chan struct{})}
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Serve(httpLn) }()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	go func() {
		<-httpLn.done
		ln.Close()
	}()
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if s.isClosed() {
				break
			}
			var ne net.Error
			if errors.As(aerr, &ne) && ne.Timeout() {
				continue
			}
			err = aerr
			s.Close()
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c, httpLn)
		}()
	}
	s.wg.Wait()
	<-httpDone
	return err
}

// Close stops the server: the listener, HTTP connections and raw
// connections are closed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.raw {
		c.Close()
	}
	s.mu.Unlock()
	err := s.http.Close()
	s.health.Shutdown()
	s.grpc.Stop()
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// handle sniffs c and hands it to the HTTP server or echoes it.
func (s *Server) handle(c net.Conn, httpLn *chanListener) {
	br := bufio.NewReaderSize(c, 4096)
	kind := sniff(c, br)
	pc := &peekedConn{Conn: c, r: br}
	if kind == kindHTTP {
		select {
		case httpLn.conns <- pc:
		case <-httpLn.done:
			c.Close()
		}
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.raw[c] = struct{}{}
	s.mu.Unlock()
	_, _ = io.Copy(c, pc)
	c.Close()
	s.mu.Lock()
	delete(s.raw, c)
	s.mu.Unlock()
}

type kind int

const (
	kindRaw kind = iota
	kindHTTP
)

// prefixes are the starts of what makes a connection HTTP: an HTTP/1.x
// request line's method and space, or the HTTP/2 client preface.
var prefixes = [][]byte{
	[]byte("GET "), []byte("HEAD "), []byte("POST "), []byte("PUT "), []byte("DELETE "),
	[]byte("CONNECT "), []byte("OPTIONS "), []byte("TRACE "), []byte("PATCH "),
	[]byte(http2.ClientPreface),
}

// classify says what b, the first bytes of a connection, start: HTTP,
// raw TCP, or (more == true) not known yet.
func classify(b []byte) (k kind, more bool) {
	for _, p := range prefixes {
		if bytes.HasPrefix(b, p) {
			return kindHTTP, false
		}
		if len(b) < len(p) && bytes.HasPrefix(p, b) {
			more = true
		}
	}
	return kindRaw, more
}

// sniff reads the first bytes of c (keeping them in br) until classify
// decides, the peer stops sending for sniffTimeout after its first byte,
// or it closes. The wait for the first byte has no deadline: a client may
// connect long before it sends (a pool, a slow start), and an HTTP
// request that came late must not be echoed back as raw bytes.
func sniff(c net.Conn, br *bufio.Reader) kind {
	defer c.SetReadDeadline(time.Time{})
	if _, err := br.Peek(1); err != nil {
		return kindRaw
	}
	deadline := time.Now().Add(sniffTimeout)
	// Classify what is buffered first; wait for one more byte only when
	// that is not enough (asking for one more than buffered at once made
	// every request whose first read held it whole wait sniffTimeout).
	for n := br.Buffered(); ; n = br.Buffered() + 1 {
		c.SetReadDeadline(deadline)
		b, err := br.Peek(n)
		if len(b) == 0 && err != nil {
			return kindRaw
		}
		k, more := classify(b)
		if !more || err != nil {
			return k
		}
	}
}

// peekedConn is a connection whose first bytes are in r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener hands the HTTP server the connections sniff found to be
// HTTP.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
