package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/capture"
	"github.com/fibmesh/fibmesh/slowpath/dns"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

// podPath is the data path of one enrolled pod: its capture rules, its
// proxy listeners and its DNS proxy.
type podPath struct {
	netns     *os.File // the DNS proxy's own handle (its upstream dials)
	dnsCancel context.CancelFunc
	dnsDone   chan struct{}
}

// startPod captures namespace/name's traffic and serves it: the capture
// rules first (until the listeners are up, captured connections are
// refused: fail closed), then the proxy's listeners and the DNS proxy in
// the pod's network namespace. It is idempotent: a restarted agent calls
// it again for every pod it restores (the rules are rewritten in one
// transaction, never removed in between).
func (a *Agent) startPod(namespace, name string, ns *os.File, resume bool) error {
	key := namespace + "/" + name
	// One pod change at a time: an enrolment, a producer's re-enrolment
	// after an agent restart and a resumed pod may race for the same pod.
	a.pathMu.Lock()
	defer a.pathMu.Unlock()
	if resume {
		if _, running := a.paths[key]; running {
			return nil
		}
		// Still enrolled in this namespace? (Removed or re-enrolled in
		// another meanwhile: nothing to resume.)
		if cur := a.enrol.Netns(namespace, name); cur == nil || !netns.Same(int(cur.Fd()), int(ns.Fd())) {
			return nil
		}
	}
	p, ok := a.rec.Desired().Pods[key]
	if !ok || !p.IP.IsValid() {
		return fmt.Errorf("pod %s: no IP in node %s's flow table", key, a.cfg.Node)
	}
	// A descriptor of our own for the time of the call: the enrolment
	// server closes the one it holds when a newer enrolment of the pod
	// replaces it.
	own, err := netns.Dup(ns, "netns "+key)
	if err != nil {
		return fmt.Errorf("pod %s: network namespace handle: %w (the pod was enrolled again meanwhile)", key, err)
	}
	defer own.Close()
	fd := int(own.Fd())
	if err := capture.Install(fd, capture.Config{DNS: true}); err != nil {
		return fmt.Errorf("pod %s: capture: %w", key, err)
	}
	if err := a.probes.set(key, p.IP); err != nil {
		return fmt.Errorf("pod %s: %w", key, err)
	}
	if err := a.proxy.AddPod(proxy.Pod{Namespace: namespace, Name: name, Netns: own, IPs: []netip.Addr{p.IP}}); err != nil {
		return fmt.Errorf("pod %s: proxy: %w", key, err)
	}
	if old, ok := a.paths[key]; ok {
		if netns.Same(int(old.netns.Fd()), int(own.Fd())) {
			return nil
		}
		// The pod was re-created in a new network namespace: its DNS
		// proxy moves too.
		old.dnsCancel()
		<-old.dnsDone
		delete(a.paths, key)
	}
	pp, err := a.startDNS(namespace, name, own)
	if err != nil {
		return fmt.Errorf("pod %s: DNS proxy: %w", key, err)
	}
	a.paths[key] = pp
	return nil
}

