package xds

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// NodeStatus is what the controller knows of one node's agent: whether it
// is connected and, per resource type, what was sent, what it accepted
// and what it refused. fibctl config status prints it.
type NodeStatus struct {
	Node string `json:"node"`
	// InModel is false for an agent whose node.id names no node of the
	// model: it gets no per-node resources until the node appears.
	InModel bool `json:"inModel"`
	// Streams is the number of open xDS streams (0: disconnected).
	Streams        int          `json:"streams"`
	ConnectedSince time.Time    `json:"connectedSince,omitzero"`
	Types          []TypeStatus `json:"types,omitempty"`
	// LastConvergence is how long the last change took from being seen
	// by the controller to being ACKed by this node.
	LastConvergence time.Duration `json:"lastConvergenceNs,omitempty"`
}

// TypeStatus is one resource type's state on one node.
type TypeStatus struct {
	TypeURL string `json:"typeUrl"`
	// Sent is the version last sent; Acked the last one accepted.
	Sent  string `json:"sent,omitempty"`
	Acked string `json:"acked,omitempty"`
	// NACK, if set, is the last refusal; it is cleared by the next ACK.
	NACK  *NACK  `json:"nack,omitempty"`
	NACKs uint64 `json:"nacks"`
}

// Synced reports whether the node accepted the last version sent.
func (t TypeStatus) Synced() bool { return t.NACK == nil && t.Sent != "" && t.Sent == t.Acked }

// NACK is an agent's refusal of a response.
type NACK struct {
	Version string    `json:"version"` // the version refused
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// Event is reported to Options.OnEvent: the binary logs it.
type Event struct {
	Node    string
	TypeURL string
	// Kind is "connect", "disconnect", "nack", "converged" or
	// "nic-tls" (a node's first or changed report of its NIC's kTLS
	// offload, in Reason; see noteNICTLS).
	Kind    string
	Version string
	Reason  string        // for "nack" and "nic-tls"
	Took    time.Duration // for "converged"
}

type typeState struct {
	used        bool // a response of the type was sent or answered
	sent, acked string
	nack        *NACK
	nacks       uint64
}

type nodeState struct {
	streams        int
	connectedSince time.Time
	// types are the served types' states, by their index in Types
	// (inline: a map and a state each were 0.5 MB at 1,000 nodes); other
	// holds any other type's.
	types [numTypes]typeState
	other map[string]*typeState
	// outstanding counts responses of the current push not yet
	// answered; pendingSince is when that push's change was seen.
	outstanding  int
	pendingGen   uint64
	pendingSince time.Time
	lastConv     time.Duration
}

// streamState is per xDS stream: the node it speaks for and its sync
// slot. (The version behind the outstanding nonce of each type is the
// stream's own, in the server's sub.)
type streamState struct {
	node string
	// admitted: the stream has asked for its first sync; holding: it
	// holds one of the tracker's sync slots until it has ACKed every
	// type (or the slot times out); acked are the types it ACKed.
	admitted, holding bool
	done              bool // the slot was given back (or never needed)
	acked             map[string]bool
}

// tracker follows every stream's requests and responses (the server's
// callbacks) to know what each node has accepted.
type tracker struct {
	mu      sync.Mutex
	nodes   map[string]*nodeState
	streams map[int64]*streamState
	// gen and genSince are the current push: responses sent from now on
	// belong to it.
	gen      uint64
	genSince time.Time
	inModel  func(node string) bool
	onEvent  func(Event)
	metrics  *metrics
	// slots bounds the streams making their first sync at once (nil: no
	// bound); a slot is given back after slotTimeout at the latest.
	slots       chan struct{}
	slotTimeout time.Duration
}

// admit makes a stream's first request wait for a sync slot: when every
// agent connects at once (a controller restart), each full sync
// (megabytes per agent) is marshalled and queued only for the streams
// holding a slot, which bounds the controller's memory. It returns at once
// for later requests, and when done (the server's) or streamDone (the
// stream's; nil: none) closes.
func (t *tracker) admit(stream int64, done, streamDone <-chan struct{}) {
	t.mu.Lock()
	st, ok := t.streams[stream]
	if !ok {
		st = &streamState{}
		t.streams[stream] = st
	}
	if st.admitted || t.slots == nil {
		t.mu.Unlock()
		return
	}
	st.admitted = true
	t.mu.Unlock()
	select {
	case t.slots <- struct{}{}:
	case <-done:
		return
	case <-streamDone:
		return
	}
	t.mu.Lock()
	if cur, ok := t.streams[stream]; ok && cur == st {
		st.holding, st.acked = true, map[string]bool{}
		time.AfterFunc(t.slotTimeout, func() {
			t.mu.Lock()
			t.releaseLocked(st)
			t.mu.Unlock()
		})
	} else {
		<-t.slots // closed while waiting
	}
	t.mu.Unlock()
}

// syncing is the number of streams holding a sync slot (their first
// sync not yet ACKed whole) or waiting for one.
func (t *tracker) syncing() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, st := range t.streams {
		if st.holding || st.admitted && !st.done {
			n++
		}
	}
	return n
}

