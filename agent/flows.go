package agent

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

// Defaults of the offload flow table.
const (
	// defaultFlowGrace is how long a revoked connection's drop entry
	// outlives the connection: the peer's retransmissions (RTO from 200
	// ms, doubling) and the packets in flight die in XDP instead of
	// reaching the pod's stack, which would answer them with resets.
	defaultFlowGrace = 5 * time.Second
	// defaultDropDeadline bounds the wait for a revoked connection's
	// first dropped packet (an idle peer sends none: no latency then).
	defaultDropDeadline = 5 * time.Second
	// The first drop is polled for every flowPollFast during
	// flowPollFastFor, then every flowPollSlow: the latency of a busy
	// connection is read within a millisecond, and a thousand revoked
	// idle ones cost a hundred map reads each per second, not a thousand.
	flowPollFast    = time.Millisecond
	flowPollFastFor = 100 * time.Millisecond
	flowPollSlow    = 10 * time.Millisecond
	// flowPollBatch: above this many revocations waiting, a poll lists
	// the flow map in batches instead of reading entries one by one.
	flowPollBatch = 32
)

// errFlowTableClosed is returned by Install and Revoke after close.
var errFlowTableClosed = errors.New("offload flow table closed (agent stopping)")

// flowMap is what the flow table needs of the FIB's flow map
// (*fib.Flows): Put writes entries with their counters at zero.
type flowMap interface {
	Put(entries ...fib.FlowEntry) error
	Get(k fib.FlowKey) (fib.Flow, bool, error)
	Delete(keys ...fib.FlowKey) error
	List() ([]fib.FlowEntry, error)
}

// flowTable is the agent's proxy.FlowTable: the XDP flow entries of the
// offloaded connections, on the node's FIB. Entries are reference counted
// by key, since both ends of a connection between two pods of this node
// install the same two keys. It writes only the flow map; every write
// happens under mu, so that the map and the table agree.
type flowTable struct {
	flows        flowMap
	identities   func() *reconcile.Desired // the node's flow tables, for identity ids
	grace        time.Duration
	dropDeadline time.Duration
	now          func() uint64 // CLOCK_MONOTONIC, ns (bpf_ktime_get_ns's clock)

	ids atomic.Pointer[identityIndex]

	revocationSeconds prometheus.Histogram
	installs          prometheus.Counter
	releases          prometheus.Counter
	revocations       *prometheus.CounterVec
	errs              *prometheus.CounterVec

	mu       sync.Mutex
	closed   bool
	keys     map[fib.FlowKey]*flowRef
	conns    map[*flowHandle]struct{} // installed, not released
	draining map[*flowHandle]int      // released, with this many keys in their grace period
	pending  []*revocation            // waiting for their first drop
	polling  bool
	pollDone sync.WaitGroup
}

// flowRef is the table's state of one flow key.
type flowRef struct {
	refs int
	flow fib.Flow // as written (action and identity ids)
	// base is what the entry counted before a revocation rewrote it with
	// its counters at zero.
	basePackets, baseBytes uint64
	// grace deletes the entry of a released revoked connection; owner is
	// that connection, listed as draining until then.
	grace *time.Timer
	owner *flowHandle
}

// flowHandle is one offloaded connection's proxy.FlowHandle.
type flowHandle struct {
	t         *flowTable
	f         proxy.TunnelFlow
	out, in   fib.FlowKey // local → remote, remote → local
	localID   uint32
	peerID    uint32
	installed time.Time

	// Under t.mu.
	released bool
	revoked  *revocation
	// Counters at release (the entries may be gone).
	finalPackets, finalBytes uint64
}

// revocation is one Revoke and its measure.
type revocation struct {
	key        fib.FlowKey
	pushed     time.Time
	at         time.Time
	pushedMono uint64 // pushed on CLOCK_MONOTONIC
	deadline   uint64 // CLOCK_MONOTONIC
	// Under t.mu.
	state    string // revocationWaiting, revocationDropped, revocationNoDrop
	lastZero uint64 // CLOCK_MONOTONIC just before the last read that showed no drop
	latency  time.Duration
	errBound time.Duration
}

// Revocation states, as admin.Revocation.State has them.
const (
	revocationWaiting = "waiting"
	revocationDropped = "dropped"
	revocationNoDrop  = "no-drop"
)

// identityIndex maps SPIFFE IDs to the identity ids of one compiled set
// of flow tables.
type identityIndex struct {
	d   *reconcile.Desired
	ids map[string]uint32
}

