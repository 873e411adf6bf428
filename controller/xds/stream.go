package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// pageBytes bounds a first sync's delta response: a full state larger
// than this goes out in pages, the next sent when the last is ACKed, so
// that the bytes marshalled and queued for one stream stay near one page
// per type however large the mesh (a 1,000-service mesh is ~3.4 MB per
// agent). A page is about one stream's HTTP/2 flow-control window on the
// server's side (64 KiB, GRPCServerOptions), and the codec sends its
// resources' stored bytes without copying them.
const pageBytes = 60 << 10

// sub is one stream's subscription to one type: what it subscribes to,
// the scope sequence number it was last sent up to, and the one
// response it may have outstanding. A stream never has two responses of
// a type in flight: changes that come meanwhile are merged into the next
// response, sent when the outstanding one is answered (Contour's one
// slot per stream).
type sub struct {
	st       *stream
	typeURL  string
	sc       *scope
	wildcard bool
	names    nameSet  // explicit subscriptions, globs included
	globs    []string // the glob names of names (isGlob), under st.mu

	// dirty: the scope changed something this sub wants since it was
	// last sent (set by updates, cleared by the sender).
	dirty atomic.Bool
	// sentSeq is the scope sequence the sub was last sent up to; written
	// by the stream with sc.mu read-locked, read by compaction with it
	// locked.
	sentSeq uint64

	// The rest is the stream's own, under st.mu.
	sent    bool     // a first response went out
	full    bool     // next response is the full state (first sync, or SotW names changed)
	pages   []string // names of a paged first sync still to send
	force   []string // delta: newly subscribed names, sent whatever their sequence
	initial map[string]string
	nonce   string // outstanding response ("": none)
	version string // its version
}

func (s *sub) wants(name string) bool {
	if s.wildcard || s.names.has(name) {
		return true
	}
	for _, n := range s.globs {
		if globMatch(n, name) {
			return true
		}
	}
	return false
}

// A glob name, "<prefix>/*", subscribes to every resource whose name
// starts with "<prefix>/", now and later, as an xDS glob collection does
// (xdstp://.../<prefix>/*). A state-of-the-world subscriber of a type
// whose responses carry only what changed (EDS, RDS, SDS, FDS) is not told
// of removals, as with names (the shards under "mesh/" are never removed).
// An agent subscribes to the shared flow
// table's 320 shards as "mesh/*" (api/xds MeshShardsGlob), which costs
// the subscriber index one entry per stream instead of one per shard.
func isGlob(name string) bool { return len(name) > 2 && strings.HasSuffix(name, "/*") }

// globPrefix is a glob's prefix, with its slash.
func globPrefix(glob string) string { return glob[:len(glob)-1] }

// globMatch reports whether name is one of glob's resources.
func globMatch(glob, name string) bool {
	return isGlob(glob) && strings.HasPrefix(name, globPrefix(glob)) && len(name) > len(glob)-1
}

// globs are the glob names of the set. A name set holds few (an agent's
// has one), and the slice is only scanned.
func (ns nameSet) globs() []string {
	var out []string
	for _, n := range ns {
		if isGlob(n) {
			out = append(out, n)
		}
	}
	return out
}

// nameSet is a set of names as a sorted slice: an agent subscribes to
// ~65 flow tables by name, and a map of them was ~7 kB per stream.
type nameSet []string

func (ns nameSet) has(n string) bool {
	_, ok := slices.BinarySearch(ns, n)
	return ok
}

// add adds n; false if it was there.
func (ns *nameSet) add(n string) bool {
	i, ok := slices.BinarySearch(*ns, n)
	if ok {
		return false
	}
	*ns = slices.Insert(*ns, i, n)
	return true
}

// remove removes n; false if it was not there.
func (ns *nameSet) remove(n string) bool {
	i, ok := slices.BinarySearch(*ns, n)
	if !ok {
		return false
	}
	*ns = slices.Delete(*ns, i, i+1)
	return true
}

// newNameSet is the set of names.
func newNameSet(names []string) nameSet {
	ns := slices.Clip(slices.Compact(slices.Sorted(slices.Values(names))))
	return ns
}

// markDirty flags the sub and wakes its stream.
func (s *sub) markDirty() {
	s.dirty.Store(true)
	s.st.wake()
}

