package fib

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/fibmesh/fibmesh/internal/checksum"
	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// maxFuzzFrame keeps frames within what BPF_PROG_TEST_RUN accepts for XDP
// (a page less head- and tailroom); ETH_HLEN is its lower bound.
const maxFuzzFrame = 3000

// FuzzFIB runs arbitrary frames through the FIB with the XDP table's
// routes, policy and flows, and checks invariants that hold for any
// input:
//   - the run succeeds and the action is PASS, DROP, TX or REDIRECT;
//   - PASS and DROP leave the frame byte-identical, and so is every frame
//     that is not IPv4;
//   - TX and REDIRECT change only the MACs, the TTL (by -1) and the
//     header checksum, which stays valid if it was valid;
//   - every packet counts RX once and exactly one other reason once, so
//     over the run RX equals the sum of the terminal reasons.
func FuzzFIB(f *testing.F) {
	tp := newTestTopo(f)
	fib := tp.f
	for _, tc := range xdpCases(tp) {
		for _, e := range tc.flows {
			if err := fib.Flows.Put(e); err != nil {
				f.Fatal(err)
			}
		}
		for k, a := range tc.rawFlows {
			bk, err := flowKey(k)
			if err != nil {
				f.Fatal(err)
			}
			if err := fib.objs.Flows.Put(&bk, &xfib.FibFlowVal{Action: a}); err != nil {
				f.Fatal(err)
			}
		}
		if len(tc.pkt) >= 14 {
			f.Add(tc.pkt)
		}
	}
	prog := fib.Program()

	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < 14 || len(pkt) > maxFuzzFrame {
			return // refused by BPF_PROG_TEST_RUN (EINVAL), see TestXDP
		}
		in := append([]byte(nil), pkt...)
		before, err := fib.Stats.Read()
		if err != nil {
			t.Fatal(err)
		}
		act, out, err := runXDP(prog, in, loIfindex, 0)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		after, err := fib.Stats.Read()
		if err != nil {
			t.Fatal(err)
		}

		switch act {
		case xdpPass, xdpDrop:
			if !bytes.Equal(out, pkt) {
				t.Fatalf("%s modified the frame:\n in %x\nout %x", actionName[act], pkt, out)
			}
		case xdpTX, xdpRedirect:
			checkForwarded(t, pkt, out)
		default:
			t.Fatalf("action %d (%s) not in {PASS, DROP, TX, REDIRECT}", act, actionName[act])
		}
		if binary.BigEndian.Uint16(pkt[12:14]) != etherTypeIPv4 && !bytes.Equal(out, pkt) {
			t.Fatalf("non-IPv4 frame modified:\n in %x\nout %x", pkt, out)
		}

		d := statsDelta(before, after)
		var terminal []Reason
		for r := range NumReasons {
			c := d[r]
			if c.Packets == 0 && c.Bytes == 0 {
				continue
			}
			if c.Packets != 1 || c.Bytes != uint64(len(pkt)) {
				t.Fatalf("%s rose by %d packets, %d bytes; want 1, %d", Reason(r), c.Packets, c.Bytes, len(pkt))
			}
			if Reason(r) != ReasonRX {
				terminal = append(terminal, Reason(r))
			}
		}
		if d[ReasonRX].Packets != 1 || len(terminal) != 1 {
			t.Fatalf("counted rx +%d and terminal reasons %v; want rx +1 and exactly one reason", d[ReasonRX].Packets, terminal)
		}
		var sum Counter
		for r := ReasonRX + 1; int(r) < NumReasons; r++ {
			sum.Packets += after[r].Packets
			sum.Bytes += after[r].Bytes
		}
		if sum != after[ReasonRX] {
			t.Fatalf("rx %+v != sum of terminal reasons %+v", after[ReasonRX], sum)
		}
	})
}

// checkForwarded checks a forwarded frame against its input: only the
// MACs, TTL and IPv4 header checksum may differ.
func checkForwarded(t *testing.T, in, out []byte) {
	t.Helper()
	if len(out) != len(in) || len(in) < 34 || binary.BigEndian.Uint16(in[12:14]) != etherTypeIPv4 {
		t.Fatalf("forwarded a frame that is not IPv4:\n in %x\nout %x", in, out)
	}
	ihl := int(in[14]&0xf) * 4
	ip, oip := in[14:], out[14:]
	if ip[8] <= 1 || oip[8] != ip[8]-1 {
		t.Fatalf("forwarded with TTL %d -> %d", ip[8], oip[8])
	}
	if !bytes.Equal(oip[:8], ip[:8]) || oip[9] != ip[9] || !bytes.Equal(oip[12:], ip[12:]) {
		t.Fatalf("forwarding changed more than TTL and checksum:\n in %x\nout %x", in, out)
	}
	if checksum.IPv4Header(ip[:ihl]) == binary.BigEndian.Uint16(ip[10:]) && checksum.IPv4Header(oip[:ihl]) != binary.BigEndian.Uint16(oip[10:]) {
		t.Fatalf("valid checksum %#04x became invalid %#04x (want %#04x)", binary.BigEndian.Uint16(ip[10:]), binary.BigEndian.Uint16(oip[10:]), checksum.IPv4Header(oip[:ihl]))
	}
}
