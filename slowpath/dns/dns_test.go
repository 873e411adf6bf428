package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const ioTimeout = 10 * time.Second

var meshHosts = map[string][]netip.Addr{
	"reviews.production.svc.cluster.local": {netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")},
	"ratings.default.svc.cluster.local":    {netip.MustParseAddr("10.96.0.11")},
	"api.example.com":                      {netip.MustParseAddr("192.0.2.1")},
	"empty.default.svc.cluster.local":      {},
}

// running is a Server serving a UDP socket and a TCP listener on
// loopback until the end of the test.
type running struct {
	udp, tcp string // addresses
}

func start(t *testing.T, cfg Config) running {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
	}
	return serveOn(t, New(cfg), pc, ln)
}

// serveOn serves pc and ln with s until the end of the test, and checks
// that both Serve calls return nil when their context ends.
func serveOn(t *testing.T, s *Server, pc net.PacketConn, ln net.Listener) running {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- s.ServeUDP(ctx, pc) }()
	go func() { defer wg.Done(); errs <- s.ServeTCP(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("Serve returned %v after its context ended, want nil", err)
			}
		}
		pc.Close()
		ln.Close()
	})
	return running{udp: pc.LocalAddr().String(), tcp: ln.Addr().String()}
}

// query builds a query for name and qtype, with an OPT record of size
// edns when it is not 0.
func query(t testing.TB, id uint16, name string, qtype dnsmessage.Type, edns int) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if edns > 0 {
		b.StartAdditionals()
		var rh dnsmessage.ResourceHeader
		rh.SetEDNS0(edns, dnsmessage.RCodeSuccess, false)
		b.OPTResource(rh, dnsmessage.OPTResource{})
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// exchange sends q over network to addr and returns the raw answer.
func exchange(t testing.TB, network, addr string, q []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout(network, addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if network == "udp" {
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read answer over udp: %v", err)
		}
		return buf[:n]
	}
	msg := binary.BigEndian.AppendUint16(nil, uint16(len(q)))
	if _, err := c.Write(append(msg, q...)); err != nil {
		t.Fatal(err)
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		t.Fatalf("read answer over tcp: %v", err)
	}
	resp := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// answer is what the tests compare of an answer.
type answer struct {
	RCode     dnsmessage.RCode
	Auth, TC  bool
	Addrs     []string
	Questions int
}

func parse(t testing.TB, resp []byte, id uint16) answer {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("unpack answer: %v", err)
	}
	if m.ID != id || !m.Response {
		t.Fatalf("answer has ID %d response %v, want ID %d response", m.ID, m.Response, id)
	}
	a := answer{RCode: m.RCode, Auth: m.Authoritative, TC: m.Truncated, Questions: len(m.Questions)}
	for _, rr := range m.Answers {
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			a.Addrs = append(a.Addrs, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			a.Addrs = append(a.Addrs, netip.AddrFrom16(b.AAAA).String())
		}
	}
	return a
}

func TestAnswers(t *testing.T) {
	srv := start(t, Config{Hosts: func() map[string][]netip.Addr { return meshHosts }, Namespace: "production"})
	refused := answer{RCode: dnsmessage.RCodeRefused, Questions: 1}
	mesh := func(addrs ...string) answer {
		return answer{RCode: dnsmessage.RCodeSuccess, Auth: true, Addrs: addrs, Questions: 1}
	}
	for _, tc := range []struct {
		name  string
		qtype dnsmessage.Type
		want  answer
	}{
		{"reviews.production.svc.cluster.local.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.production.svc.cluster.local.", dnsmessage.TypeAAAA, mesh("fd00::10")},
		{"REVIEWS.Production.SVC.cluster.local.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.production.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.production.svc.", dnsmessage.TypeAAAA, mesh("fd00::10")},
		{"reviews.production.svc.cluster.local.production.svc.cluster.local.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.production.svc.cluster.local.svc.cluster.local.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.production.svc.cluster.local.corp.example.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.production.production.svc.cluster.local.", dnsmessage.TypeA, mesh("10.96.0.10")},
		{"reviews.production.svc.cluster.local.", dnsmessage.TypeMX, mesh()},
		{"reviews.production.svc.cluster.local.", dnsmessage.TypeTXT, mesh()},
		{"api.example.com.", dnsmessage.TypeA, mesh("192.0.2.1")},
		{"api.example.com.", dnsmessage.TypeAAAA, mesh()},
		{"api.example.com.production.svc.cluster.local.", dnsmessage.TypeA, mesh("192.0.2.1")},
		{"ratings.default.", dnsmessage.TypeA, mesh("10.96.0.11")},
		{"ratings.default.svc.cluster.local.", dnsmessage.TypeAAAA, mesh()},
		{"ratings.", dnsmessage.TypeA, refused}, // the pod is in production, not default
		{"empty.default.svc.cluster.local.", dnsmessage.TypeA, refused},
		{"unknown.example.org.", dnsmessage.TypeA, refused},
		{"example.com.", dnsmessage.TypeA, refused},
		{"svc.cluster.local.", dnsmessage.TypeA, refused},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(network+"/"+tc.name+"/"+tc.qtype.String(), func(t *testing.T) {
				addr := srv.udp
				if network == "tcp" {
					addr = srv.tcp
				}
				got := parse(t, exchange(t, network, addr, query(t, 42, tc.name, tc.qtype, 0)), 42)
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("answer (-want +got):\n%s", d)
				}
			})
		}
	}
}