// stream is one xDS stream (ADS, or a single-type service when
// fixedType is set), delta or state-of-the-world.
//
// An idle stream has one goroutine of its own: the gRPC handler, blocked
// in Recv. A sender goroutine runs only while the stream has something
// to send: the first wake starts one (wake), which builds and sends every
// ready type, again while it is woken meanwhile, and exits. At 1,000
// agents a sender parked per stream was ~1,000 goroutine stacks.
type stream struct {
	id        int64 // tracker key: SotW streams > 0, delta < 0
	delta     bool
	fixedType string
	// send builds and sends what the stream's subs are ready for (set
	// by serve; nil for a stream driven by hand in tests, which wake
	// then only marks).
	send func() error
	// done is the stream's context's Done (nil in hand-driven tests).
	done <-chan struct{}

	// smu guards the sender's state.
	smu     sync.Mutex
	sending bool // a sender goroutine runs
	again   bool // woken while it ran: it runs once more
	ended   bool // the handler is returning: no sender starts
	sendErr error
	idle    sync.Cond // on smu: signalled when the sender exits
	// stop ends the stream with err's status (nil: OK): a Send failed,
	// or Run ended (serve).
	stop func(err error)

	mu     sync.Mutex
	closed bool // the handler returned: requests still received are dropped
	node   string
	subs   map[string]*sub
	nonce  uint64
	// work counts the times the server touched this stream's state:
	// requests handled and responses built (tests check that one
	// stream's ACK touches no other stream).
	work atomic.Int64
}

func newStream(id int64, delta bool, fixedType string) *stream {
	st := &stream{id: id, delta: delta, fixedType: fixedType, subs: map[string]*sub{}}
	st.idle.L = &st.smu
	return st
}

// wake has the stream send what is ready: it starts a sender unless one
// runs, which then runs once more.
func (st *stream) wake() {
	st.smu.Lock()
	switch {
	case st.sending:
		st.again = true
		st.smu.Unlock()
		return
	case st.ended || st.send == nil:
		st.smu.Unlock()
		return
	}
	st.sending = true
	st.smu.Unlock()
	go st.runSender()
}

// runSender sends until nothing is ready and it was not woken meanwhile.
// A failed Send ends the stream (cancel): its handler returns the error.
func (st *stream) runSender() {
	for {
		err := st.send()
		st.smu.Lock()
		if err == nil && st.again && !st.ended {
			st.again = false
			st.smu.Unlock()
			continue
		}
		if err != nil && st.sendErr == nil {
			st.sendErr = err
		}
		st.sending, st.again = false, false
		st.idle.Broadcast()
		st.smu.Unlock()
		if err != nil {
			st.stop(err)
		}
		return
	}
}

// end stops the stream's sending: no sender starts from now on, and a
// running one is waited for. It returns the error a Send failed with.
// unblock, if set, is called first when a sender runs, so that a Send
// waiting for flow control returns.
func (st *stream) end(unblock func()) error {
	st.smu.Lock()
	defer st.smu.Unlock()
	st.ended = true
	if st.sending && unblock != nil {
		unblock()
	}
	for st.sending {
		st.idle.Wait()
	}
	return st.sendErr
}

func (st *stream) nextNonce() string {
	st.nonce++
	return strconv.FormatUint(st.nonce, 10)
}

// bidi is a gRPC stream of requests Req and responses Resp.
type bidi[Req, Resp any] interface {
	Send(*Resp) error
	Recv() (*Req, error)
	Context() context.Context
}

// statusWriter is what gRPC's server-side transport stream (in a
// handler's context, grpc.ServerTransportStreamFromContext) does to end
// a stream: write its status. The stream's context is then done and a
// Recv blocked on it returns, with that status already sent.
type statusWriter interface {
	WriteStatus(*status.Status) error
}

// oneGoroutine lets serve end a stream from outside its handler (tests
// turn it off to run the fallback).
var oneGoroutine = true