// startDNS serves the pod's DNS queries (captured from port 53) on
// slowpath.DNSPort, UDP and TCP, inside its network namespace.
func (a *Agent) startDNS(namespace, name string, pns *os.File) (*podPath, error) {
	ns, err := netns.Dup(pns, "netns "+namespace+"/"+name)
	if err != nil {
		return nil, fmt.Errorf("network namespace handle: %w", err)
	}
	var udp, udp6 net.PacketConn
	var tcp net.Listener
	err = netns.Do(int(ns.Fd()), namespace+"/"+name, func() (err error) {
		// UDP on loopback (where capture redirects the pod's queries):
		// a wildcard socket would answer from the pod's address, which
		// conntrack does not match to the redirected query.
		if udp, err = net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", slowpath.DNSPort)); err != nil {
			return err
		}
		if tcp, err = net.Listen("tcp", fmt.Sprintf(":%d", slowpath.DNSPort)); err != nil {
			udp.Close()
			return err
		}
		// IPv6 queries are redirected to ::1; a pod without IPv6 has
		// none to answer.
		udp6, _ = net.ListenPacket("udp6", fmt.Sprintf("[::1]:%d", slowpath.DNSPort))
		return nil
	})
	if err != nil {
		ns.Close()
		return nil, err
	}
	srv := dns.New(dns.Config{
		Hosts:     func() map[string][]netip.Addr { return a.conf.Snapshot().Hosts },
		Namespace: namespace,
		Upstream:  a.cfg.DNSUpstream,
		Dial:      a.markedDialer(ns, namespace+"/"+name),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.ServeUDP(ctx, udp) }()
	go func() { defer wg.Done(); _ = srv.ServeTCP(ctx, tcp) }()
	if udp6 != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.ServeUDP(ctx, udp6) }()
	}
	go func() {
		<-ctx.Done()
		udp.Close()
		if udp6 != nil {
			udp6.Close()
		}
		tcp.Close()
		wg.Wait()
		ns.Close()
		close(done)
	}()
	return &podPath{netns: ns, dnsCancel: cancel, dnsDone: done}, nil
}

