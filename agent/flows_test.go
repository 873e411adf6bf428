package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/checksum"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

const (
	tellerID = "spiffe://cluster.local/ns/bank/sa/teller"
	vaultID  = "spiffe://cluster.local/ns/bank/sa/vault"
)

// testIdentities are the identity ids of the node's flow tables in these
// tests.
var testIdentities = &reconcile.Desired{Identities: map[uint32]string{1: tellerID, 2: vaultID}}

// The two ends of one tunnel between two pods of the node: the client
// side (teller's ephemeral port → vault's 15008) and the server side.
var (
	clientEnd = proxy.TunnelFlow{ConnID: 1, Pod: "bank/teller", Local: netip.MustParseAddrPort("10.200.1.11:40000"),
		Remote: netip.MustParseAddrPort("10.200.1.12:15008"), LocalIdentity: tellerID, PeerIdentity: vaultID}
	serverEnd = proxy.TunnelFlow{ConnID: 2, Pod: "bank/vault", Local: clientEnd.Remote, Remote: clientEnd.Local,
		LocalIdentity: vaultID, PeerIdentity: tellerID}
	// toServer and toClient are the tunnel's two keys.
	toServer = fib.FlowKey{Src: clientEnd.Local.Addr(), Dst: clientEnd.Remote.Addr(), SrcPort: 40000, DstPort: 15008, Proto: fib.ProtoTCP}
	toClient = toServer.Reverse()
)

