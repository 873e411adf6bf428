package echo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var testInfo = Info{Service: "reviews", Version: "v2", Pod: "reviews-v2-abc", Namespace: "production", Node: "node2"}

// start runs a Server on a loopback port for the test.
func start(t *testing.T) string {
	t.Helper()
	return startWith(t, Options{})
}

// startWith runs a Server with o on a loopback port for the test.
func startWith(t *testing.T, o Options) string {
	t.Helper()
	return startServerWith(t, o).addr
}

// running is a Server started for a test and its address.
type running struct {
	s    *Server
	addr string
}

func startServer(t *testing.T) running {
	t.Helper()
	return startServerWith(t, Options{})
}

func startServerWith(t *testing.T, o Options) running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewWithOptions(testInfo, o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return running{s: s, addr: ln.Addr().String()}
}

func decode(t *testing.T, body []byte) Reply {
	t.Helper()
	var r Reply
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("reply is not JSON: %v\n%s", err, body)
	}
	return r
}

func checkReply(t *testing.T, r Reply, proto string) {
	t.Helper()
	if d := cmp.Diff(testInfo, r.Info); d != "" {
		t.Errorf("info (-want +got):\n%s", d)
	}
	if r.Proto != proto {
		t.Errorf("proto %q, want %q", r.Proto, proto)
	}
	if r.Path != "/api/reviews/1?x=y" || r.Method != "GET" {
		t.Errorf("method %q path %q, want GET /api/reviews/1?x=y", r.Method, r.Path)
	}
	if got := r.Headers.Get("X-Request-Id"); got != "req-42" {
		t.Errorf("header x-request-id %q, want req-42 (headers %v)", got, r.Headers)
	}
	if !strings.HasPrefix(r.Peer, "127.0.0.1:") {
		t.Errorf("peer %q, want 127.0.0.1:port", r.Peer)
	}
}

func TestProtocols(t *testing.T) {
	addr := start(t)
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	tests := []struct {
		name  string
		rt    http.RoundTripper
		proto string
	}{
		{"http1.1", &http.Transport{}, "HTTP/1.1"},
		{"h2c prior knowledge (net/http)", h2, "HTTP/2.0"},
		{"h2c prior knowledge (x/net/http2)", &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}, "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+addr+"/api/reviews/1?x=y", nil)
			req.Header.Set("x-request-id", "req-42")
			resp, err := (&http.Client{Transport: tt.rt, Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || resp.Proto != tt.proto {
				t.Fatalf("status %d proto %s, want 200 %s", resp.StatusCode, resp.Proto, tt.proto)
			}
			checkReply(t, decode(t, body), tt.proto)
		})
	}
}

// TestH2CUpgrade speaks the HTTP/1.1 Upgrade to h2c by hand (no Go client
// does it): 101, then the answer to the upgraded request on stream 1.
func TestH2CUpgrade(t *testing.T) {
	addr := start(t)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var settings bytes.Buffer
	if err := http2.NewFramer(&settings, nil).WriteSettings(); err != nil {
		t.Fatal(err)
	}
	payload := base64.RawURLEncoding.EncodeToString(settings.Bytes()[9:]) // the frame's payload (empty)
	fmt.Fprintf(c, "GET /api/reviews/1?x=y HTTP/1.1\r\nHost: reviews\r\nX-Request-Id: req-42\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: %s\r\n\r\n", payload)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, br)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	var status string
	var body bytes.Buffer
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v (status %q, body so far %q)", err, status, body.String())
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 {
				t.Fatalf("headers on stream %d, want 1 (the upgraded request)", f.StreamID)
			}
			hf, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hf {
				if h.Name == ":status" {
					status = h.Value
				}
			}
		case *http2.DataFrame:
			body.Write(f.Data())
			if f.StreamEnded() {
				if status != "200" {
					t.Fatalf(":status %q, want 200", status)
				}
				r := decode(t, body.Bytes())
				if d := cmp.Diff(testInfo, r.Info); d != "" {
					t.Errorf("info (-want +got):\n%s", d)
				}
				// The upgraded request is the HTTP/1.1 one (h2c hands it on
				// as it was read); its answer came in HTTP/2 frames.
				if r.Headers.Get("X-Request-Id") != "req-42" || r.Path != "/api/reviews/1?x=y" || r.Headers.Get("Upgrade") != "h2c" {
					t.Errorf("reply %+v, want the upgraded request with x-request-id req-42 for /api/reviews/1?x=y", r)
				}
				return
			}
		}
	}
}

func TestRawTCP(t *testing.T) {
	addr := start(t)
	tests := []struct {
		name string
		send []string // written one after another
	}{
		{"bytes", []string{"hello, mesh\n"}},
		{"binary", []string{"\x00\x01\x02\xff"}},
		// A start that could be a method, then not: decided on the
		// second write (or on the sniff timeout).
		{"almost a method", []string{"GE", "ORGE\n"}},
		{"lower-case get", []string{"get / HTTP/1.1\r\n\r\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			want := strings.Join(tt.send, "")
			for _, s := range tt.send {
				if _, err := io.WriteString(c, s); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, len(want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("read echo: %v (got %q)", err, got)
			}
			if string(got) != want {
				t.Errorf("echo %q, want %q", got, want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		want kind
		more bool
	}{
		{"GET / HTTP/1.1", kindHTTP, false},
		{"OPTIONS * HTTP/1.1", kindHTTP, false},
		{http2.ClientPreface, kindHTTP, false},
		{"PRI * HTTP/2", kindRaw, true},
		{"GE", kindRaw, true},
		{"GET", kindRaw, true},
		{"GETX", kindRaw, false},
		{"hello", kindRaw, false},
		{"", kindRaw, true},
	}
	for _, tt := range tests {
		k, more := classify([]byte(tt.in))
		if k != tt.want || more != tt.more {
			t.Errorf("classify(%q) = %v, %v; want %v, %v", tt.in, k, more, tt.want, tt.more)
		}
	}
}

// A client that connects and sends its HTTP request only later (a pool, a
// slow start) gets an HTTP answer, not its request echoed: the sniff
// waits for the first byte without a deadline.
func TestLateHTTPRequest(t *testing.T) {
	addr := start(t)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The scenario itself: nothing sent for longer than the sniff window.
	time.Sleep(2 * sniffTimeout)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Errorf("first line %q, want an HTTP/1.1 200 response", line)
	}
}

// A request that arrives whole in the first read is answered at once, not
// after the sniff timeout (which asked for one byte more than buffered).
// The timeout is made an hour here: a request that waited for it would
// fail on the client's deadline.
func TestWholeRequestNotDelayed(t *testing.T) {
	old := sniffTimeout
	sniffTimeout = time.Hour
	t.Cleanup(func() { sniffTimeout = old })
	addr := start(t)
	for _, req := range []string{
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /b HTTP/1.0\r\n\r\n",
		"\x00raw bytes",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Errorf("%q: no answer before the client's deadline: %v", req, err)
		}
		c.Close()
	}
}
