package fib

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/testenv"
	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// cmpNetip compares netip values (unexported fields) by value.
var cmpNetip = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
}

func route(prefix string, ifindex int, punt bool) Route {
	return Route{netip.MustParsePrefix(prefix), NextHop{Ifindex: ifindex, SrcMAC: macA, DstMAC: macAPod, PuntNew: punt}}
}

func listRoutes(t *testing.T, r *Routes) []Route {
	t.Helper()
	got, err := r.List()
	if err != nil {
		t.Fatalf("Routes.List: %v", err)
	}
	return got
}

func TestRoutes(t *testing.T) {
	f := openTestFIB(t)
	r := f.Routes

	if got := listRoutes(t, r); len(got) != 0 {
		t.Fatalf("new table: %v", got)
	}
	initial := []Route{route("10.1.0.0/24", 2, false), route("10.1.0.7/32", 3, true), route("0.0.0.0/0", 4, false), route("10.0.0.0/8", 5, false)}
	if err := r.Put(initial...); err != nil {
		t.Fatal(err)
	}
	want := []Route{route("0.0.0.0/0", 4, false), route("10.0.0.0/8", 5, false), route("10.1.0.0/24", 2, false), route("10.1.0.7/32", 3, true)}
	if d := cmp.Diff(want, listRoutes(t, r), cmpNetip); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}

	// Put of an unmasked prefix stores the masked one.
	if err := r.Put(route("10.2.0.9/16", 6, false)); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := r.Lookup(netip.MustParseAddr("10.2.200.1")); err != nil || !ok || got.Prefix != netip.MustParsePrefix("10.2.0.0/16") {
		t.Errorf("Lookup after unmasked Put = %v, %v, %v; want 10.2.0.0/16", got, ok, err)
	}
	if err := r.Delete(netip.MustParsePrefix("10.2.0.0/16")); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		addr string
		want string // prefix; "" for none
	}{
		{"10.1.0.7", "10.1.0.7/32"},
		{"10.1.0.8", "10.1.0.0/24"},
		{"10.9.9.9", "10.0.0.0/8"},
		{"192.0.2.1", "0.0.0.0/0"},
	} {
		got, ok, err := r.Lookup(netip.MustParseAddr(tc.addr))
		if err != nil || !ok || got.Prefix.String() != tc.want {
			t.Errorf("Lookup(%s) = %v, %v, %v; want %s", tc.addr, got, ok, err, tc.want)
		}
	}
	if _, _, err := r.Lookup(netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("Lookup(IPv6) succeeded")
	}

	// Bad routes: an error naming the problem, and nothing written (even
	// the good routes of the same call).
	good := route("172.16.0.0/12", 2, false)
	for _, tc := range []struct {
		name    string
		bad     Route
		wantErr string
	}{
		{"invalid prefix", Route{netip.Prefix{}, good.NextHop}, "invalid prefix"},
		{"IPv6 prefix", Route{netip.MustParsePrefix("2001:db8::/32"), good.NextHop}, "not an IPv4 address"},
		{"zero ifindex", Route{netip.MustParsePrefix("10.3.0.0/16"), NextHop{SrcMAC: macA, DstMAC: macB}}, "ifindex 0: must be > 0"},
		{"short source MAC", Route{netip.MustParsePrefix("10.3.0.0/16"), NextHop{Ifindex: 2, SrcMAC: macA[:5], DstMAC: macB}}, "next hop source"},
		{"missing destination MAC", Route{netip.MustParsePrefix("10.3.0.0/16"), NextHop{Ifindex: 2, SrcMAC: macA}}, "next hop destination"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := listRoutes(t, r)
			err := r.Put(good, tc.bad)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Put error = %v, want %q", err, tc.wantErr)
			}
			if err := r.Replace([]Route{tc.bad}); err == nil {
				t.Error("Replace with a bad route succeeded")
			}
			if d := cmp.Diff(before, listRoutes(t, r), cmpNetip); d != "" {
				t.Errorf("table changed by a failed Put/Replace (-before +after):\n%s", d)
			}
		})
	}

	// Replace: new and changed routes written, stale ones gone.
	next := []Route{route("10.1.0.0/24", 7, false), route("10.4.0.0/16", 8, true), route("0.0.0.0/0", 4, false)}
	if err := r.Replace(next); err != nil {
		t.Fatal(err)
	}
	want = []Route{route("0.0.0.0/0", 4, false), route("10.1.0.0/24", 7, false), route("10.4.0.0/16", 8, true)}
	if d := cmp.Diff(want, listRoutes(t, r), cmpNetip); d != "" {
		t.Errorf("after Replace (-want +got):\n%s", d)
	}

	// Delete: listed prefixes go, missing ones are ignored.
	if err := r.Delete(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.99.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.Lookup(netip.MustParseAddr("192.0.2.1")); ok {
		t.Error("default route still matches after Delete")
	}
	if err := r.Delete(netip.MustParsePrefix("2001:db8::/32")); err == nil {
		t.Error("Delete(IPv6) succeeded")
	}
	if err := r.Replace(nil); err != nil {
		t.Fatal(err)
	}
	if got := listRoutes(t, r); len(got) != 0 {
		t.Errorf("after Replace(nil): %v", got)
	}
}