// openTestFlowTable returns a flow table on an unpinned FIB; both go
// when the test ends.
func openTestFlowTable(t *testing.T) (*flowTable, *fib.FIB) {
	t.Helper()
	testenv.NeedRoot(t)
	f, err := fib.Open(fib.Options{MaxFlows: 65536})
	if err != nil {
		t.Fatalf("open FIB: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	ft := newFlowTable(f.Flows, func() *reconcile.Desired { return testIdentities })
	ft.grace = 50 * time.Millisecond
	ft.dropDeadline = 5 * time.Second
	t.Cleanup(func() {
		if err := ft.close(); err != nil {
			t.Errorf("close flow table: %v", err)
		}
	})
	return ft, f
}

// entries returns the FIB's flow entries: action and identity ids by key.
func entries(t *testing.T, f *fib.FIB) map[fib.FlowKey]fib.Flow {
	t.Helper()
	all, err := f.Flows.List()
	if err != nil {
		t.Fatalf("list flows: %v", err)
	}
	out := map[fib.FlowKey]fib.Flow{}
	for _, e := range all {
		out[e.Key] = fib.Flow{Action: e.Flow.Action, SrcID: e.Flow.SrcID, DstID: e.Flow.DstID}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	fwdToServer  = fib.Flow{Action: fib.ActionForward, SrcID: 1, DstID: 2}
	fwdToClient  = fib.Flow{Action: fib.ActionForward, SrcID: 2, DstID: 1}
	dropToClient = fib.Flow{Action: fib.ActionDrop, SrcID: 2, DstID: 1}
	dropToServer = fib.Flow{Action: fib.ActionDrop, SrcID: 1, DstID: 2}
)

// Reference counting: each step is an operation on a connection's handle
// and the flow entries the FIB must hold after it.
func TestFlowTableRefcount(t *testing.T) {
	type step struct {
		op   string // install, revoke, release, grace (wait for the grace period to end)
		conn string // client, server, client2 (the client's tuple again, a new connection)
		want map[fib.FlowKey]fib.Flow
	}
	both := map[fib.FlowKey]fib.Flow{toServer: fwdToServer, toClient: fwdToClient}
	none := map[fib.FlowKey]fib.Flow{}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"one connection", []step{
			{"install", "client", both},
			{"release", "client", none},
		}},
		{"both ends on the node", []step{
			{"install", "client", both},
			{"install", "server", both},
			{"release", "client", both},
			{"release", "server", none},
		}},
		{"release twice counts once", []step{
			{"install", "client", both},
			{"install", "server", both},
			{"release", "server", both},
			{"release", "server", both},
			{"release", "client", none},
		}},
		{"revoked: drop toward the local pod, then grace", []step{
			{"install", "client", both},
			{"revoke", "client", map[fib.FlowKey]fib.Flow{toServer: fwdToServer, toClient: dropToClient}},
			{"revoke", "client", map[fib.FlowKey]fib.Flow{toServer: fwdToServer, toClient: dropToClient}},
			{"release", "client", map[fib.FlowKey]fib.Flow{toClient: dropToClient}},
			{"grace", "", none},
		}},
		{"server end revoked", []step{
			{"install", "server", both},
			{"revoke", "server", map[fib.FlowKey]fib.Flow{toServer: dropToServer, toClient: fwdToClient}},
			{"release", "server", map[fib.FlowKey]fib.Flow{toServer: dropToServer}},
			{"grace", "", none},
		}},
		{"one end of two revoked", []step{
			{"install", "client", both},
			{"install", "server", both},
			{"revoke", "client", map[fib.FlowKey]fib.Flow{toServer: fwdToServer, toClient: dropToClient}},
			{"release", "server", map[fib.FlowKey]fib.Flow{toServer: fwdToServer, toClient: dropToClient}},
			{"release", "client", map[fib.FlowKey]fib.Flow{toClient: dropToClient}},
			{"grace", "", none},
		}},
		{"both ends revoked", []step{
			{"install", "client", both},
			{"install", "server", both},
			{"revoke", "client", map[fib.FlowKey]fib.Flow{toServer: fwdToServer, toClient: dropToClient}},
			{"revoke", "server", map[fib.FlowKey]fib.Flow{toServer: dropToServer, toClient: dropToClient}},
			{"release", "client", map[fib.FlowKey]fib.Flow{toServer: dropToServer, toClient: dropToClient}},
			{"release", "server", map[fib.FlowKey]fib.Flow{toServer: dropToServer, toClient: dropToClient}},
			{"grace", "", none},
		}},
		{"a new connection takes a key in its grace period", []step{
			{"install", "client", both},
			{"revoke", "client", map[fib.FlowKey]fib.Flow{toServer: fwdToServer, toClient: dropToClient}},
			{"release", "client", map[fib.FlowKey]fib.Flow{toClient: dropToClient}},
			{"install", "client2", both},
			{"release", "client2", none},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ft, f := openTestFlowTable(t)
			handles := map[string]proxy.FlowHandle{}
			flows := map[string]proxy.TunnelFlow{"client": clientEnd, "server": serverEnd, "client2": clientEnd}
			for i, s := range tt.steps {
				switch s.op {
				case "install":
					h, err := ft.Install(flows[s.conn])
					if err != nil {
						t.Fatalf("step %d: install %s: %v", i, s.conn, err)
					}
					handles[s.conn] = h
				case "revoke":
					if err := handles[s.conn].Revoke(time.Now()); err != nil {
						t.Fatalf("step %d: revoke %s: %v", i, s.conn, err)
					}
				case "release":
					handles[s.conn].Release()
				case "grace":
					waitFor(t, "the grace period's end", 5*time.Second, func() bool { return len(entries(t, f)) == 0 })
				}
				if diff := cmp.Diff(s.want, entries(t, f), cmpFlow); diff != "" {
					t.Fatalf("step %d (%s %s): flow entries (-want +got):\n%s", i, s.op, s.conn, diff)
				}
			}
			ft.mu.Lock()
			defer ft.mu.Unlock()
			if len(ft.keys) != 0 || len(ft.conns) != 0 || len(ft.draining) != 0 {
				t.Errorf("table not empty at the end: %d keys, %d connections, %d draining", len(ft.keys), len(ft.conns), len(ft.draining))
			}
		})
	}
}

// xdpMD mirrors struct xdp_md, the context of an XDP test run.
type xdpMD struct {
	Data, DataEnd, DataMeta      uint32
	IngressIfindex, RxQueueIndex uint32
	EgressIfindex                uint32
}

const (
	xdpDrop = 1
	xdpPass = 2
)

// tcpFrame is an Ethernet frame of a TCP ACK from src to dst.
func tcpFrame(k fib.FlowKey) []byte {
	b := make([]byte, 14+20+20)
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = 6
	s, d := k.Src.As4(), k.Dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum.IPv4Header(ip))
	tcp := b[34:]
	binary.BigEndian.PutUint16(tcp[0:], k.SrcPort)
	binary.BigEndian.PutUint16(tcp[2:], k.DstPort)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	return b
}

// sendXDP runs the FIB's program over a packet of k, as if it came in on
// loopback, and returns the XDP action.
func sendXDP(t *testing.T, f *fib.FIB, k fib.FlowKey) uint32 {
	t.Helper()
	pkt := tcpFrame(k)
	ret, err := f.Program().Run(&ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+512),
		Context: xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: 1}})
	if err != nil {
		t.Fatalf("XDP test run: %v", err)
	}
	return ret
}