// openFlowTable returns the proxy's flow table: nil (no XDP flow entries)
// when the agent has no FIB.
func (a *Agent) openFlowTable() proxy.FlowTable {
	if a.fib == nil || a.fib.Flows == nil {
		return nil
	}
	desired := func() *reconcile.Desired { return nil }
	if a.rec != nil {
		desired = a.rec.Desired
	}
	a.flows = newFlowTable(a.fib.Flows, desired)
	if n, err := a.flows.sweep(); err != nil {
		a.log.Warn("offload flow entries of an earlier agent not removed: they age out through the flow map's LRU", "err", err)
	} else if n > 0 {
		a.log.Info("removed the offload flow entries an earlier agent left in the pinned flow map (its connections ended with it)", "entries", n)
	}
	return a.flows
}

// sweep deletes the offload entries an earlier agent left in a pinned
// flow map: an agent killed without closing (SIGKILL, a crash) cannot
// delete them, and its offloaded connections died with it, while a drop
// entry left over would drop the next connection on the same 5-tuple
// before it is offloaded. An offload entry is a TCP entry with an end at
// the tunnel port and an identity id: nothing else writes identity ids
// in the flow map (punted flows' entries have none). Entries whose
// identities were both unknown to the flow tables (ids 0) cannot be told
// from punted flows' and are left to the LRU.
func (t *flowTable) sweep() (int, error) {
	all, err := t.flows.List()
	if err != nil {
		return 0, fmt.Errorf("offload flow table: list flows: %w", err)
	}
	var stale []fib.FlowKey
	for _, e := range all {
		k := e.Key
		if k.Proto == fib.ProtoTCP && (k.SrcPort == slowpath.TunnelPort || k.DstPort == slowpath.TunnelPort) &&
			(e.Flow.SrcID != 0 || e.Flow.DstID != 0) {
			stale = append(stale, k)
		}
	}
	if len(stale) == 0 {
		return 0, nil
	}
	if err := t.flows.Delete(stale...); err != nil {
		return 0, fmt.Errorf("offload flow table: delete %d entries of an earlier agent: %w", len(stale), err)
	}
	return len(stale), nil
}

func newFlowTable(flows flowMap, identities func() *reconcile.Desired) *flowTable {
	t := &flowTable{
		flows: flows, identities: identities, grace: defaultFlowGrace, dropDeadline: defaultDropDeadline, now: monotonicNow,
		keys: map[fib.FlowKey]*flowRef{}, conns: map[*flowHandle]struct{}{}, draining: map[*flowHandle]int{},
		revocationSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fibmesh_agent_offload_revocation_seconds",
			Help: "Revocation latency of offloaded connections: from the push of the change that revoked one to the first packet its XDP drop entry dropped (revocations without a dropped packet are not observed).",
			// 100 µs to 13 s: the aim is 10 ms.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}),
		installs: prometheus.NewCounter(prometheus.CounterOpts{Name: "fibmesh_agent_offload_flow_installs_total",
			Help: "Offloaded connections whose XDP flow entries were installed."}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{Name: "fibmesh_agent_offload_flow_releases_total",
			Help: "Offloaded connections that released their XDP flow entries (closed)."}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fibmesh_agent_offload_revocations_total",
			Help: "Offloaded connections revoked (their entry toward the local pod turned to drop), by result: dropped (a packet was dropped: latency measured), no_drop (none before the deadline), pending."}, []string{"result"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fibmesh_agent_offload_flow_errors_total",
			Help: "Flow map operations of the offload flow table that failed, by op (install, revoke, delete, poll). Should stay zero: a failed delete leaves an entry to the map's LRU."}, []string{"op"}),
	}
	for _, r := range []string{"dropped", "no_drop"} {
		t.revocations.WithLabelValues(r)
	}
	for _, op := range []string{"install", "revoke", "delete", "poll"} {
		t.errs.WithLabelValues(op)
	}
	return t
}

// collectors are the flow table's metrics.
func (t *flowTable) collectors() []prometheus.Collector {
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fibmesh_agent_offload_flow_entries",
		Help: "XDP flow entries held for offloaded connections (two per tunnel 5-tuple, drop entries in their grace period included)."},
		func() float64 {
			t.mu.Lock()
			defer t.mu.Unlock()
			return float64(len(t.keys))
		})
	conns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fibmesh_agent_offload_flow_connections",
		Help: "Offloaded connections holding XDP flow entries."},
		func() float64 {
			t.mu.Lock()
			defer t.mu.Unlock()
			return float64(len(t.conns))
		})
	return []prometheus.Collector{entries, conns, t.revocationSeconds, t.installs, t.releases, t.revocations, t.errs}
}