func TestFlows(t *testing.T) {
	f := openTestFIB(t)
	fl := f.Flows

	// A few hundred entries: more than one listBatch chunk (256).
	const n = 600
	var entries []FlowEntry
	for i := range n {
		k := FlowKey{
			Src:     netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
			Dst:     netip.MustParseAddr("10.1.0.1"),
			SrcPort: uint16(30000 + i), DstPort: 443,
			Proto: []Proto{ProtoTCP, ProtoUDP, ProtoICMP}[i%3],
		}
		entries = append(entries, FlowEntry{k, Flow{Action: Action(i % 4), SrcID: uint32(i), DstID: uint32(i * 2)}})
	}
	// Counters given to Put are ignored.
	entries[0].Flow.Packets, entries[0].Flow.Bytes = 99, 99
	if err := fl.Put(entries...); err != nil {
		t.Fatal(err)
	}
	entries[0].Flow.Packets, entries[0].Flow.Bytes = 0, 0

	got, err := fl.List()
	if err != nil {
		t.Fatal(err)
	}
	sortFlows := func(es []FlowEntry) {
		slices.SortFunc(es, func(a, b FlowEntry) int { return a.Key.Src.Compare(b.Key.Src) })
	}
	sortFlows(got)
	sortFlows(entries)
	if d := cmp.Diff(entries, got, cmpNetip); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}

	k := entries[5].Key
	if g, ok, err := fl.Get(k); err != nil || !ok || g != entries[5].Flow {
		t.Errorf("Get(%s) = %+v, %v, %v; want %+v", k, g, ok, err, entries[5].Flow)
	}
	if _, ok, err := fl.Get(key(ProtoTCP, "192.0.2.1", 1, "192.0.2.2", 2)); ok || err != nil {
		t.Errorf("Get(missing) = %v, %v; want false, nil", ok, err)
	}

	// SetAction keeps what the data path counted.
	bk, err := flowKey(k)
	if err != nil {
		t.Fatal(err)
	}
	raw := xfib.FibFlowVal{Action: uint32(ActionForward), SrcId: 1, DstId: 2, Packets: 5, Bytes: 500, LastSeenNs: 12345}
	if err := f.objs.Flows.Put(&bk, &raw); err != nil {
		t.Fatal(err)
	}
	if err := fl.SetAction(k, ActionDrop); err != nil {
		t.Fatal(err)
	}
	want := Flow{Action: ActionDrop, SrcID: 1, DstID: 2, Packets: 5, Bytes: 500, LastSeenNs: 12345}
	if g, _, err := fl.Get(k); err != nil || g != want {
		t.Errorf("after SetAction: %+v, %v; want %+v", g, err, want)
	}
	missing := key(ProtoUDP, "192.0.2.9", 1, "192.0.2.2", 2)
	if err := fl.SetAction(missing, ActionDrop); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("SetAction(missing) = %v, want ErrKeyNotExist", err)
	}
	if _, ok, _ := fl.Get(missing); ok {
		t.Error("SetAction created a missing flow")
	}

	// Validation.
	for _, tc := range []struct {
		e       FlowEntry
		wantErr string
	}{
		{FlowEntry{key(ProtoTCP, "2001:db8::1", 1, "10.0.0.1", 2), Flow{}}, "source"},
		{FlowEntry{key(ProtoTCP, "10.0.0.1", 1, "2001:db8::1", 2), Flow{}}, "destination"},
		{FlowEntry{key(ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 2), Flow{Action: Action(xfib.FibFlowActionFLOW_ACTION_LEN)}}, "unknown action 4"},
	} {
		if err := fl.Put(tc.e); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Put(%s) error = %v, want %q", tc.e.Key, err, tc.wantErr)
		}
	}

	// Delete, missing ones ignored.
	var del []FlowKey
	for _, e := range entries[:n/2] {
		del = append(del, e.Key)
	}
	if err := fl.Delete(append(del, missing)...); err != nil {
		t.Fatal(err)
	}
	got, err = fl.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n-n/2 {
		t.Errorf("after deleting %d of %d: %d flows listed", n/2, n, len(got))
	}
	if _, ok, _ := fl.Get(entries[0].Key); ok {
		t.Error("deleted flow still there")
	}
}

