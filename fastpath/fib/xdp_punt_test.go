package fib

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/fastpath/xsk"
)

// TestXDPPunt punts through a real AF_XDP socket registered in the xsks
// map. Under BPF_PROG_TEST_RUN a redirect is not carried out: the program
// returns XDP_REDIRECT and counts punt, which is what is checked here;
// delivery to the agent is the lab integration test's job.
func TestXDPPunt(t *testing.T) {
	f := openTestFIB(t)
	// fp0 has more rx queues than PuntQueues, as a many-queue NIC does.
	tn := newTestNetns(t, 2*PuntQueues, "fp0", "fp1")
	in, out := tn.ifindex["fp0"], tn.ifindex["fp1"]
	nh := NextHop{Ifindex: out, SrcMAC: macA, DstMAC: macAPod, PuntNew: true}
	if err := f.Routes.Put(Route{netip.MustParsePrefix("10.6.0.0/24"), nh}); err != nil {
		t.Fatal(err)
	}

	var sock *xsk.Socket
	tn.do(t, func() {
		if err := f.TxPorts.Add(out); err != nil {
			t.Fatal(err)
		}
		var err error
		sock, err = xsk.New(in, 0, xsk.Options{NumFrames: 16, FrameSize: 2048, FillSize: 8, CompSize: 8, RxSize: 8, TxSize: 8})
		if err != nil {
			t.Skipf("cannot open an AF_XDP socket here (%v): punt delivery is covered by the lab integration test", err)
		}
	})
	t.Cleanup(func() { sock.Close() })
	// fp0 gets slots 0-15, fp1 slots 16-31. The socket bound to fp0
	// queue 0 also stands in for one of fp1's (the map does not check
	// that a socket matches its slot; the kernel checks at delivery).
	if err := f.Punt.Register(in, 0, sock.FD()); err != nil {
		t.Fatal(err)
	}
	if err := f.Punt.Register(out, 0, sock.FD()); err != nil {
		t.Fatal(err)
	}

	pkt := ip4{Src: "192.0.2.1", Dst: "10.6.0.1", Proto: ProtoTCP}.frame(tcpHdr(40000, 80))
	for _, tc := range []struct {
		name    string
		rxq     uint32
		want    uint32
		reasons []Reason
	}{
		{"queue with a socket punts", 0, xdpRedirect, []Reason{ReasonPunt}},
		{"queue without a socket drops", 1, xdpDrop, []Reason{ReasonDropPuntNoSocket}},
		// base(fp0) + 16 is fp1's first slot: a queue past PuntQueues
		// must not reach another interface's socket (the kernel would
		// drop it there while punt was counted).
		{"queue past PuntQueues has no slot", PuntQueues, xdpDrop, []Reason{ReasonDropPuntNoSocket}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := f.Stats.Read()
			if err != nil {
				t.Fatal(err)
			}
			var got uint32
			var frame []byte
			tn.do(t, func() { got, frame, err = runXDP(f.Program(), pkt, uint32(in), tc.rxq) })
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			after, err := f.Stats.Read()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("action = %s, want %s", actionName[got], actionName[tc.want])
			}
			if d := cmp.Diff(pkt, frame); d != "" {
				t.Errorf("punted frame modified (-want +got):\n%s", d)
			}
			if d := deltaDiff(wantDelta(len(pkt), tc.reasons...), statsDelta(before, after)); d != "" {
				t.Errorf("counter deltas (-want +got):\n%s", d)
			}
		})
	}

	// Once the agent's socket is gone, punting fails closed.
	if err := f.Punt.Unregister(in, 0); err != nil {
		t.Fatal(err)
	}
	var got uint32
	var err error
	tn.do(t, func() { got, _, err = runXDP(f.Program(), pkt, uint32(in), 0) })
	if err != nil || got != xdpDrop {
		t.Errorf("after Unregister: %s, %v; want XDP_DROP", actionName[got], err)
	}
}
