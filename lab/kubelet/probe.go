package kubelet

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fibmesh/fibmesh/lab"
)

// prober runs a container's readinessProbe (tcpSocket or httpGet, in the
// pod's network namespace, against the pod's IP) while the container
// runs, as kubelet does: after initialDelaySeconds, every periodSeconds,
// ready after successThreshold successes in a row, not ready after
// failureThreshold failures in a row.
type prober struct {
	probe *corev1.Probe
	c     *corev1.Container
	netns string
	ip    netip.Addr
	// started returns when the container last started (zero before).
	started func() time.Time
}

// newProber returns nil when the container has no readiness probe the
// lab can run, with the reason when it has one it cannot (exec, grpc).
func newProber(c *corev1.Container, netns string, ip netip.Addr) (*prober, string) {
	p := c.ReadinessProbe
	if p == nil {
		return nil, ""
	}
	if p.TCPSocket == nil && p.HTTPGet == nil {
		return nil, "readinessProbe: the lab runs tcpSocket and httpGet probes only; this container counts as ready while it runs"
	}
	return &prober{probe: p, c: c, netns: netns, ip: ip, started: func() time.Time { return time.Time{} }}, ""
}

func seconds(v int32, def int32) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

// port resolves a probe's port, a number or a container port name.
func (pr *prober) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return int(p.IntVal), nil
	}
	for _, cp := range pr.c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("readinessProbe port %q: no container port of that name", p.StrVal)
}

// once probes one time.
func (pr *prober) once(ctx context.Context) error {
	timeout := seconds(pr.probe.TimeoutSeconds, 1)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if t := pr.probe.TCPSocket; t != nil {
		port, err := pr.port(t.Port)
		if err != nil {
			return err
		}
		var c net.Conn
		err = lab.InNetns(pr.netns, func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", net.JoinHostPort(pr.ip.String(), strconv.Itoa(port)))
			return err
		})
		if err != nil {
			return err
		}
		return c.Close()
	}
	g := pr.probe.HTTPGet
	port, err := pr.port(g.Port)
	if err != nil {
		return err
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	host := pr.ip.String()
	if g.Host != "" {
		host = g.Host
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), g.Path), nil)
	if err != nil {
		return err
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	req.Header.Set("User-Agent", "kube-probe/fibmesh-lab")
	resp, err := NetnsHTTPClient(pr.netns, timeout).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe: %s", resp.Status)
	}
	return nil
}

// run probes until ctx is done, calling set with each decision (ready or
// not) when it changes, and first once the first decision is made.
func (pr *prober) run(ctx context.Context, running func() bool, set func(ready bool, msg string)) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(seconds(pr.probe.InitialDelaySeconds, 0)):
	}
	okNeed := max(int(pr.probe.SuccessThreshold), 1)
	failNeed := 3
	if pr.probe.FailureThreshold > 0 {
		failNeed = int(pr.probe.FailureThreshold)
	}
	oks, fails := 0, 0
	period := seconds(pr.probe.PeriodSeconds, 10)
	var started time.Time
	for {
		// A restarted container starts not ready (proc sets Ready false):
		// count its probes from zero, or oks, already past okNeed, would
		// never equal it again and the pod would stay not ready. A
		// restart is often too quick for a probe to see it not running.
		if s := pr.started(); !s.Equal(started) {
			started, oks, fails = s, 0, 0
		}
		if running() {
			if err := pr.once(ctx); err != nil {
				oks, fails = 0, fails+1
				if fails == failNeed {
					set(false, "readiness probe failed: "+err.Error())
				}
			} else {
				oks, fails = oks+1, 0
				if oks == okNeed {
					set(true, "")
				}
			}
		} else {
			oks, fails = 0, 0
		}
		// A container not ready yet is probed again sooner, so a
		// lab comes up as soon as its apps listen (kubelet waits the
		// period; the lab's users wait for up).
		wait := period
		if oks < okNeed {
			wait = min(period, 100*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