// serve runs one stream. This goroutine receives and handles requests
// (ACKs cost O(1)); a sender runs while something is to be sent
// (stream.wake), holding one of the server's sender slots while it
// builds the responses (so that after an edit at most 4 × GOMAXPROCS
// streams collect their changes at once, rather than a thousand
// contending for the scopes' locks), then sending them.
//
// The stream ends when the client ends it, a request is refused, a Send
// fails, or Run ends. For the last two, serve writes the stream's status
// (OK when Run ends, the Send's error) through gRPC's transport stream,
// which ends the Recv this goroutine is blocked in (unless the client
// stopped reading: the status then queues behind the data, and the
// stream ends when gRPC stops hard, as when the handler itself was
// blocked in Send). Where the transport stream cannot (another gRPC), a
// second goroutine per stream receives while this one waits for any of
// those, as before.
func serve[Req, Resp any](s *Server, gs bidi[Req, Resp], st *stream, handle func(*stream, *Req) error, build func(*stream, *sub) *Resp) error {
	ctx := gs.Context()
	if err := s.cb.opened(ctx, st.id); err != nil {
		return err
	}
	defer s.closeStream(st)
	sw, direct := grpc.ServerTransportStreamFromContext(ctx).(statusWriter)
	direct = direct && oneGoroutine
	var stop chan struct{}
	if direct {
		st.stop = func(err error) { sw.WriteStatus(statusOf(err)) }
	} else {
		stop = make(chan struct{})
		var once sync.Once
		st.stop = func(error) { once.Do(func() { close(stop) }) }
	}
	st.done = ctx.Done()
	st.send = func() error { return sendReady(s, gs, st, build) }
	defer context.AfterFunc(s.streams, func() { st.stop(nil) })()
	recv := func() error {
		for {
			req, err := gs.Recv()
			if err == nil {
				err = handle(st, req)
			}
			if err != nil {
				return err
			}
		}
	}
	var err error
	if direct {
		err = recv()
	} else {
		errc := make(chan error, 1)
		go func() { errc <- recv() }()
		select {
		case err = <-errc:
		case <-stop:
		case <-ctx.Done():
		}
	}
	// A sender waiting for flow control returns once the stream's
	// status is written (the handler's return writes it on the
	// fallback).
	var endSending func()
	if direct {
		endSending = func() { st.stop(err) }
	}
	sendErr := st.end(endSending)
	switch {
	case s.streams.Err() != nil:
		return nil // Run ended: agents reconnect to the next controller
	case sendErr != nil:
		return sendErr
	case err == nil || isEOF(err):
		return nil
	}
	return err
}

// statusOf is the status a handler returning err ends its stream with,
// as gRPC makes it (nil: OK).
func statusOf(err error) *status.Status {
	if err == nil || isEOF(err) {
		return status.New(codes.OK, "")
	}
	if st, ok := status.FromError(err); ok {
		return st
	}
	return status.FromContextError(err)
}

// sendReady builds every type that is ready, then sends them back to
// back, so that the responses one change caused (an endpoint change's
// load assignments and flow-table shard) leave in one write.
func sendReady[Req, Resp any](s *Server, gs bidi[Req, Resp], st *stream, build func(*stream, *sub) *Resp) error {
	st.mu.Lock()
	ready := false
	for _, t := range Types {
		sb := st.subs[t]
		if sb != nil && sb.nonce == "" && (sb.dirty.Load() || len(sb.pages) > 0) {
			ready = true
			break
		}
	}
	st.mu.Unlock()
	if !ready {
		return nil
	}
	select {
	case s.senders <- struct{}{}:
	case <-st.done:
		return nil
	}
	var buf [8]*Resp
	resps := buf[:0]
	st.mu.Lock()
	for _, t := range Types {
		if sb := st.subs[t]; sb != nil {
			if resp := build(st, sb); resp != nil {
				resps = append(resps, resp)
			}
		}
	}
	st.mu.Unlock()
	<-s.senders
	// Send (marshal, and wait while the stream's flow-control window is
	// full) holds no slot: a slow agent must not hold up the others.
	// What waits is bounded by the one outstanding response per type,
	// paged.
	for _, resp := range resps {
		if err := gs.Send(resp); err != nil {
			return err
		}
	}
	return nil
}

// closeStream drops a stream's subscriptions from the indexes.
func (s *Server) closeStream(st *stream) {
	st.mu.Lock()
	for _, sb := range st.subs {
		sb.sc.unsubscribe(sb, sb.wildcard, sb.names)
	}
	st.subs, st.closed = nil, true
	st.mu.Unlock()
	s.cb.closed(st.id)
}