// histogramCount returns the revocation latency histogram's sample count.
func histogramCount(t *testing.T, ft *flowTable) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(ft.collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "fibmesh_agent_offload_revocation_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no fibmesh_agent_offload_revocation_seconds")
	return 0
}

// offloadFlow returns the table's admin row of connection id.
func offloadFlow(t *testing.T, ft *flowTable, id uint64) (admin.OffloadFlow, bool) {
	t.Helper()
	rows, err := ft.list()
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, r := range rows {
		if r.ConnID == id {
			return r, true
		}
	}
	return admin.OffloadFlow{}, false
}

// Revoke: the entry toward the local pod drops (its counters from zero),
// the other keeps forwarding, the latency from pushed to the first
// dropped packet is measured from the entry's last_seen_ns, and the drop
// entry outlives the connection for the grace period.
func TestFlowTableRevoke(t *testing.T) {
	ft, f := openTestFlowTable(t)
	ft.grace = time.Hour // ended by hand below
	h, err := ft.Install(clientEnd)
	if err != nil {
		t.Fatal(err)
	}
	// Before: both directions forward (no route here: the stack gets
	// them) and count.
	for _, k := range []fib.FlowKey{toServer, toClient} {
		if got := sendXDP(t, f, k); got != xdpPass {
			t.Fatalf("before revoke, %s: XDP action %d, want XDP_PASS (%d)", k, got, xdpPass)
		}
	}
	if p, b := h.Counters(); p != 2 || b == 0 {
		t.Fatalf("counters before revoke: %d packets %d bytes, want 2 packets", p, b)
	}
	pushed := time.Now()
	if err := h.Revoke(pushed); err != nil {
		t.Fatal(err)
	}
	fl, ok, err := f.Flows.Get(toClient)
	if err != nil || !ok || fl.Action != fib.ActionDrop || fl.Packets != 0 {
		t.Fatalf("entry toward the local pod after revoke: %+v %v %v, want drop with no packet counted", fl, ok, err)
	}
	if p, _ := h.Counters(); p != 2 {
		t.Errorf("counters just after revoke: %d packets, want the 2 counted before", p)
	}
	row, _ := offloadFlow(t, ft, clientEnd.ConnID)
	if row.State != "revoked" || row.Revocation == nil || row.Revocation.State != revocationWaiting {
		t.Errorf("row before the first drop: %+v", row)
	}
	// The peer's packet is dropped, ours still goes.
	before := time.Now()
	if got := sendXDP(t, f, toClient); got != xdpDrop {
		t.Fatalf("after revoke, toward the local pod: XDP action %d, want XDP_DROP (%d)", got, xdpDrop)
	}
	after := time.Now()
	if got := sendXDP(t, f, toServer); got != xdpPass {
		t.Fatalf("after revoke, toward the peer: XDP action %d, want XDP_PASS (%d)", got, xdpPass)
	}
	waitFor(t, "the first drop measured", 5*time.Second, func() bool {
		r, _ := offloadFlow(t, ft, clientEnd.ConnID)
		return r.Revocation.State != revocationWaiting
	})
	row, _ = offloadFlow(t, ft, clientEnd.ConnID)
	rv := row.Revocation
	if rv.State != revocationDropped || rv.Dropped != 1 || rv.FirstDropErrorMs != 0 {
		t.Fatalf("revocation: %+v, want dropped, 1 packet, exact", rv)
	}
	// The drop happened between before and after: so must the latency,
	// to the precision of the clock conversion (a few µs under -race).
	lat := time.Duration(rv.FirstDropMs * float64(time.Millisecond))
	const slack = 100 * time.Microsecond
	if lo, hi := before.Sub(pushed)-slack, after.Sub(pushed)+slack; lat < lo || lat > hi {
		t.Errorf("revocation latency %v, want within [%v, %v] (the drop's XDP run)", lat, lo, hi)
	}
	if n := histogramCount(t, ft); n != 1 {
		t.Errorf("revocation histogram: %d samples, want 1", n)
	}
	if v := testutil.ToFloat64(ft.revocations.WithLabelValues("dropped")); v != 1 {
		t.Errorf("revocations{result=dropped} = %v, want 1", v)
	}
	if p, _ := h.Counters(); p != 4 {
		t.Errorf("counters after: %d packets, want 4 (2 before, the drop, one out)", p)
	}
	wantEntries := []admin.OffloadFlowEntry{
		{Direction: "out", Src: clientEnd.Local, Dst: clientEnd.Remote, Action: "forward", SrcID: 1, DstID: 2, Packets: 2},
		{Direction: "in", Src: clientEnd.Remote, Dst: clientEnd.Local, Action: "drop", SrcID: 2, DstID: 1, Packets: 1},
	}
	if diff := cmp.Diff(wantEntries, row.Entries, cmpEntry); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if row.LocalIdentityID != 1 || row.PeerIdentityID != 2 || row.LocalIdentity != tellerID || row.Pod != "bank/teller" || row.Packets != 4 {
		t.Errorf("row: %+v", row)
	}
	if err := h.Revoke(time.Now()); err != nil {
		t.Errorf("second revoke: %v, want a no-op", err)
	}

	// Released: the drop entry stays, the connection is listed as
	// draining until the grace period ends.
	h.Release()
	if p, _ := h.Counters(); p != 4 {
		t.Errorf("counters after release: %d packets, want the 4 counted", p)
	}
	if err := h.Revoke(time.Now()); err == nil || !strings.Contains(err.Error(), "already released") {
		t.Errorf("revoke after release: %v, want an error", err)
	}
	if diff := cmp.Diff(map[fib.FlowKey]fib.Flow{toClient: dropToClient}, entries(t, f), cmpFlow); diff != "" {
		t.Errorf("entries after release (-want +got):\n%s", diff)
	}
	row, ok = offloadFlow(t, ft, clientEnd.ConnID)
	if !ok || row.State != "draining" || row.Entries[0].Action != "deleted" || row.Entries[1].Action != "drop" {
		t.Errorf("row after release: %+v %v, want draining", row, ok)
	}
	ft.mu.Lock()
	r := ft.keys[toClient]
	ft.mu.Unlock()
	ft.expire(toClient, r)
	if n := len(entries(t, f)); n != 0 {
		t.Errorf("%d entries after the grace period, want 0", n)
	}
	if _, ok := offloadFlow(t, ft, clientEnd.ConnID); ok {
		t.Error("connection still listed after its grace period")
	}
}