// monotonicNow reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	return uint64(ts.Nano())
}

// identityID returns the identity id of a SPIFFE ID in the node's flow
// tables, 0 (no identity) when they do not name it.
func (t *flowTable) identityID(spiffeID string) uint32 {
	if spiffeID == "" {
		return 0
	}
	d := t.identities()
	if d == nil {
		return 0
	}
	idx := t.ids.Load()
	if idx == nil || idx.d != d {
		idx = &identityIndex{d: d, ids: make(map[string]uint32, len(d.Identities))}
		for id, s := range d.Identities {
			idx.ids[s] = id
		}
		t.ids.Store(idx)
	}
	return idx.ids[spiffeID]
}

// tunnelKeys returns the two keys of f's tunnel: local → remote and
// remote → local.
func tunnelKeys(f proxy.TunnelFlow) (out, in fib.FlowKey, err error) {
	for _, e := range []struct {
		name string
		ap   netip.AddrPort
	}{{"Local", f.Local}, {"Remote", f.Remote}} {
		if !e.ap.IsValid() || !e.ap.Addr().Unmap().Is4() || e.ap.Port() == 0 {
			return out, in, fmt.Errorf("offload flow of connection %d (pod %s): %s %q: want an IPv4 address and a port (the XDP FIB's flow keys are IPv4 5-tuples)", f.ConnID, f.Pod, e.name, e.ap)
		}
	}
	out = fib.FlowKey{Src: f.Local.Addr().Unmap(), Dst: f.Remote.Addr().Unmap(), SrcPort: f.Local.Port(), DstPort: f.Remote.Port(), Proto: fib.ProtoTCP}
	return out, out.Reverse(), nil
}

// Install implements proxy.FlowTable: forward entries for both directions
// of f's tunnel, with both ends' identity ids. A key another connection
// holds (the other end of a connection between two pods of this node)
// gains a reference and keeps its entry; a key whose released drop
// entry is in its grace period is rewritten to forward for the new
// connection.
func (t *flowTable) Install(f proxy.TunnelFlow) (proxy.FlowHandle, error) {
	out, in, err := tunnelKeys(f)
	if err != nil {
		return nil, err
	}
	h := &flowHandle{t: t, f: f, out: out, in: in, localID: t.identityID(f.LocalIdentity), peerID: t.identityID(f.PeerIdentity), installed: time.Now()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errFlowTableClosed
	}
	var writes []fib.FlowEntry
	for _, e := range []fib.FlowEntry{
		{Key: out, Flow: fib.Flow{Action: fib.ActionForward, SrcID: h.localID, DstID: h.peerID}},
		{Key: in, Flow: fib.Flow{Action: fib.ActionForward, SrcID: h.peerID, DstID: h.localID}},
	} {
		if r := t.keys[e.Key]; r == nil || r.refs == 0 {
			writes = append(writes, e)
		}
	}
	if len(writes) > 0 {
		if err := t.flows.Put(writes...); err != nil {
			t.errs.WithLabelValues("install").Inc()
			return nil, fmt.Errorf("offload flow of connection %d (pod %s): %w", f.ConnID, f.Pod, err)
		}
	}
	for _, k := range []fib.FlowKey{out, in} {
		r := t.keys[k]
		if r == nil {
			r = &flowRef{}
			t.keys[k] = r
		}
		if r.refs == 0 {
			t.endGraceLocked(k, r)
			r.flow = fib.Flow{Action: fib.ActionForward, SrcID: h.localID, DstID: h.peerID}
			if k == in {
				r.flow.SrcID, r.flow.DstID = h.peerID, h.localID
			}
			r.basePackets, r.baseBytes = 0, 0
		}
		r.refs++
	}
	t.conns[h] = struct{}{}
	t.installs.Inc()
	return h, nil
}

// endGraceLocked stops r's grace period, if it has one: its entry is
// deleted or re-used.
func (t *flowTable) endGraceLocked(k fib.FlowKey, r *flowRef) {
	if r.grace == nil {
		return
	}
	r.grace.Stop()
	r.grace = nil
	if o := r.owner; o != nil {
		if t.draining[o]--; t.draining[o] <= 0 {
			delete(t.draining, o)
		}
		r.owner = nil
	}
}