// typeOf checks a request's type URL (a single-type service's requests
// may leave it empty).
func (st *stream) typeOf(url string) (string, error) {
	if url == "" {
		url = st.fixedType
	}
	i := typeOrder(url)
	if i == len(Types) || st.fixedType != "" && url != st.fixedType {
		return "", fmt.Errorf("resource type %q is not served: fibmesh serves %v", url, Types)
	}
	// The server's own string, not the request's: the stream keeps it.
	return Types[i], nil
}

// bindNode is the node of the stream's first request naming one.
// st.mu is held.
func (st *stream) bindNode(n *core.Node) {
	if st.node == "" && n.GetId() != "" {
		st.node = n.GetId()
	}
}

// newSub subscribes a stream to a type. st.mu is held.
func (s *Server) newSub(st *stream, typeURL string, wildcard bool, names []string) *sub {
	sb := &sub{st: st, typeURL: typeURL, sc: s.store.scope(typeURL, st.node), wildcard: wildcard, names: newNameSet(names), full: true}
	sb.globs = sb.names.globs()
	sb.sc.mu.Lock()
	sb.sentSeq = sb.sc.seq
	sb.sc.mu.Unlock()
	sb.sc.subscribe(sb, wildcard, names)
	st.subs[typeURL] = sb
	sb.dirty.Store(true)
	return sb
}

// handleDelta handles one delta request: an ACK or NACK of the
// outstanding response (O(1): no index, no resource is looked at), and
// subscription changes.
func (s *Server) handleDelta(st *stream, req *discovery.DeltaDiscoveryRequest) error {
	t, err := st.typeOf(req.GetTypeUrl())
	if err != nil {
		return err
	}
	if err := s.cb.checkNode(st.id, req.GetNode().GetId()); err != nil {
		return err
	}
	s.noteNICTLS(st.id, req.GetNode())
	subscribe := req.GetResourceNamesSubscribe()
	first := s.cb.firstFlowTableRequest(st.id, t)
	wildcard := slices.Contains(subscribe, "*") || len(subscribe) == 0 && first
	if err := s.cb.checkFlowTables(st.id, t, subscribe, wildcard); err != nil {
		return err
	}
	s.tracker.admit(st.id, s.streams.Done(), st.done)
	st.work.Add(1)
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return errStreamClosed
	}
	st.bindNode(req.GetNode())
	sb := st.subs[t]
	if nonce := req.GetResponseNonce(); nonce != "" && sb != nil && nonce == sb.nonce {
		version := sb.version
		sb.nonce, sb.version = "", ""
		more := sb.dirty.Load() || len(sb.pages) > 0 || len(sb.force) > 0
		paging := len(sb.pages) > 0
		st.mu.Unlock()
		s.tracker.answered(st.id, req.GetNode(), t, version, req.GetErrorDetail(), paging)
		if more {
			st.wake()
		}
		st.mu.Lock()
		if st.closed {
			st.mu.Unlock()
			return errStreamClosed
		}
	}
	if sb == nil {
		if len(subscribe) == 0 {
			wildcard = true // a first request without names is a wildcard subscription
		}
		sb = s.newSub(st, t, wildcard, withoutStar(subscribe))
		sb.initial = req.GetInitialResourceVersions()
		sb.force = withoutStar(subscribe)
		st.mu.Unlock()
		s.tracker.bindOnly(st.id, req.GetNode())
		st.wake()
		return nil
	}
	var added, removed []string
	star, unstar := false, false
	for _, n := range subscribe {
		if n == "*" {
			star = !sb.wildcard
			continue
		}
		if sb.names.add(n) {
			added = append(added, n)
		}
		sb.force = append(sb.force, n)
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			unstar = sb.wildcard
			continue
		}
		if sb.names.remove(n) {
			removed = append(removed, n)
		}
	}
	if star {
		sb.wildcard, sb.full = true, true
	}
	if unstar {
		sb.wildcard = false
	}
	sb.globs = sb.names.globs()
	changed := star || unstar || len(added) > 0 || len(removed) > 0 || len(subscribe) > 0
	// The index changes under st.mu, so that a stream closing meanwhile
	// leaves nothing of it in the index.
	if len(added) > 0 || star {
		sb.sc.subscribe(sb, star, added)
	}
	if len(removed) > 0 || unstar {
		sb.sc.unsubscribe(sb, unstar, removed)
	}
	st.mu.Unlock()
	if changed {
		sb.dirty.Store(true)
		st.wake()
	}
	return nil
}