// resolver is Go's own DNS client, sending every query to addr.
func resolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

func TestGoResolver(t *testing.T) {
	srv := start(t, Config{Hosts: func() map[string][]netip.Addr { return meshHosts }, Namespace: "production"})
	r := resolver(srv.udp)
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	for _, tc := range []struct {
		name, network string
		want          []string
	}{
		{"reviews.production.svc.cluster.local.", "ip", []string{"10.96.0.10", "fd00::10"}},
		{"reviews.production.svc.cluster.local.", "ip4", []string{"10.96.0.10"}},
		{"reviews.production.svc.cluster.local.", "ip6", []string{"fd00::10"}},
		{"api.example.com.", "ip", []string{"192.0.2.1"}},
	} {
		addrs, err := r.LookupNetIP(ctx, tc.network, tc.name)
		if err != nil {
			t.Errorf("LookupNetIP(%s, %s): %v", tc.network, tc.name, err)
			continue
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		slices.Sort(got)
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("LookupNetIP(%s, %s) (-want +got):\n%s", tc.network, tc.name, d)
		}
	}
	if addrs, err := r.LookupNetIP(ctx, "ip", "unknown.example.org."); err == nil {
		t.Errorf("LookupNetIP(unknown.example.org.) = %v, want an error (refused)", addrs)
	}
}

// manyHosts is an upstream zone whose answer does not fit in 512 bytes.
func manyHosts() map[string][]netip.Addr {
	h := map[string][]netip.Addr{"www.example.org": {netip.MustParseAddr("198.51.100.7")}}
	a := netip.MustParseAddr("198.51.100.0")
	for range 60 {
		a = a.Next()
		h["big.example.org"] = append(h["big.example.org"], a)
	}
	return h
}