func TestPolicy(t *testing.T) {
	f := openTestFIB(t)
	p := f.Policy
	entries := []PolicyEntry{
		{PolicyKey{netip.MustParseAddr("10.1.0.9"), 443, ProtoTCP}, ModeStrict, false},
		{PolicyKey{netip.MustParseAddr("10.1.0.9"), 53, ProtoUDP}, ModePermissive, true},
		{PolicyKey{netip.MustParseAddr("10.1.0.10"), 65535, ProtoTCP}, ModeDisable, false},
	}
	if err := p.Put(entries...); err != nil {
		t.Fatal(err)
	}
	sortPolicy := func(es []PolicyEntry) {
		slices.SortFunc(es, func(a, b PolicyEntry) int { return strings.Compare(a.Key.String(), b.Key.String()) })
	}
	got, err := p.List()
	if err != nil {
		t.Fatal(err)
	}
	sortPolicy(got)
	sortPolicy(entries)
	if d := cmp.Diff(entries, got, cmpNetip); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		e       PolicyEntry
		wantErr string
	}{
		{PolicyEntry{PolicyKey{netip.MustParseAddr("10.1.0.9"), 0, ProtoTCP}, ModeStrict, false}, "port must be 1-65535"},
		{PolicyEntry{PolicyKey{netip.MustParseAddr("10.1.0.9"), 7, ProtoICMP}, ModeStrict, false}, "protocol must be tcp or udp"},
		{PolicyEntry{PolicyKey{netip.MustParseAddr("2001:db8::1"), 443, ProtoTCP}, ModeStrict, false}, "not an IPv4 address"},
		{PolicyEntry{PolicyKey{netip.MustParseAddr("10.1.0.9"), 8443, ProtoTCP}, Mode(xfib.FibMtlsModeMTLS_MODE_LEN), false}, "unknown mode 4"},
	} {
		// A bad entry after a good one: nothing is written.
		good := PolicyEntry{PolicyKey{netip.MustParseAddr("10.7.7.7"), 80, ProtoTCP}, ModeStrict, false}
		if err := p.Put(good, tc.e); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Put(%s) error = %v, want %q", tc.e.Key, err, tc.wantErr)
		}
		if err := p.Delete(tc.e.Key); tc.e.Mode < Mode(len(modeNames)) && err == nil {
			t.Errorf("Delete(%s) succeeded", tc.e.Key)
		}
	}
	if got, _ := p.List(); len(got) != len(entries) {
		t.Errorf("failed Puts changed the table: %v", got)
	}

	if err := p.Delete(entries[0].Key, PolicyKey{netip.MustParseAddr("10.9.9.9"), 1, ProtoUDP}); err != nil {
		t.Fatal(err)
	}
	got, err = p.List()
	if err != nil {
		t.Fatal(err)
	}
	sortPolicy(got)
	if d := cmp.Diff(entries[1:], got, cmpNetip); d != "" {
		t.Errorf("after Delete (-want +got):\n%s", d)
	}
}

func TestTxPorts(t *testing.T) {
	f := openTestFIB(t)
	tn := newTestNetns(t, 1, "tx0", "tx1")
	a, b := tn.ifindex["tx0"], tn.ifindex["tx1"]
	tn.do(t, func() {
		if err := f.TxPorts.Add(a, b, loIfindex); err != nil {
			t.Fatal(err)
		}
		// The devmap needs a device that exists.
		if err := f.TxPorts.Add(4242); err == nil || !strings.Contains(err.Error(), "ifindex 4242") {
			t.Errorf("Add(4242) error = %v, want one naming the ifindex", err)
		}
	})
	got, err := f.TxPorts.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []int{loIfindex, a, b}
	slices.Sort(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}
	if err := f.TxPorts.Remove(a, 4242); err != nil {
		t.Fatal(err)
	}
	got, err = f.TxPorts.List()
	if err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(i int) bool { return i == a })
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("after Remove (-want +got):\n%s", d)
	}
}

