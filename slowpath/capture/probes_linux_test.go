package capture

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestProbes: a connection the node opens to a captured pod (a kubelet
// probe) reaches the app, from the probe source, only while the node's
// probe table names the pod; without it the pod's capture takes it (to
// the inbound plaintext port, where nothing listens here: refused).
func TestProbes(t *testing.T) {
	testenv.NeedRoot(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			pair := netnstest.NewPair(t, fam.opts...)
			node, pod := pair.A, pair.B
			// A pod's default route goes to its node.
			if err := pod.Do(func() error {
				l, err := netlink.LinkByName(pod.Iface)
				if err != nil {
					return err
				}
				return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: node.Addr.AsSlice()})
			}); err != nil {
				t.Fatal(err)
			}
			if err := Install(int(nsFile(t, pod).Fd()), Config{}); err != nil {
				t.Fatal(err)
			}
			app := listen(t, pod, "tcp", pod.AddrPort(8080).String()).(net.Listener)
			nodeFD := int(nsFile(t, node).Fd())
			t.Cleanup(func() { SetProbePods(nodeFD, nil) })

			want := probeV4
			if pod.Addr.Is6() {
				want = probeV6
			}
			other := netip.MustParseAddr("10.255.0.9")
			if pod.Addr.Is6() {
				other = netip.MustParseAddr("fd00:255::9")
			}
			if err := SetProbePods(nodeFD, []netip.Addr{other, pod.Addr, pod.Addr}); err != nil {
				t.Fatalf("SetProbePods: %v", err)
			}
			c, err := dial(node, "tcp", pod.AddrPort(8080), 0)
			if err != nil {
				t.Fatalf("probe from the node: %v", err)
			}
			s := accept(t, app)
			if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != want {
				t.Errorf("the app sees the probe from %s, want %s", got, want)
			}
			// Both ways: the answer finds the node's socket.
			if _, err := s.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2)
			if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
				t.Fatalf("the node read %q, %v; want the app's answer", buf, err)
			}
			c.Close()

			// Without the table the pod's capture takes the connection.
			if err := SetProbePods(nodeFD, nil); err != nil {
				t.Fatal(err)
			}
			if c, err := dial(node, "tcp", pod.AddrPort(8080), 0); !errors.Is(err, unix.ECONNREFUSED) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("probe without the table: %v, want connection refused (captured to the inbound plaintext port)", err)
			}
		})
	}
}