// cmpEntry ignores the idle time of a listed entry, and its bytes (the
// data path's count of a frame's length).
// cmpFlow compares fib.Flow values (their NAT is a netip.AddrPort).
var cmpFlow = cmpopts.EquateComparable(netip.AddrPort{})

var cmpEntry = cmp.Options{cmpopts.IgnoreFields(admin.OffloadFlowEntry{}, "IdleMs", "Bytes"), cmpopts.EquateComparable(netip.AddrPort{})}

// A revoked connection whose peer sends nothing: no latency, counted as
// no_drop once the deadline passes, and nothing observed.
func TestFlowTableRevokeNoDrop(t *testing.T) {
	ft, _ := openTestFlowTable(t)
	ft.dropDeadline = 20 * time.Millisecond
	h, err := ft.Install(clientEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if err := h.Revoke(time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deadline", 5*time.Second, func() bool {
		return testutil.ToFloat64(ft.revocations.WithLabelValues("no_drop")) == 1
	})
	row, _ := offloadFlow(t, ft, clientEnd.ConnID)
	if row.Revocation.State != revocationNoDrop || row.Revocation.FirstDropMs != 0 {
		t.Errorf("revocation: %+v, want no-drop without latency", row.Revocation)
	}
	if n := histogramCount(t, ft); n != 0 {
		t.Errorf("revocation histogram: %d samples, want 0", n)
	}
	waitFor(t, "the poller's exit", 5*time.Second, func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		return !ft.polling
	})
}