func TestForward(t *testing.T) {
	upstream := start(t, Config{Hosts: func() map[string][]netip.Addr { return manyHosts() }})
	var dials sync.Map // network → count
	srv := start(t, Config{
		Hosts:     func() map[string][]netip.Addr { return meshHosts },
		Namespace: "production",
		Upstream:  upstream.udp,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			n, _ := dials.LoadOrStore(network, new(int))
			*(n.(*int))++
			var d net.Dialer
			if network == "tcp" {
				addr = upstream.tcp
			}
			return d.DialContext(ctx, network, addr)
		},
	})
	for _, tc := range []struct {
		network, name string
		edns          int
		wantCount     int
		wantTC        bool
	}{
		{"udp", "www.example.org.", 0, 1, false},
		{"tcp", "www.example.org.", 0, 1, false},
		{"udp", "big.example.org.", 0, 0, true},      // does not fit 512: client retries over TCP
		{"udp", "big.example.org.", 1232, 60, false}, // fits its EDNS0 size: fetched over TCP upstream
		{"tcp", "big.example.org.", 0, 60, false},
	} {
		t.Run(tc.network+"/"+tc.name+"/"+strings.Repeat("edns", min(tc.edns, 1)), func(t *testing.T) {
			addr := srv.udp
			if tc.network == "tcp" {
				addr = srv.tcp
			}
			resp := exchange(t, tc.network, addr, query(t, 7, tc.name, dnsmessage.TypeA, tc.edns))
			got := parse(t, resp, 7)
			if got.RCode != dnsmessage.RCodeSuccess || len(got.Addrs) != tc.wantCount || got.TC != tc.wantTC {
				t.Errorf("got %+v, want NOERROR with %d addresses, TC %v", got, tc.wantCount, tc.wantTC)
			}
			limit := 512
			if tc.edns > 0 {
				limit = tc.edns
			}
			if tc.network == "udp" && len(resp) > limit {
				t.Errorf("UDP answer of %d bytes, more than the client's %d", len(resp), limit)
			}
		})
	}
	if n, ok := dials.Load("tcp"); !ok || *(n.(*int)) == 0 {
		t.Error("never fell back to TCP upstream for a truncated answer")
	}
	// The mesh's names are not forwarded.
	if got := parse(t, exchange(t, "udp", srv.udp, query(t, 8, "reviews.", dnsmessage.TypeA, 0)), 8); !got.Auth || len(got.Addrs) != 1 {
		t.Errorf("mesh name through a forwarding server: %+v", got)
	}
}

func TestForwardFailure(t *testing.T) {
	// A port nobody listens on: the upstream exchange fails (refused or
	// timed out), and the client gets SERVFAIL.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	srv := start(t, Config{Hosts: func() map[string][]netip.Addr { return meshHosts }, Upstream: dead, Timeout: time.Second})
	got := parse(t, exchange(t, "udp", srv.udp, query(t, 9, "www.example.org.", dnsmessage.TypeA, 0)), 9)
	if got.RCode != dnsmessage.RCodeServerFailure {
		t.Errorf("got %+v, want SERVFAIL", got)
	}
}

func TestTCPBounds(t *testing.T) {
	srv := start(t, Config{Hosts: func() map[string][]netip.Addr { return meshHosts }, MaxTCPConns: 2, Timeout: time.Minute})
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", srv.tcp, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ask := func(c net.Conn) error {
		q := query(t, 1, "reviews.production.svc.cluster.local.", dnsmessage.TypeA, 0)
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return err
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(l[:])))
		return err
	}
	a, b := dial(), dial()
	for _, c := range []net.Conn{a, b} { // both served, several queries each
		for range 3 {
			if err := ask(c); err != nil {
				t.Fatalf("query on a connection within the limit: %v", err)
			}
		}
	}
	if err := ask(dial()); err == nil {
		t.Error("a third connection was served with MaxTCPConns 2")
	}
	a.Close()
	testenv.Eventually(t, ioTimeout, "a connection is served after another closed", func() error { return ask(dial()) })

	// A query larger than MaxQuerySize ends the connection.
	// (No connection is dialled before b closes: the server could accept
	// it after b's slot frees, and it would then hold that slot unserved.)
	b.Close()
	var c net.Conn
	testenv.Eventually(t, ioTimeout, "a connection is served", func() error { c = dial(); return ask(c) })
	c.Write(binary.BigEndian.AppendUint16(nil, MaxQuerySize+1))
	c.Write(make([]byte, 64))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Errorf("read after an oversized query: %v, want the connection closed", err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "reset")
}