// Revoke implements proxy.FlowHandle: the entry toward the local pod is
// rewritten as a drop entry with its counters at zero (what it counted
// so far is kept for Counters), so that its first counted packet is the
// first one dropped; the revocation latency is then measured in the
// background (see poll). Revoking twice is a no-op.
func (h *flowHandle) Revoke(pushed time.Time) error {
	t := h.t
	// pushed on CLOCK_MONOTONIC: Go's monotonic clock is CLOCK_MONOTONIC
	// on Linux, so where pushed carries a monotonic reading (time.Now in
	// this process) the conversion is exact to the two clock reads here;
	// a wall-clock-only pushed (from another process) carries the wall
	// clock's steps and slews since then.
	if pushed.IsZero() {
		pushed = time.Now() // unknown: measured from the revocation itself
	}
	now := t.now()
	since := time.Since(pushed)
	pushedMono := now
	if since > 0 && uint64(since) < now {
		pushedMono = now - uint64(since)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return errFlowTableClosed
	case h.released:
		return fmt.Errorf("revoke connection %d (pod %s): its flow entries were already released", h.f.ConnID, h.f.Pod)
	case h.revoked != nil:
		return nil
	}
	r := t.keys[h.in]
	cur, ok, err := t.flows.Get(h.in)
	if err != nil {
		t.errs.WithLabelValues("revoke").Inc()
		return fmt.Errorf("revoke connection %d (pod %s): %w", h.f.ConnID, h.f.Pod, err)
	}
	drop := r.flow
	drop.Action = fib.ActionDrop
	// Both ends on this node share the key: when the other end's
	// revocation already turned it to drop, writing it again would zero
	// the counts its measurement reads.
	if r.flow.Action != fib.ActionDrop {
		if err := t.flows.Put(fib.FlowEntry{Key: h.in, Flow: drop}); err != nil {
			t.errs.WithLabelValues("revoke").Inc()
			return fmt.Errorf("revoke connection %d (pod %s): %w", h.f.ConnID, h.f.Pod, err)
		}
	}
	if ok && r.flow.Action != fib.ActionDrop {
		// Packets counted between the read and the write above (a few
		// microseconds) are lost to Counters; the drop entry's own count
		// starts exactly at the write.
		r.basePackets += cur.Packets
		r.baseBytes += cur.Bytes
	}
	r.flow = drop
	rv := &revocation{key: h.in, pushed: pushed, at: time.Now(), pushedMono: pushedMono,
		deadline: now + uint64(t.dropDeadline), state: revocationWaiting, lastZero: now}
	h.revoked = rv
	t.pending = append(t.pending, rv)
	if !t.polling {
		t.polling = true
		t.pollDone.Add(1)
		go t.poll()
	}
	return nil
}

// poll measures the pending revocations' latency: it reads each drop
// entry until it has counted a packet, its deadline passes or the entry
// is gone, and exits when none is left.
//
// Precision: the XDP program stamps every packet an entry counts with
// bpf_ktime_get_ns (last_seen_ns). If the first read that sees the drop
// entry count anything sees one packet, last_seen_ns is that packet's own
// time: the latency is exact to the nanosecond (plus the conversion of
// pushed, see Revoke). If it sees more, the first drop happened between
// the previous read (which saw none) and last_seen_ns: the latency is
// reported as last_seen_ns - pushed, an upper bound, with the width of
// that interval as its error (at most one poll interval plus a read).
func (t *flowTable) poll() {
	defer t.pollDone.Done()
	start := t.now()
	for {
		t.mu.Lock()
		if t.closed || len(t.pending) == 0 {
			t.polling = false
			t.mu.Unlock()
			return
		}
		pending := slices.Clone(t.pending)
		t.mu.Unlock()

		readAt := t.now()
		flows, err := t.readFlows(pending)
		t.mu.Lock()
		if err != nil {
			t.errs.WithLabelValues("poll").Inc()
		}
		read := make(map[*revocation]bool, len(pending))
		for _, rv := range pending {
			read[rv] = true
		}
		kept := t.pending[:0]
		for _, rv := range t.pending {
			// Revocations added during the read were not read.
			if err == nil && read[rv] && t.settleLocked(rv, flows, readAt) {
				continue
			}
			kept = append(kept, rv)
		}
		clear(t.pending[len(kept):])
		t.pending = kept
		t.mu.Unlock()

		every := flowPollFast
		if t.now()-start > uint64(flowPollFastFor) {
			every = flowPollSlow
		}
		time.Sleep(every)
	}
}

