package lab_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/labtest"
)

// prefix is this package's own, so its tests never collide with the labs of
// other packages' tests running at the same time.
const prefix = "fm-tl-"

var cmpLab = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// TestLab brings one 2x2 lab up and runs the checks that need it.
func TestLab(t *testing.T) {
	l := labtest.Up(t, lab.Config{Nodes: 2, PodsPerNode: 2, Prefix: prefix})
	src := mustPod(t, l, "node1-pod1")
	dst := mustPod(t, l, "node2-pod2")

	t.Run("Load", func(t *testing.T) {
		got, err := lab.Load(l.Config.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(l, got, cmpLab); diff != "" {
			t.Errorf("Load mismatch (-Up +Load):\n%s", diff)
		}
	})

	t.Run("Namespaces", func(t *testing.T) {
		for _, ns := range l.Namespaces() {
			if !lab.NetnsExists(ns) {
				t.Errorf("netns %s missing", ns)
			}
		}
		if got := len(l.Namespaces()); got != 7 {
			t.Errorf("%d namespaces, want 7 (fabric, 2 nodes, 4 pods)", got)
		}
	})

	t.Run("Offloads", func(t *testing.T) {
		for _, c := range []struct{ netns, dev string }{
			{l.FabricNetns, "n1"}, {l.Nodes[0].Netns, "eth0"}, {l.Nodes[0].Netns, "p1"}, {src.Netns, "eth0"},
		} {
			out, err := l.Command(context.Background(), c.netns, "ethtool", "-k", c.dev).CombinedOutput()
			if err != nil {
				t.Fatalf("ethtool -k %s in %s: %v\n%s", c.dev, c.netns, err, out)
			}
			for _, want := range []string{"tx-checksumming: off", "tcp-segmentation-offload: off",
				"generic-segmentation-offload: off", "generic-receive-offload: on"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("%s/%s: ethtool -k lacks %q", c.netns, c.dev, want)
				}
			}
		}
	})

	t.Run("Addresses", func(t *testing.T) {
		out, err := l.Command(context.Background(), src.Netns, "ip", "-br", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "10.200.1.11/32") {
			t.Errorf("pod eth0 addresses: %v %s, want 10.200.1.11/32", err, out)
		}
		out, err = l.Command(context.Background(), src.Netns, "ip", "-br", "link", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "02:66:6d:01:01:02") {
			t.Errorf("pod eth0 link: %v %s, want MAC 02:66:6d:01:01:02", err, out)
		}
	})

	t.Run("PingAcrossNodes", func(t *testing.T) {
		before := counters(t, l.Nodes[0].Netns)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := l.Command(ctx, src.Netns, "ping", "-c", "2", "-W", "1", dst.IP.String()).CombinedOutput()
		if err != nil {
			t.Fatalf("ping %s from %s: %v\n%s", dst.IP, src.Name, err, out)
		}
		after := counters(t, l.Nodes[0].Netns)
		// Two echo requests out, two replies in: node1 forwards all four.
		if d := after.ForwDatagrams - before.ForwDatagrams; d < 4 {
			t.Errorf("node1 ForwDatagrams rose by %d, want >= 4 (%+v -> %+v)", d, before, after)
		}
	})

	t.Run("TCPAcrossNodes", func(t *testing.T) {
		var ln net.Listener
		err := lab.InNetns(dst.Netns, func() (err error) {
			ln, err = net.Listen("tcp", net.JoinHostPort(dst.IP.String(), "0"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		served := make(chan error, 1)
		go func() { // runs on any thread: the listener stays in dst's netns
			c, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				_, err = c.Write([]byte("echo " + line))
			}
			served <- err
		}()

		var conn net.Conn
		err = lab.InNetns(src.Netns, func() (err error) {
			conn, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if got := conn.LocalAddr().(*net.TCPAddr).IP.String(); got != src.IP.String() {
			t.Errorf("dialer's local address %s, want %s (pod netns)", got, src.IP)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		reply, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if reply != "echo hello\n" {
			t.Errorf("reply %q, want %q", reply, "echo hello\n")
		}
		if err := <-served; err != nil {
			t.Errorf("server: %v", err)
		}
	})

	t.Run("InNetnsRestores", func(t *testing.T) {
		root, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		var inside string
		if err := lab.InNetns(src.Netns, func() (err error) {
			inside, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if inside == root {
			t.Errorf("inside InNetns the netns is still %s", root)
		}
		wantErr := errors.New("from fn")
		if err := lab.InNetns(src.Netns, func() error { return wantErr }); !errors.Is(err, wantErr) {
			t.Errorf("InNetns error = %v, want fn's error", err)
		}
		if err := lab.InNetns("fm-tl-nonexistent", func() error { return nil }); err == nil {
			t.Error("InNetns into a missing netns succeeded")
		}
	})
}

func TestDownRemovesEverything(t *testing.T) {
	testenv.NeedRoot(t)
	l, err := lab.Up(context.Background(), lab.Config{Nodes: 1, PodsPerNode: 1, Prefix: prefix, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if left := netnsWithPrefix(t, prefix); len(left) > 0 {
		t.Errorf("netns left after Down: %v", left)
	}
	if _, err := lab.Load(l.Config.StateDir); !errors.Is(err, lab.ErrNoLab) {
		t.Errorf("Load after Down = %v, want ErrNoLab", err)
	}
	if err := l.Down(); err != nil {
		t.Errorf("second Down = %v, want nil (idempotent)", err)
	}
}

func TestUpCleansLeftovers(t *testing.T) {
	testenv.NeedRoot(t)
	// A crashed run: a stale namespace with the prefix, and one of its
	// links stranded in the root namespace.
	stale := prefix + "stale"
	for _, args := range [][]string{
		{"netns", "add", stale},
		{"link", "add", prefix + "x", "type", "veth", "peer", "name", "eth0", "netns", stale},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { lab.Cleanup(prefix) })
	pinDir := lab.BPFPinRoot + "/" + prefix + "node1"
	if err := os.MkdirAll(pinDir, 0o755); err != nil {
		t.Logf("no bpffs pin dir (%v); skipping that part", err)
		pinDir = ""
	}

	l := labtest.Up(t, lab.Config{Nodes: 1, PodsPerNode: 1, Prefix: prefix})
	if lab.NetnsExists(stale) {
		t.Errorf("stale netns %s survived Up", stale)
	}
	if out, err := exec.Command("ip", "link", "show", prefix+"x").CombinedOutput(); err == nil {
		t.Errorf("stale root-netns link survived Up:\n%s", out)
	}
	if pinDir != "" {
		if _, err := os.Stat(pinDir); err == nil {
			t.Errorf("stale pin dir %s survived Up", pinDir)
		}
	}
	if !lab.NetnsExists(l.Nodes[0].Netns) {
		t.Errorf("netns %s missing after Up", l.Nodes[0].Netns)
	}
}

func TestUpFailureTearsDown(t *testing.T) {
	testenv.NeedRoot(t)
	// A context that is already cancelled makes the first command fail.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := lab.Up(ctx, lab.Config{Nodes: 1, PodsPerNode: 1, Prefix: prefix, StateDir: t.TempDir()})
	var ce *lab.CommandError
	if !errors.As(err, &ce) || !strings.HasPrefix(strings.Join(ce.Args, " "), "ip netns add "+prefix) {
		t.Fatalf("Up with cancelled ctx = %v, want a CommandError for ip netns add", err)
	}
	if left := netnsWithPrefix(t, prefix); len(left) > 0 {
		t.Errorf("netns left after failed Up: %v", left)
	}
}

func TestCleanupRejectsForeignPrefix(t *testing.T) {
	for _, p := range []string{"", "f", "ns-", "fm"} {
		if err := lab.Cleanup(p); !errors.Is(err, lab.ErrInvalidConfig) {
			t.Errorf("Cleanup(%q) = %v, want ErrInvalidConfig", p, err)
		}
	}
}

func mustPod(t *testing.T, l *lab.Lab, name string) *lab.Pod {
	t.Helper()
	p, err := l.Pod(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func counters(t *testing.T, netns string) lab.ForwardCounters {
	t.Helper()
	c, err := lab.Counters(netns)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func netnsWithPrefix(t *testing.T, p string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], p) {
			found = append(found, f[0])
		}
	}
	return found
}
