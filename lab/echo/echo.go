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
// fibmesh-lab app echo runs it; the examples' pods do.
package echo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
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
}

// sniffTimeout is how long a connection whose first bytes could still
// become an HTTP request line may stay undecided before it is treated as
// raw TCP (a client that sends "GE" and waits for an echo).
var sniffTimeout = 300 * time.Millisecond

// Server serves Info on listeners.
type Server struct {
	info  Info
	http  *http.Server
	conns chan net.Conn

	mu     sync.Mutex
	closed bool
	raw    map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// New returns a Server that answers as info.
func New(info Info) *Server {
	s := &Server{info: info, conns: make(chan net.Conn), raw: map[net.Conn]struct{}{}}
	s.http = &http.Server{
		Handler:           h2c.NewHandler(Handler(info), &http2.Server{}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return s
}

// Handler returns the HTTP handler that writes Reply for every request.
func Handler(info Info) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The body is drained so a client streaming one gets its answer.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		rep := Reply{Info: info, Peer: r.RemoteAddr, Proto: r.Proto, Method: r.Method, Host: r.Host, Path: r.URL.RequestURI(), Headers: r.Header.Clone()}
		b, _ := json.MarshalIndent(rep, "", "  ")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
	})
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
	return s.http.Close()
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