func withoutStar(names []string) []string {
	if !slices.Contains(names, "*") {
		return names
	}
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "*" })
}

// buildDelta builds sb's next delta response, or nil when there is none
// to send now. st.mu is held.
func (s *Server) buildDelta(st *stream, sb *sub) *discovery.DeltaDiscoveryResponse {
	if sb.nonce != "" || !sb.dirty.Load() && len(sb.pages) == 0 {
		return nil
	}
	// A later page of a first sync sends names queued when the sync
	// began; it is not what an update marked the sub for. The mark stays,
	// so that what changed meanwhile goes out from the changelog once the
	// last page is ACKed (a page read the latest version only of the
	// names it carries).
	if sb.full || len(sb.pages) == 0 {
		sb.dirty.Store(false)
	}
	st.work.Add(1)
	sc := sb.sc
	var res []*discovery.Resource
	var removed []string
	sc.mu.RLock()
	sb.force = sc.expandLocked(sb.force)
	switch {
	case sb.full:
		// First sync: every subscribed resource the client does not hold
		// at its version (a reconnecting client names what it holds), in
		// name order, paged.
		sb.full = false
		if sb.wildcard {
			for _, n := range sc.namesLocked() {
				if e := sc.res[n]; sb.initial[n] != e.version {
					sb.pages = append(sb.pages, n)
				}
			}
		}
		for n := range sb.initial {
			if _, ok := sc.res[n]; !ok && sb.wants(n) {
				removed = append(removed, n)
			}
		}
		slices.Sort(removed)
		for _, n := range sb.force {
			if e, ok := sc.res[n]; ok && sb.initial[n] != e.version && !sb.wildcard {
				sb.pages = append(sb.pages, n)
			}
		}
		sb.force, sb.initial = nil, nil
		// The pages carry the state as of now (or later: each page reads
		// its names' latest version): the changelog after the sync starts
		// here.
		sb.sentSeq = sc.seq
		s.store.stats.visited.Add(int64(len(sc.res)))
	}
	if len(sb.pages) > 0 {
		size := 0
		i := 0
		for ; i < len(sb.pages) && (size < pageBytes || i == 0); i++ {
			if e, ok := sc.res[sb.pages[i]]; ok {
				res = append(res, e.resource())
				size += len(e.anyOf().Value)
			}
		}
		sb.pages = sb.pages[i:]
		if len(sb.pages) == 0 {
			sb.pages = nil
		}
		s.store.stats.visited.Add(int64(i))
	} else {
		// What changed since the sub was last sent, and the names it
		// newly subscribed to.
		i := sc.sinceLocked(sb.sentSeq)
		var seen map[string]bool
		if len(sc.log)-i+len(sb.force) > 1 {
			seen = make(map[string]bool, len(sc.log)-i+len(sb.force))
		}
		add := func(n string, force bool) {
			if seen != nil {
				if seen[n] {
					return
				}
				seen[n] = true
			}
			if e, ok := sc.res[n]; ok {
				res = append(res, e.resource())
			} else if !force {
				removed = append(removed, n)
			}
		}
		for _, r := range sc.log[i:] {
			if sb.wants(r.name) {
				add(r.name, false)
			}
		}
		for _, n := range sb.force {
			add(n, true)
		}
		s.store.stats.visited.Add(int64(len(sc.log) - i + len(sb.force)))
		sb.force = nil
		sb.sentSeq = sc.seq
	}
	version := sc.versionLocked()
	sc.mu.RUnlock()
	if len(res) == 0 && len(removed) == 0 && sb.sent {
		return nil
	}
	sb.sent = true
	resp := &discovery.DeltaDiscoveryResponse{SystemVersionInfo: version, TypeUrl: sb.typeURL, Resources: res, RemovedResources: removed, Nonce: st.nextNonce()}
	sb.nonce, sb.version = resp.Nonce, version
	s.tracker.response(st.id, sb.typeURL, version, deltaSize(resp), st.node)
	return resp
}