// readFlows reads the drop entries of pending: one by one, or the whole
// map when many wait.
func (t *flowTable) readFlows(pending []*revocation) (map[fib.FlowKey]fib.Flow, error) {
	out := make(map[fib.FlowKey]fib.Flow, len(pending))
	if len(pending) > flowPollBatch {
		all, err := t.flows.List()
		if err != nil {
			return nil, err
		}
		for _, e := range all {
			out[e.Key] = e.Flow
		}
		return out, nil
	}
	for _, rv := range pending {
		f, ok, err := t.flows.Get(rv.key)
		if err != nil {
			return nil, err
		}
		if ok {
			out[rv.key] = f
		}
	}
	return out, nil
}

// settleLocked updates rv from its entry as read at readAt (absent from
// flows: deleted), and reports whether rv is done.
func (t *flowTable) settleLocked(rv *revocation, flows map[fib.FlowKey]fib.Flow, readAt uint64) bool {
	if rv.state != revocationWaiting {
		return true
	}
	f, ok := flows[rv.key]
	switch {
	case ok && f.Action == fib.ActionDrop && f.Packets > 0:
		first := f.LastSeenNs
		rv.state = revocationDropped
		if f.Packets > 1 && first > rv.lastZero {
			rv.errBound = time.Duration(first - rv.lastZero)
		}
		if first > rv.pushedMono {
			rv.latency = time.Duration(first - rv.pushedMono)
		}
		t.revocationSeconds.Observe(rv.latency.Seconds())
		t.revocations.WithLabelValues("dropped").Inc()
		return true
	case !ok || f.Action != fib.ActionDrop || readAt > rv.deadline:
		// Gone (grace over, the table closed, evicted) or re-used by a
		// new connection, or nothing came in time.
		rv.state = revocationNoDrop
		t.revocations.WithLabelValues("no_drop").Inc()
		return true
	}
	rv.lastZero = readAt
	return false
}

// Counters implements proxy.FlowHandle: both directions' packets and
// bytes, including what the entry toward the local pod counted before a
// revocation rewrote it.
func (h *flowHandle) Counters() (packets, bytes uint64) {
	t := h.t
	t.mu.Lock()
	if h.released || t.closed {
		defer t.mu.Unlock()
		return h.finalPackets, h.finalBytes
	}
	defer t.mu.Unlock()
	return t.countersLocked(h, nil)
}

// countersLocked sums h's entries, read from listed when it is non-nil
// and from the map otherwise.
func (t *flowTable) countersLocked(h *flowHandle, listed map[fib.FlowKey]fib.Flow) (packets, bytes uint64) {
	for _, k := range []fib.FlowKey{h.out, h.in} {
		r := t.keys[k]
		if r == nil {
			continue
		}
		packets += r.basePackets
		bytes += r.baseBytes
		var f fib.Flow
		var ok bool
		if listed != nil {
			f, ok = listed[k]
		} else {
			var err error
			if f, ok, err = t.flows.Get(k); err != nil {
				ok = false
			}
		}
		if ok {
			packets += f.Packets
			bytes += f.Bytes
		}
	}
	return packets, bytes
}

// Release implements proxy.FlowHandle: the last reference to a key
// deletes its entry, except a drop entry, which is deleted after the
// grace period. Releasing twice is a no-op.
func (h *flowHandle) Release() {
	t := h.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if h.released || t.closed {
		h.released = true
		return
	}
	h.finalPackets, h.finalBytes = t.countersLocked(h, nil)
	h.released = true
	delete(t.conns, h)
	t.releases.Inc()
	var gone []fib.FlowKey
	for _, k := range []fib.FlowKey{h.out, h.in} {
		r := t.keys[k]
		if r == nil {
			continue
		}
		if r.refs--; r.refs > 0 {
			continue
		}
		if r.flow.Action == fib.ActionDrop && t.grace > 0 {
			r.owner = h
			t.draining[h]++
			r.grace = time.AfterFunc(t.grace, func() { t.expire(k, r) })
			continue
		}
		gone = append(gone, k)
		delete(t.keys, k)
	}
	if len(gone) > 0 {
		if err := t.flows.Delete(gone...); err != nil {
			t.errs.WithLabelValues("delete").Inc()
		}
	}
}

// expire ends the grace period of r, the drop entry of a released
// connection at k: unless a new connection took the key meanwhile, the
// entry is deleted.
func (t *flowTable) expire(k fib.FlowKey, r *flowRef) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.keys[k] != r || r.refs > 0 || r.grace == nil {
		return
	}
	t.endGraceLocked(k, r)
	delete(t.keys, k)
	if err := t.flows.Delete(k); err != nil {
		t.errs.WithLabelValues("delete").Inc()
	}
}

