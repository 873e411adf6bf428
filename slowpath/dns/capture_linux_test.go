package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// TestCapturedPod is the agent's setup end to end: capture in a pod's
// namespace, the server on wildcard sockets at slowpath.DNSPort there (as
// the agent listens), and Go's resolver in the pod asking a resolver
// address that does not exist, over UDP and TCP: the query is captured,
// and the answer comes back from the address the app asked.
func TestCapturedPod(t *testing.T) {
	for _, fam := range []struct {
		name   string
		opts   []netnstest.Option
		server string // the resolver address the app asks
	}{
		{"ipv4", nil, ""},
		{"ipv4 loopback resolver", nil, "127.0.0.53"},
		{"ipv6", []netnstest.Option{netnstest.WithSubnet(netip.MustParsePrefix("fd00:153::/64"))}, ""},
	} {
		t.Run(fam.name, func(t *testing.T) {
			pair := netnstest.NewPair(t, fam.opts...)
			pod, world := pair.A, pair.B
			var ns *os.File
			var pc net.PacketConn
			var ln net.Listener
			if err := pod.Do(func() (err error) {
				if ns, err = os.Open("/proc/thread-self/ns/net"); err != nil {
					return err
				}
				addr := fmt.Sprintf(":%d", slowpath.DNSPort)
				if pc, err = net.ListenPacket("udp", addr); err != nil {
					return err
				}
				ln, err = net.Listen("tcp", addr)
				return err
			}); err != nil {
				t.Fatalf("set up the pod: %v", err)
			}
			defer ns.Close()
			if err := capture.Install(int(ns.Fd()), capture.Config{DNS: true}); err != nil {
				t.Fatalf("capture: %v", err)
			}
			serveOn(t, New(Config{Hosts: func() map[string][]netip.Addr { return meshHosts }, Namespace: "production"}), pc, ln)

			server := world.Addr.String()
			if fam.server != "" {
				server = fam.server
			}
			for _, network := range []string{"udp", "tcp"} {
				r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (c net.Conn, err error) {
					err = netns.Do(int(ns.Fd()), "pod", func() error {
						var d net.Dialer
						c, err = d.DialContext(ctx, network, net.JoinHostPort(server, "53"))
						return err
					})
					return c, err
				}}
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				addrs, err := r.LookupNetIP(ctx, "ip", "reviews.production.svc.cluster.local.")
				cancel()
				if err != nil {
					t.Fatalf("%s: lookup from the pod through %s:53: %v", network, server, err)
				}
				var got []string
				for _, a := range addrs {
					got = append(got, a.String())
				}
				slices.Sort(got)
				if d := cmp.Diff([]string{"10.96.0.10", "fd00::10"}, got); d != "" {
					t.Errorf("%s: lookup (-want +got):\n%s", network, d)
				}
			}
		})
	}
}