// deltaSize is a response's size, counting the shared resources by the
// length of their marshalled values (proto.Size would walk them).
func deltaSize(r *discovery.DeltaDiscoveryResponse) int {
	n := len(r.SystemVersionInfo) + len(r.TypeUrl) + len(r.Nonce)
	for _, x := range r.Resources {
		n += len(x.Name) + len(x.Version) + len(x.Resource.TypeUrl) + len(x.Resource.Value) + 12
	}
	for _, x := range r.RemovedResources {
		n += len(x) + 2
	}
	return n
}

// handleSotW handles one state-of-the-world request.
func (s *Server) handleSotW(st *stream, req *discovery.DiscoveryRequest) error {
	t, err := st.typeOf(req.GetTypeUrl())
	if err != nil {
		return err
	}
	if err := s.cb.checkNode(st.id, req.GetNode().GetId()); err != nil {
		return err
	}
	s.noteNICTLS(st.id, req.GetNode())
	names := req.GetResourceNames()
	wildcard := len(names) == 0 || slices.Contains(names, "*")
	if err := s.cb.checkFlowTables(st.id, t, names, wildcard); err != nil {
		return err
	}
	s.tracker.admit(st.id, s.streams.Done(), st.done)
	st.work.Add(1)
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return errStreamClosed
	}
	st.bindNode(req.GetNode())
	sb := st.subs[t]
	if sb == nil {
		sb = s.newSub(st, t, wildcard, withoutStar(names))
		st.mu.Unlock()
		s.tracker.bindOnly(st.id, req.GetNode())
		st.wake()
		return nil
	}
	if nonce := req.GetResponseNonce(); nonce != "" && nonce == sb.nonce {
		version := sb.version
		sb.nonce, sb.version = "", ""
		more := sb.dirty.Load()
		st.mu.Unlock()
		s.tracker.answered(st.id, req.GetNode(), t, version, req.GetErrorDetail(), false)
		if more {
			st.wake()
		}
		st.mu.Lock()
		if st.closed {
			st.mu.Unlock()
			return errStreamClosed
		}
	}
	// A change of the names subscribed: the new set is sent whole.
	same := wildcard == sb.wildcard && (wildcard || slices.Equal(newNameSet(names), sb.names))
	if same {
		st.mu.Unlock()
		return nil
	}
	old, oldWild := sb.names, sb.wildcard
	sb.wildcard, sb.names, sb.full = wildcard, newNameSet(withoutStar(names)), true
	sb.globs = sb.names.globs()
	sb.sc.unsubscribe(sb, oldWild, old)
	sb.sc.subscribe(sb, wildcard, withoutStar(names))
	st.mu.Unlock()
	sb.dirty.Store(true)
	st.wake()
	return nil
}

// buildSotW builds sb's next state-of-the-world response: for listeners
// and clusters every subscribed resource, for the other types those
// changed since the sub was last sent (all of them the first time), as
// go-control-plane's caches answer. st.mu is held.
func (s *Server) buildSotW(st *stream, sb *sub) *discovery.DiscoveryResponse {
	if sb.nonce != "" || !sb.dirty.Load() {
		return nil
	}
	sb.dirty.Store(false)
	st.work.Add(1)
	sc := sb.sc
	var res []*anypb.Any
	sc.mu.RLock()
	if sb.full || cache.ResourceRequiresFullStateInSotw(sb.typeURL) {
		sb.full = false
		if sb.wildcard {
			for _, n := range sc.namesLocked() {
				res = append(res, sc.res[n].anyOf())
			}
		} else {
			for _, n := range sc.expandLocked(sb.names) {
				if e, ok := sc.res[n]; ok {
					res = append(res, e.anyOf())
				}
			}
		}
		s.store.stats.visited.Add(int64(len(sc.res)))
	} else {
		i := sc.sinceLocked(sb.sentSeq)
		seen := map[string]bool{}
		for _, r := range sc.log[i:] {
			if e, ok := sc.res[r.name]; ok && sb.wants(r.name) && !seen[r.name] {
				seen[r.name] = true
				res = append(res, e.anyOf())
			}
		}
		s.store.stats.visited.Add(int64(len(sc.log) - i))
		if len(res) == 0 && sb.sent {
			sb.sentSeq = sc.seq
			sc.mu.RUnlock()
			return nil
		}
	}
	sb.sentSeq = sc.seq
	version := sc.versionLocked()
	sc.mu.RUnlock()
	sb.sent = true
	resp := &discovery.DiscoveryResponse{VersionInfo: version, TypeUrl: sb.typeURL, Resources: res, Nonce: st.nextNonce()}
	sb.nonce, sb.version = resp.Nonce, version
	size := len(version) + len(sb.typeURL) + len(resp.Nonce)
	for _, a := range res {
		size += len(a.TypeUrl) + len(a.Value) + 6
	}
	s.tracker.response(st.id, sb.typeURL, version, size, st.node)
	return resp
}