func randomPinDir(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	dir := filepath.Join(DefaultPinRoot, "fm-tu-"+hex.EncodeToString(b))
	t.Cleanup(func() {
		if err := Remove(dir); err != nil {
			t.Errorf("Remove(%s): %v", dir, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after Remove: %v", dir, err)
		}
	})
	return dir
}

func TestPinning(t *testing.T) {
	testenv.NeedBPFFS(t)
	dir := randomPinDir(t)

	routes := []Route{route("10.0.0.0/8", 2, false), route("10.1.0.7/32", 3, true)}
	flow := FlowEntry{key(ProtoTCP, "192.0.2.1", 1000, "10.1.0.7", 443), Flow{Action: ActionDrop, SrcID: 4}}
	f, err := Open(Options{PinDir: dir, MaxFlows: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if f.PinDir() != dir {
		t.Errorf("PinDir() = %q, want %q", f.PinDir(), dir)
	}
	if err := f.Routes.Put(routes...); err != nil {
		t.Fatal(err)
	}
	if err := f.Flows.Put(flow); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{xfib.FibMapRoutes, xfib.FibMapFlows, xfib.FibMapPolicy, xfib.FibMapStats, xfib.FibMapTxPorts, xfib.FibMapPuntSlots, xfib.FibMapXsks} {
		if _, err := os.Stat(filepath.Join(dir, m)); err != nil {
			t.Errorf("map %s not pinned: %v", m, err)
		}
	}

	// A new agent finds the routes and flows the old one left.
	f2, err := Open(Options{PinDir: dir, MaxFlows: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if d := cmp.Diff(routes, listRoutes(t, f2.Routes), cmpNetip); d != "" {
		t.Errorf("routes after reopen (-want +got):\n%s", d)
	}
	if got, ok, err := f2.Flows.Get(flow.Key); err != nil || !ok || got != flow.Flow {
		t.Errorf("flow after reopen = %+v, %v, %v; want %+v", got, ok, err, flow.Flow)
	}

	// Tools see the same maps without loading the program.
	ro, err := OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if d := cmp.Diff(routes, listRoutes(t, ro.Routes), cmpNetip); d != "" {
		t.Errorf("routes via OpenPinned (-want +got):\n%s", d)
	}

	// A pinned map of another shape is refused with the fix.
	if _, err := Open(Options{PinDir: dir, MaxFlows: 8192}); err == nil || !strings.Contains(err.Error(), "remove the directory") {
		t.Errorf("Open with a different flow table size: %v; want an error saying to remove the directory", err)
	}
}

func TestOpenPinnedMissing(t *testing.T) {
	testenv.NeedBPFFS(t)
	dir := randomPinDir(t)
	if _, err := OpenPinned(dir); err == nil || !strings.Contains(err.Error(), "no FIB pinned in "+dir) {
		t.Errorf("OpenPinned(empty dir) = %v, want 'no FIB pinned'", err)
	}
}

func TestCheckBPFFS(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	for _, d := range []string{dir, filepath.Join(dir, "not", "yet", "there")} {
		err := CheckBPFFS(d)
		if !errors.Is(err, ErrNotBPFFS) {
			t.Fatalf("CheckBPFFS(%s) = %v, want ErrNotBPFFS", d, err)
		}
		for _, part := range []string{d, "mount -t bpf bpf /sys/fs/bpf", "nsenter"} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("CheckBPFFS(%s) error %q does not mention %q", d, err, part)
			}
		}
		if _, err := Open(Options{PinDir: d}); !errors.Is(err, ErrNotBPFFS) {
			t.Errorf("Open(PinDir: %s) = %v, want ErrNotBPFFS", d, err)
		}
	}
	testenv.NeedBPFFS(t)
	if err := CheckBPFFS(filepath.Join(DefaultPinRoot, "fm-tu-not-created")); err != nil {
		t.Errorf("CheckBPFFS(under bpffs) = %v", err)
	}
}