// releaseLocked gives a stream's sync slot back. t.mu is held.
func (t *tracker) releaseLocked(st *streamState) {
	st.done = true
	if st.holding {
		st.holding = false
		<-t.slots
	}
}

// synced notes an ACK of typeURL on a stream, and gives its slot back
// once every type is ACKed. t.mu is held.
func (t *tracker) ackedLocked(stream int64, typeURL string) {
	st := t.streams[stream]
	if st == nil || !st.holding {
		return
	}
	st.acked[typeURL] = true
	if len(st.acked) >= len(Types) {
		t.releaseLocked(st)
	}
}

func newTracker(m *metrics, onEvent func(Event)) *tracker {
	return &tracker{nodes: map[string]*nodeState{}, streams: map[int64]*streamState{}, metrics: m, onEvent: onEvent}
}

func (t *tracker) emit(ev Event) {
	if t.onEvent != nil {
		t.onEvent(ev)
	}
}

func (t *tracker) node(name string) *nodeState {
	n, ok := t.nodes[name]
	if !ok {
		n = &nodeState{}
		t.nodes[name] = n
	}
	return n
}

func (n *nodeState) typ(url string) *typeState {
	if i := typeOrder(url); i < numTypes {
		n.types[i].used = true
		return &n.types[i]
	}
	ts, ok := n.other[url]
	if !ok {
		if n.other == nil {
			n.other = map[string]*typeState{}
		}
		ts = &typeState{used: true}
		n.other[url] = ts
	}
	return ts
}

// each calls f with every type's state that was used.
func (n *nodeState) each(f func(url string, ts *typeState)) {
	for i := range n.types {
		if n.types[i].used {
			f(Types[i], &n.types[i])
		}
	}
	for url, ts := range n.other {
		f(url, ts)
	}
}

// beginPush starts push generation gen for a change seen at since.
func (t *tracker) beginPush(since time.Time) {
	t.mu.Lock()
	t.gen++
	t.genSince = since
	t.mu.Unlock()
}

func (t *tracker) open(stream int64) {
	t.mu.Lock()
	t.streams[stream] = &streamState{}
	t.mu.Unlock()
}

func (t *tracker) closed(stream int64) {
	t.mu.Lock()
	st, ok := t.streams[stream]
	delete(t.streams, stream)
	if ok {
		t.releaseLocked(st)
	}
	var ev *Event
	if ok && st.node != "" {
		n := t.node(st.node)
		n.streams--
		if n.streams == 0 {
			n.outstanding = 0
			t.metrics.connected.Dec()
			ev = &Event{Node: st.node, Kind: "disconnect"}
		}
	}
	t.mu.Unlock()
	if ev != nil {
		t.emit(*ev)
	}
}

// bind attaches a stream to the node of its first request that names one.
// It returns the stream's node ("" while unknown). t.mu is held.
func (t *tracker) bind(stream int64, node *core.Node) (string, *Event) {
	st, ok := t.streams[stream]
	if !ok {
		st = &streamState{}
		t.streams[stream] = st
	}
	if st.node == "" && node.GetId() != "" {
		st.node = node.GetId()
		n := t.node(st.node)
		n.streams++
		if n.streams == 1 {
			n.connectedSince = time.Now()
			t.metrics.connected.Inc()
			return st.node, &Event{Node: st.node, Kind: "connect"}
		}
	}
	return st.node, nil
}

// bindOnly attaches a stream to its node on a request that is no answer
// (a subscription).
func (t *tracker) bindOnly(stream int64, node *core.Node) {
	t.mu.Lock()
	_, connect := t.bind(stream, node)
	t.mu.Unlock()
	if connect != nil {
		t.emit(*connect)
	}
}