// ads serves the ADS service and the single-type services.
type ads struct{ s *Server }

func (a ads) StreamAggregatedResources(gs grpc.BidiStreamingServer[discovery.DiscoveryRequest, discovery.DiscoveryResponse]) error {
	return a.s.serveSotW(gs, "")
}

func (a ads) DeltaAggregatedResources(gs grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) error {
	return a.s.serveDelta(gs, "")
}

func (s *Server) serveSotW(gs grpc.BidiStreamingServer[discovery.DiscoveryRequest, discovery.DiscoveryResponse], typeURL string) error {
	return serve(s, gs, newStream(s.sotwIDs.Add(1), false, typeURL), s.handleSotW, s.buildSotW)
}

func (s *Server) serveDelta(gs grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse], typeURL string) error {
	return serve(s, gs, newStream(-s.deltaIDs.Add(1), true, typeURL), s.handleDelta, s.buildDelta)
}

// fetch refuses REST-style fetches, as before.
func fetch(context.Context, *discovery.DiscoveryRequest) (*discovery.DiscoveryResponse, error) {
	return nil, fmt.Errorf("REST fetch is not served: use ADS")
}

var errStreamClosed = status.Error(codes.Canceled, "the stream is closed")

// isEOF reports whether a receive error is the client ending its stream.
func isEOF(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	c := status.Code(err)
	return c == codes.Canceled
}

type (
	cds struct{ s *Server }
	eds struct{ s *Server }
	lds struct{ s *Server }
	rds struct{ s *Server }
	sds struct{ s *Server }
)

type sotwStream = grpc.BidiStreamingServer[discovery.DiscoveryRequest, discovery.DiscoveryResponse]
type deltaStream = grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]

func (x cds) StreamClusters(gs sotwStream) error { return x.s.serveSotW(gs, resource.ClusterType) }
func (x cds) DeltaClusters(gs deltaStream) error { return x.s.serveDelta(gs, resource.ClusterType) }
func (x cds) FetchClusters(ctx context.Context, r *discovery.DiscoveryRequest) (*discovery.DiscoveryResponse, error) {
	return fetch(ctx, r)
}
func (x eds) StreamEndpoints(gs sotwStream) error { return x.s.serveSotW(gs, resource.EndpointType) }
func (x eds) DeltaEndpoints(gs deltaStream) error { return x.s.serveDelta(gs, resource.EndpointType) }
func (x eds) FetchEndpoints(ctx context.Context, r *discovery.DiscoveryRequest) (*discovery.DiscoveryResponse, error) {
	return fetch(ctx, r)
}
func (x lds) StreamListeners(gs sotwStream) error { return x.s.serveSotW(gs, resource.ListenerType) }
func (x lds) DeltaListeners(gs deltaStream) error { return x.s.serveDelta(gs, resource.ListenerType) }
func (x lds) FetchListeners(ctx context.Context, r *discovery.DiscoveryRequest) (*discovery.DiscoveryResponse, error) {
	return fetch(ctx, r)
}
func (x rds) StreamRoutes(gs sotwStream) error { return x.s.serveSotW(gs, resource.RouteType) }
func (x rds) DeltaRoutes(gs deltaStream) error { return x.s.serveDelta(gs, resource.RouteType) }
func (x rds) FetchRoutes(ctx context.Context, r *discovery.DiscoveryRequest) (*discovery.DiscoveryResponse, error) {
	return fetch(ctx, r)
}
func (x sds) StreamSecrets(gs sotwStream) error { return x.s.serveSotW(gs, resource.SecretType) }
func (x sds) DeltaSecrets(gs deltaStream) error { return x.s.serveDelta(gs, resource.SecretType) }
func (x sds) FetchSecrets(ctx context.Context, r *discovery.DiscoveryRequest) (*discovery.DiscoveryResponse, error) {
	return fetch(ctx, r)
}