// markedDialer dials from inside ns with the agent's socket mark, so
// that capture lets the connection through (DNS upstream).
func (a *Agent) markedDialer(ns *os.File, what string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		d := net.Dialer{Timeout: 5 * time.Second, Control: slowpath.MarkSocket}
		err := netns.Do(int(ns.Fd()), what, func() (err error) {
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// stopPod ends namespace/name's data path: its listeners and connections,
// its DNS proxy, and, when ns is given (the pod is removed, not the agent
// stopping), its capture rules.
func (a *Agent) stopPod(namespace, name string, ns *os.File) error {
	key := namespace + "/" + name
	// Under the same lock as startPod: a removal that races a start
	// (a restored pod, a resumed one) runs wholly before or after it.
	a.pathMu.Lock()
	defer a.pathMu.Unlock()
	a.proxy.RemovePod(namespace, name)
	pp := a.paths[key]
	delete(a.paths, key)
	if pp != nil {
		pp.dnsCancel()
		<-pp.dnsDone
	}
	if ns != nil {
		if err := capture.Remove(int(ns.Fd())); err != nil {
			return fmt.Errorf("pod %s: remove capture: %w", key, err)
		}
		// The pod is gone (not the agent stopping: then the probes
		// keep working, as the capture does).
		if err := a.probes.set(key, netip.Addr{}); err != nil {
			return fmt.Errorf("pod %s: %w", key, err)
		}
	}
	return nil
}

// forgetPod is the enrolment server's Forget: the pod was removed.
func (a *Agent) forgetPod(namespace, name string, ns *os.File) {
	if err := a.stopPod(namespace, name, ns); err != nil {
		a.log.Warn("pod removed; its data path was not fully removed", "pod", namespace+"/"+name, "err", err)
	}
	a.svids.Remove(namespace, name)
}

// podCertificate is the proxy's source of a pod's current SVID.
func (a *Agent) podCertificate(namespace, name string) (*tls.Certificate, spiffeid.ID, error) {
	r := a.svids.Get(namespace, name)
	if r == nil {
		return nil, spiffeid.ID{}, fmt.Errorf("pod %s/%s: no SVID rotation (not enrolled)", namespace, name)
	}
	s := r.Current()
	if s == nil {
		err := r.Err()
		if err == nil {
			err = errors.New("none issued yet")
		}
		return nil, spiffeid.ID{}, fmt.Errorf("pod %s/%s: no SVID: %w", namespace, name, err)
	}
	return s.Certificate, s.ID, nil
}

// trustBundle is the proxy's source of the mesh's roots.
func (a *Agent) trustBundle() []*x509.Certificate { return a.TrustBundle() }

// Connections implements admin.Source: the proxy's connection table.
func (a *Agent) Connections() []admin.Connection {
	cs := a.proxy.Connections()
	out := make([]admin.Connection, 0, len(cs))
	for _, c := range cs {
		out = append(out, admin.Connection(c))
	}
	return out
}

// proxyEvent logs what the proxy refused or denied (at debug level what
// went through: the connection table and metrics have it).
func (a *Agent) proxyEvent(ev proxy.Event) {
	c := ev.Conn
	attrs := []any{"pod", c.Pod, "direction", c.Direction, "listener", c.Listener, "source", c.Source.String(), "destination", c.Destination.String()}
	if c.PeerIdentity != "" {
		attrs = append(attrs, "peer", c.PeerIdentity)
	}
	if ev.Err != nil {
		attrs = append(attrs, "err", ev.Err)
	}
	switch ev.Kind {
	case proxy.EventDenied:
		a.log.Info("connection denied by authorization policy", append(attrs, "policy", ev.Reason)...)
	case proxy.EventRevoked:
		a.log.Info("established connection revoked by a config change; both sides reset", append(attrs, "state", c.State, "offload", c.Offload, "reason", ev.Reason)...)
	case proxy.EventHTTPError:
		if a.refusalLog.allow(time.Now()) {
			a.log.Warn("HTTP server error (logged at most 10 per second; fibmesh_agent_proxy_http_server_errors_total counts all)", "pod", c.Pod, "err", ev.Err)
		}
	case proxy.EventRefused:
		// A flood of garbage must not become a flood of log lines: the
		// counters have every refusal, the log a sample.
		if a.refusalLog.allow(time.Now()) {
			a.log.Info("connection refused (logged at most 10 per second; fibmesh_agent_proxy_refused_total counts all)", append(attrs, "reason", ev.Reason)...)
		}
	default:
		a.log.Debug("connection "+string(ev.Kind), append(attrs, "cluster", c.Cluster, "upstream", c.Upstream.String())...)
	}
}

// proxyRequest logs HTTP requests: denials at info (sampled, as
// refusals), every request at debug level with Envoy's access log fields.
func (a *Agent) proxyRequest(ri proxy.RequestInfo) {
	denied := ri.Policy != ""
	if !denied && !a.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"pod", ri.Pod, "direction", ri.Direction, "method", ri.Method, "authority", ri.Authority,
		"path", ri.Path, "protocol", ri.Protocol, "code", ri.Code, "flags", ri.Flags, "duration", ri.Duration,
		"route", ri.Route, "cluster", ri.Cluster, "upstream", ri.Upstream.String(), "attempts", ri.Attempts,
		"requestId", ri.RequestID}
	if ri.Peer != "" {
		attrs = append(attrs, "peer", ri.Peer)
	}
	if ri.Err != nil {
		attrs = append(attrs, "err", ri.Err)
	}
	if denied {
		if a.refusalLog.allow(time.Now()) {
			a.log.Info("request denied by authorization policy (logged at most 10 per second; fibmesh_agent_proxy_rbac_denied_total counts all)", append(attrs, "policy", ri.Policy)...)
		}
		return
	}
	a.log.Debug("request", attrs...)
}

// meshPod is the proxy's MeshPod: a pod of the mesh by its IP, with its
// identity, from the flow tables (a pod outside the mesh has none). It
// reads a map swapped in whole when tables are applied: no lock.
func (a *Agent) meshPod(ip netip.Addr) (spiffeid.ID, bool) {
	m := a.meshPods.Load()
	if m == nil {
		return spiffeid.ID{}, false
	}
	id, ok := (*m)[ip]
	return id, ok
}

// setMeshPods rebuilds meshPod's map from the applied flow tables.
func (a *Agent) setMeshPods(d *reconcile.Desired) {
	m := make(map[netip.Addr]spiffeid.ID, len(d.MeshPods))
	for ip, s := range d.MeshPods {
		if id, err := spiffeid.FromString(s); err == nil {
			m[ip] = id
		}
	}
	a.meshPods.Store(&m)
}

// logLimit allows n log lines per second.
type logLimit struct {
	mu     sync.Mutex
	second int64
	n      int
}

func (l *logLimit) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := now.Unix(); s != l.second {
		l.second, l.n = s, 0
	}
	l.n++
	return l.n <= 10
}