// answered records a stream's ACK (detail nil) or NACK of the response
// it had outstanding of typeURL, whose version was version. It costs a
// few map lookups and allocates nothing but the events it reports.
//
// paging says more pages of the stream's first sync of typeURL are to
// come: its sync slot is kept until the last is ACKed.
func (t *tracker) answered(stream int64, node *core.Node, typeURL, version string, detail *rpcstatus.Status, paging bool) {
	t.mu.Lock()
	name, connect := t.bind(stream, node)
	var evs []Event
	if connect != nil {
		evs = append(evs, *connect)
	}
	if name != "" {
		nack := detail != nil
		acked := version
		if nack {
			acked = ""
		}
		evs = append(evs, t.answer(name, typeURL, acked, version, detail.GetMessage(), nack)...)
		if !nack && !paging {
			t.ackedLocked(stream, typeURL)
		}
	}
	t.mu.Unlock()
	for _, ev := range evs {
		t.emit(ev)
	}
}

// answer records an ACK of version acked, or a NACK of version refused.
// t.mu is held.
func (t *tracker) answer(node, typeURL, acked, refused, reason string, nack bool) []Event {
	n := t.node(node)
	ts := n.typ(typeURL)
	var evs []Event
	if nack {
		ts.nack = &NACK{Version: refused, Reason: reason, At: time.Now()}
		ts.nacks++
		t.metrics.nacks.WithLabelValues(ShortType(typeURL)).Inc()
		evs = append(evs, Event{Node: node, TypeURL: typeURL, Kind: "nack", Version: refused, Reason: reason})
	} else {
		ts.acked = acked
		ts.nack = nil
	}
	if n.outstanding > 0 {
		n.outstanding--
		if n.outstanding == 0 && n.pendingGen != 0 {
			took := time.Since(n.pendingSince)
			n.lastConv = took
			n.pendingGen = 0
			t.metrics.convergence.Observe(took.Seconds())
			evs = append(evs, Event{Node: node, Kind: "converged", Took: took, Version: acked})
		}
	}
	return evs
}

// response records a response about to be sent on a stream of node.
func (t *tracker) response(stream int64, typeURL, version string, size int, node string) {
	short := ShortType(typeURL)
	t.metrics.responses.WithLabelValues(short).Inc()
	t.metrics.bytes.WithLabelValues(short).Add(float64(size))
	t.mu.Lock()
	defer t.mu.Unlock()
	if node == "" {
		if st, ok := t.streams[stream]; ok {
			node = st.node
		}
	}
	if node == "" {
		return
	}
	n := t.node(node)
	n.typ(typeURL).sent = version
	if t.gen != 0 && n.pendingGen != t.gen {
		n.pendingGen = t.gen
		n.pendingSince = t.genSince
		n.outstanding = 0
	}
	n.outstanding++
}

// status returns every node's status, sorted by node.
func (t *tracker) status() []NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]NodeStatus, 0, len(t.nodes))
	for name, n := range t.nodes {
		ns := NodeStatus{Node: name, Streams: n.streams, LastConvergence: n.lastConv, InModel: t.inModel == nil || t.inModel(name)}
		if n.streams > 0 {
			ns.ConnectedSince = n.connectedSince
		}
		n.each(func(url string, ts *typeState) {
			tsOut := TypeStatus{TypeURL: url, Sent: ts.sent, Acked: ts.acked, NACKs: ts.nacks}
			if ts.nack != nil {
				c := *ts.nack
				tsOut.NACK = &c
			}
			ns.Types = append(ns.Types, tsOut)
		})
		slices.SortFunc(ns.Types, func(a, b TypeStatus) int { return cmp.Compare(typeOrder(a.TypeURL), typeOrder(b.TypeURL)) })
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// StatusPath is where Handler serves the status of every node.
const StatusPath = "/debug/config_status"

// Handler serves StatusPath: Status as JSON.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.Status())
	})
}

// State is one type's sync state on a node, as fibctl config status
// prints it (the words istioctl proxy-status uses).
func (t TypeStatus) State() string {
	switch {
	case t.NACK != nil:
		return "NACKED"
	case t.Sent == "":
		return "NOT SENT"
	case t.Sent == t.Acked:
		return "SYNCED"
	default:
		return "STALE"
	}
}