// Many connections installed, some revoked, all released, concurrently:
// the FIB ends with no entry, the table with no state and no goroutine.
func TestFlowTableNoLeak(t *testing.T) {
	ft, f := openTestFlowTable(t)
	ft.grace = 10 * time.Millisecond
	ft.dropDeadline = 10 * time.Millisecond
	const n, workers = 10000, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				client := netip.AddrFrom4([4]byte{10, 200, 1, byte(10 + i%200)})
				flow := proxy.TunnelFlow{ConnID: uint64(i), Pod: "bank/teller",
					Local:  netip.AddrPortFrom(client, uint16(20000+i)),
					Remote: netip.MustParseAddrPort("10.200.2.11:15008"), LocalIdentity: tellerID, PeerIdentity: vaultID}
				h, err := ft.Install(flow)
				if err != nil {
					errs <- fmt.Errorf("install %d: %w", i, err)
					return
				}
				if i%10 == 0 {
					if err := h.Revoke(time.Now()); err != nil {
						errs <- fmt.Errorf("revoke %d: %w", i, err)
						return
					}
				}
				h.Release()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "every entry deleted", 10*time.Second, func() bool { return len(entries(t, f)) == 0 })
	waitFor(t, "the table empty", 10*time.Second, func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		return len(ft.keys) == 0 && len(ft.conns) == 0 && len(ft.draining) == 0 && len(ft.pending) == 0 && !ft.polling
	})
	if v := testutil.ToFloat64(ft.installs); v != n {
		t.Errorf("installs = %v, want %d", v, n)
	}
	if v := testutil.ToFloat64(ft.releases); v != n {
		t.Errorf("releases = %v, want %d", v, n)
	}
	for _, op := range []string{"install", "revoke", "delete", "poll"} {
		if v := testutil.ToFloat64(ft.errs.WithLabelValues(op)); v != 0 {
			t.Errorf("errors{op=%s} = %v, want 0", op, v)
		}
	}
	if got := testutil.ToFloat64(ft.revocations.WithLabelValues("dropped")) + testutil.ToFloat64(ft.revocations.WithLabelValues("no_drop")); got != n/10 {
		t.Errorf("revocations settled: %v, want %d", got, n/10)
	}
}

// close deletes every entry, drop entries in their grace period too, and
// the table refuses work afterwards.
func TestFlowTableClose(t *testing.T) {
	ft, f := openTestFlowTable(t)
	ft.grace = time.Hour
	a, err := ft.Install(clientEnd)
	if err != nil {
		t.Fatal(err)
	}
	other := clientEnd
	other.ConnID, other.Local = 3, netip.MustParseAddrPort("10.200.1.11:40001")
	b, err := ft.Install(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Revoke(time.Now()); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if n := len(entries(t, f)); n != 3 {
		t.Fatalf("%d entries before close, want 3 (a's two, b's drop entry)", n)
	}
	if err := ft.close(); err != nil {
		t.Fatal(err)
	}
	if n := len(entries(t, f)); n != 0 {
		t.Errorf("%d entries after close, want 0", n)
	}
	if _, err := ft.Install(serverEnd); !errors.Is(err, errFlowTableClosed) {
		t.Errorf("install after close: %v, want errFlowTableClosed", err)
	}
	if err := a.Revoke(time.Now()); !errors.Is(err, errFlowTableClosed) {
		t.Errorf("revoke after close: %v, want errFlowTableClosed", err)
	}
	a.Release() // no-op
	if err := ft.close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// Identity ids come from the node's current flow tables.
func TestFlowTableIdentityIDs(t *testing.T) {
	d := testIdentities
	ft := newFlowTable(nil, func() *reconcile.Desired { return d })
	for _, tt := range []struct {
		spiffeID string
		want     uint32
	}{{tellerID, 1}, {vaultID, 2}, {"spiffe://cluster.local/ns/bank/sa/other", 0}, {"", 0}} {
		if got := ft.identityID(tt.spiffeID); got != tt.want {
			t.Errorf("identityID(%q) = %d, want %d", tt.spiffeID, got, tt.want)
		}
	}
	d = &reconcile.Desired{Identities: map[uint32]string{7: tellerID}}
	if got := ft.identityID(tellerID); got != 7 {
		t.Errorf("after new flow tables, identityID(teller) = %d, want 7", got)
	}
	d = nil
	if got := ft.identityID(tellerID); got != 0 {
		t.Errorf("without flow tables, identityID(teller) = %d, want 0", got)
	}
}

func TestTunnelKeys(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		name          string
		local, remote netip.AddrPort
		wantOut       fib.FlowKey
		wantErr       string
	}{
		{"client end", ap("10.200.1.11:40000"), ap("10.200.1.12:15008"), toServer, ""},
		{"IPv4-mapped addresses", ap("[::ffff:10.200.1.11]:40000"), ap("[::ffff:10.200.1.12]:15008"), toServer, ""},
		{"IPv6", ap("[fd00::1]:40000"), ap("10.200.1.12:15008"), fib.FlowKey{}, `Local "[fd00::1]:40000": want an IPv4 address`},
		{"no port", ap("10.200.1.11:40000"), ap("10.200.1.12:0"), fib.FlowKey{}, `Remote "10.200.1.12:0"`},
		{"unset", netip.AddrPort{}, ap("10.200.1.12:15008"), fib.FlowKey{}, "connection 5 (pod bank/teller): Local"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, in, err := tunnelKeys(proxy.TunnelFlow{ConnID: 5, Pod: "bank/teller", Local: tt.local, Remote: tt.remote})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out != tt.wantOut || in != tt.wantOut.Reverse() {
				t.Errorf("keys %s, %s; want %s and its reverse", out, in, tt.wantOut)
			}
		})
	}
}