func TestValidate(t *testing.T) {
	hosts := func() map[string][]netip.Addr { return nil }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"ok", Config{Hosts: hosts}, ""},
		{"ok upstream", Config{Hosts: hosts, Upstream: "10.96.0.10:53"}, ""},
		{"no hosts", Config{}, "Hosts is nil"},
		{"upstream without port", Config{Hosts: hosts, Upstream: "10.96.0.10"}, `Upstream "10.96.0.10" is not host:port`},
		{"domain with dot", Config{Hosts: hosts, ClusterDomain: "cluster.local."}, "ClusterDomain"},
		{"negative ttl", Config{Hosts: hosts, TTL: -1}, "TTL is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestHandleBadInput: malformed queries get FORMERR or nothing, never a
// panic; the handler never answers a response.
func TestHandleBadInput(t *testing.T) {
	s := New(Config{Hosts: func() map[string][]netip.Addr { return meshHosts }})
	good := query(t, 5, "reviews.production.svc.cluster.local.", dnsmessage.TypeA, 0)
	resp := slices.Clone(good)
	resp[2] |= 0x80 // QR
	twoQ := slices.Clone(good)
	twoQ[5] = 2 // QDCOUNT 2, one present
	notify := slices.Clone(good)
	notify[2] |= 4 << 3 // opcode NOTIFY
	for _, tc := range []struct {
		name  string
		q     []byte
		want  bool // an answer at all
		rcode dnsmessage.RCode
	}{
		{"empty", nil, false, 0},
		{"short", good[:5], false, 0},
		{"response", resp, false, 0},
		{"truncated question", good[:len(good)-3], true, dnsmessage.RCodeFormatError},
		{"two questions", twoQ, true, dnsmessage.RCodeFormatError},
		{"opcode", notify, true, dnsmessage.RCodeNotImplemented},
		{"oversized", make([]byte, MaxQuerySize+1), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := s.handle(context.Background(), tc.q, true)
			if (got != nil) != tc.want {
				t.Fatalf("answer %x, want one: %v", got, tc.want)
			}
			if got != nil {
				if a := parse(t, got, 5); a.RCode != tc.rcode {
					t.Errorf("rcode %v, want %v", a.RCode, tc.rcode)
				}
			}
		})
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(query(f, 1, "reviews.production.svc.cluster.local.", dnsmessage.TypeA, 0))
	f.Add(query(f, 2, "reviews.", dnsmessage.TypeAAAA, 1232))
	f.Add(query(f, 3, "unknown.example.org.", dnsmessage.TypeMX, 4096))
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c})
	s := New(Config{Hosts: func() map[string][]netip.Addr { return manyHosts() }, Namespace: "production"})
	f.Fuzz(func(t *testing.T, q []byte) {
		for _, udp := range []bool{true, false} {
			resp := s.handle(context.Background(), q, udp)
			if resp == nil {
				continue
			}
			limit := maxTCPSize
			if udp {
				limit = MaxUDPSize
			}
			if len(resp) > limit {
				t.Fatalf("answer of %d bytes, more than %d", len(resp), limit)
			}
			var p dnsmessage.Parser
			h, err := p.Start(resp)
			if err != nil || !h.Response || h.ID != binary.BigEndian.Uint16(q) {
				t.Fatalf("answer %x does not parse as a response to ID %x: %v", resp, q[:2], err)
			}
		}
	})
}

func BenchmarkHandle(b *testing.B) {
	s := New(Config{Hosts: func() map[string][]netip.Addr { return meshHosts }, Namespace: "production"})
	for _, tc := range []struct{ name, q string }{
		{"fqdn", "reviews.production.svc.cluster.local."},
		{"short", "reviews."},
		{"refused", "unknown.example.org."},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q := query(b, 1, tc.q, dnsmessage.TypeA, 0)
			b.ReportAllocs()
			for b.Loop() {
				if s.handle(context.Background(), q, true) == nil {
					b.Fatal("no answer")
				}
			}
		})
	}
}