// close deletes every entry the table holds, drop entries in their grace
// period too, and stops the latency measure: called before the FIB is
// closed, so that a pinned flow map keeps no entry of a connection that
// ends with the agent. Install and Revoke fail afterwards.
func (t *flowTable) close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	keys := make([]fib.FlowKey, 0, len(t.keys))
	for k, r := range t.keys {
		if r.grace != nil {
			r.grace.Stop()
		}
		keys = append(keys, k)
	}
	for h := range t.conns {
		h.finalPackets, h.finalBytes = t.countersLocked(h, nil)
	}
	clear(t.keys)
	clear(t.conns)
	clear(t.draining)
	t.pending = nil
	var err error
	if len(keys) > 0 {
		if err = t.flows.Delete(keys...); err != nil {
			t.errs.WithLabelValues("delete").Inc()
			err = fmt.Errorf("offload flow table: delete %d entries: %w", len(keys), err)
		}
	}
	t.mu.Unlock()
	t.pollDone.Wait()
	return err
}

// list describes the table's connections for the admin API, by
// connection id: the installed ones and the released ones whose drop
// entry is in its grace period.
func (t *flowTable) list() ([]admin.OffloadFlow, error) {
	all, err := t.flows.List()
	if err != nil {
		return nil, fmt.Errorf("offload flows: %w", err)
	}
	listed := make(map[fib.FlowKey]fib.Flow, len(all))
	for _, e := range all {
		listed[e.Key] = e.Flow
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]admin.OffloadFlow, 0, len(t.conns)+len(t.draining))
	add := func(h *flowHandle, state string) {
		of := admin.OffloadFlow{ConnID: h.f.ConnID, Pod: h.f.Pod, Local: h.f.Local, Remote: h.f.Remote,
			LocalIdentity: h.f.LocalIdentity, PeerIdentity: h.f.PeerIdentity, LocalIdentityID: h.localID, PeerIdentityID: h.peerID,
			State: state, Installed: h.installed}
		for _, d := range []struct {
			dir string
			k   fib.FlowKey
		}{{"out", h.out}, {"in", h.in}} {
			e := admin.OffloadFlowEntry{Direction: d.dir, Src: netip.AddrPortFrom(d.k.Src, d.k.SrcPort), Dst: netip.AddrPortFrom(d.k.Dst, d.k.DstPort), Action: "missing", IdleMs: -1}
			f, ok := listed[d.k]
			switch {
			case t.keys[d.k] == nil:
				e.Action = "deleted" // released: the forward entry of a draining connection
			case ok:
				e.Action, e.SrcID, e.DstID, e.Packets, e.Bytes = f.Action.String(), f.SrcID, f.DstID, f.Packets, f.Bytes
				if f.LastSeenNs != 0 && now >= f.LastSeenNs {
					e.IdleMs = int64(now-f.LastSeenNs) / int64(time.Millisecond)
				}
			}
			of.Entries = append(of.Entries, e)
		}
		if h.released {
			of.Packets, of.Bytes = h.finalPackets, h.finalBytes
		} else {
			of.Packets, of.Bytes = t.countersLocked(h, listed)
		}
		if rv := h.revoked; rv != nil {
			r := &admin.Revocation{Pushed: rv.pushed, RevokedAt: rv.at, State: rv.state}
			if rv.state == revocationDropped {
				r.FirstDropMs = float64(rv.latency) / float64(time.Millisecond)
				r.FirstDropErrorMs = float64(rv.errBound) / float64(time.Millisecond)
			}
			if f, ok := listed[rv.key]; ok && f.Action == fib.ActionDrop && t.keys[rv.key] != nil {
				r.Dropped = f.Packets
			}
			of.Revocation = r
		}
		out = append(out, of)
	}
	for h := range t.conns {
		state := "offloaded"
		if h.revoked != nil {
			state = "revoked"
		}
		add(h, state)
	}
	for h := range t.draining {
		add(h, "draining")
	}
	slices.SortFunc(out, func(a, b admin.OffloadFlow) int { return cmp.Compare(a.ConnID, b.ConnID) })
	return out, nil
}

// OffloadFlows implements admin.Source: the XDP flow entries of the
// offloaded connections (none without a FIB).
func (a *Agent) OffloadFlows() ([]admin.OffloadFlow, error) {
	if a.flows == nil {
		return []admin.OffloadFlow{}, nil
	}
	return a.flows.list()
}