// Without a FIB the proxy gets no flow table: a nil interface, not a
// nil *flowTable in one.
func TestNoFIBNoFlowTable(t *testing.T) {
	a := &Agent{}
	if ft := a.openFlowTable(); ft != nil {
		t.Errorf("openFlowTable without a FIB = %#v, want nil", ft)
	}
	flows, err := a.OffloadFlows()
	if err != nil || flows == nil || len(flows) != 0 {
		t.Errorf("OffloadFlows without a FIB = %v, %v; want an empty list", flows, err)
	}
	if err := a.flows.close(); err != nil {
		t.Errorf("close of no flow table: %v", err)
	}
}

// The agent's registry carries the flow table's metrics.
func TestFlowTableMetricsRegistered(t *testing.T) {
	a := &Agent{}
	a.flows = newFlowTable(nil, func() *reconcile.Desired { return nil })
	m := newMetrics(a)
	reg := prometheus.NewRegistry()
	for _, c := range m.collectors() {
		if c != prometheus.Collector(m.state) { // reads the FIB at each scrape
			reg.MustRegister(c)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{"fibmesh_agent_offload_flow_entries", "fibmesh_agent_offload_flow_connections",
		"fibmesh_agent_offload_revocation_seconds", "fibmesh_agent_offload_flow_installs_total",
		"fibmesh_agent_offload_flow_releases_total", "fibmesh_agent_offload_revocations_total", "fibmesh_agent_offload_flow_errors_total"} {
		if !got[name] {
			t.Errorf("the agent's metrics lack %s", name)
		}
	}
}

// A restarted agent removes the offload entries an earlier one left in
// a pinned flow map, and nothing else.
func TestFlowTableSweep(t *testing.T) {
	testenv.NeedRoot(t)
	f, err := fib.Open(fib.Options{MaxFlows: 4096})
	if err != nil {
		t.Fatalf("open FIB: %v", err)
	}
	defer f.Close()
	tcp := func(src, dst string) fib.FlowKey {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		return fib.FlowKey{Src: s.Addr(), Dst: d.Addr(), SrcPort: s.Port(), DstPort: d.Port(), Proto: fib.ProtoTCP}
	}
	udp := tcp("10.200.1.11:5000", "10.200.2.11:15008")
	udp.Proto = fib.ProtoUDP
	left := []fib.FlowEntry{
		{Key: toServer, Flow: fwdToServer},
		{Key: toClient, Flow: dropToClient},
		{Key: tcp("10.200.1.13:15008", "10.200.2.13:41000"), Flow: fib.Flow{Action: fib.ActionForward, DstID: 4}},
	}
	kept := []fib.FlowEntry{
		{Key: tcp("10.200.1.11:41000", "10.200.2.11:15008"), Flow: fib.Flow{Action: fib.ActionForward}}, // punted: no ids
		{Key: tcp("10.200.1.11:41000", "10.200.2.11:8080"), Flow: fib.Flow{Action: fib.ActionDrop, SrcID: 1}},
		{Key: udp, Flow: fib.Flow{Action: fib.ActionForward, SrcID: 1, DstID: 2}},
	}
	if err := f.Flows.Put(append(slices.Clone(left), kept...)...); err != nil {
		t.Fatal(err)
	}
	a := &Agent{fib: f, log: slog.New(slog.DiscardHandler)}
	if ft := a.openFlowTable(); ft == nil {
		t.Fatal("no flow table with a FIB")
	}
	want := map[fib.FlowKey]fib.Flow{}
	for _, e := range kept {
		want[e.Key] = e.Flow
	}
	if diff := cmp.Diff(want, entries(t, f), cmpFlow); diff != "" {
		t.Errorf("entries after the sweep (-want +got):\n%s", diff)
	}
	if err := a.flows.close(); err != nil {
		t.Error(err)
	}
}
