package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// entry is one resource as served: marshalled once into its Any, with
// its version (the first 8 bytes of the SHA-256 of the deterministic
// encoding, in hex). Entries are immutable once built: every stream's
// response shares them.
type entry struct {
	name    string
	typeURL string
	version string
	hash    [32]byte
	// msg is the message as pushed, kept only where the same message is
	// pushed again unchanged (flow tables) and known by identity; the
	// others keep only their bytes (the translated mesh is garbage once
	// marshalled: at 1,000 nodes their listeners alone were ~80 MB).
	msg proto.Message

	// fill sets any and dres: at once for most entries, on first use for
	// a lazy one (newLazyEntry).
	fill sync.Once
	any  *anypb.Any
	dres *discovery.Resource // as a delta response carries it
}

// anyOf is the entry's Any.
func (e *entry) anyOf() *anypb.Any {
	e.fill.Do(e.marshal)
	return e.any
}

// resource is the entry as a delta response carries it.
func (e *entry) resource() *discovery.Resource {
	e.fill.Do(e.marshal)
	return e.dres
}

// marshal builds a lazy entry's Any from its message. The message
// marshalled before (its parts were hashed), so it does again.
func (e *entry) marshal() {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.msg)
	if err != nil {
		b = nil // cannot happen: its parts marshalled; an empty resource is then visible
	}
	e.any = &anypb.Any{TypeUrl: e.typeURL, Value: b}
	e.dres = &discovery.Resource{Name: e.name, Version: e.version, Resource: e.any}
}

// newLazyEntry is an entry of m whose hash is known (from its parts)
// and whose bytes are made only when a stream first needs them: the
// whole shared flow table, which agents do not read (they read its
// shards).
func newLazyEntry(typeURL, name string, m proto.Message, hash [32]byte) *entry {
	return &entry{name: name, typeURL: typeURL, version: hex.EncodeToString(hash[:8]), hash: hash, msg: m}
}

// newEntry marshals m once and hashes the bytes; keep keeps m.
func newEntry(typeURL, name string, m proto.Message, keep bool) (*entry, error) {
	b, h, err := marshalHashed(typeURL, name, m)
	if err != nil {
		return nil, err
	}
	e := entryOf(typeURL, name, b, h)
	if keep {
		e.msg = m
	}
	return e, nil
}

// marshalHashed is m's deterministic encoding and its SHA-256.
func marshalHashed(typeURL, name string, m proto.Message) ([]byte, [32]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("%s %s: %w", ShortType(typeURL), name, err)
	}
	return b, sha256.Sum256(b), nil
}

// entryOf is the entry of b, a resource's encoding whose hash is h.
func entryOf(typeURL, name string, b []byte, h [32]byte) *entry {
	e := &entry{name: name, typeURL: typeURL, version: hex.EncodeToString(h[:8]), hash: h}
	e.fill.Do(func() {
		e.any = &anypb.Any{TypeUrl: typeURL, Value: b}
		e.dres = &discovery.Resource{Name: name, Version: e.version, Resource: e.any}
	})
	return e
}

// logRec is one change of a scope: at seq, name was set or removed (a
// name with no entry now was removed).
type logRec struct {
	seq  uint64
	name string
}

// indexStats counts the work done on subscriber indexes and resources,
// so that tests can check an ACK does none (work counted, not timed).
type indexStats struct {
	// indexOps counts reads and writes of a scope's subscriber index
	// (resource → streams, and the wildcard set).
	indexOps atomic.Int64
	// visited counts changelog records and resources looked at to build
	// responses.
	visited atomic.Int64
	// marks counts streams marked for sending by an update.
	marks atomic.Int64
}

// scope is one set of resources of one type with its own sequence
// number: the shared resources of a type (every node sees the same), or
// one node's listeners. An update costs what it changed plus the streams
// subscribed to what changed: it appends to the changelog and marks those
// streams; each stream's sender later reads the changelog from the
// sequence it was last sent.
type scope struct {
	typeURL string
	prefix  string // of the system version: "<TYPE>-[<epoch>.]"
	stats   *indexStats
	marks   *markSet

	mu   sync.RWMutex
	seq  uint64
	res  map[string]*entry
	log  []logRec // by seq; compacted to the last record per name
	subs map[string]map[*sub]struct{}
	wild map[*sub]struct{}
	// globs are the glob subscriptions ("<prefix>/*", isGlob) and their
	// streams; a scope sees few distinct globs.
	globs map[string]map[*sub]struct{}
}

func newScope(typeURL, prefix string, stats *indexStats, marks *markSet) *scope {
	return &scope{typeURL: typeURL, prefix: prefix, stats: stats, marks: marks, res: map[string]*entry{},
		subs: map[string]map[*sub]struct{}{}, wild: map[*sub]struct{}{}, globs: map[string]map[*sub]struct{}{}}
}

// versionLocked is the scope's system version. sc.mu is held.
func (sc *scope) versionLocked() string { return sc.prefix + strconv.FormatUint(sc.seq, 10) }

// update sets and removes resources in one step (one sequence number)
// and marks the streams subscribed to any of them. It returns how many
// resources changed.
func (sc *scope) update(set []*entry, remove []string) int {
	sc.mu.Lock()
	n := 0
	marked := map[*sub]struct{}{}
	mark := func(name string) {
		sc.stats.indexOps.Add(1)
		for s := range sc.subs[name] {
			marked[s] = struct{}{}
		}
		for g, set := range sc.globs {
			if globMatch(g, name) {
				for s := range set {
					marked[s] = struct{}{}
				}
			}
		}
	}
	next := sc.seq + 1
	for _, e := range set {
		if old, ok := sc.res[e.name]; ok && old.hash == e.hash {
			continue
		}
		sc.res[e.name] = e
		sc.log = append(sc.log, logRec{next, e.name})
		mark(e.name)
		n++
	}
	for _, name := range remove {
		if _, ok := sc.res[name]; !ok {
			continue
		}
		delete(sc.res, name)
		sc.log = append(sc.log, logRec{next, name})
		mark(name)
		n++
	}
	if n == 0 {
		sc.mu.Unlock()
		return 0
	}
	sc.seq = next
	sc.stats.indexOps.Add(1)
	for s := range sc.wild {
		marked[s] = struct{}{}
	}
	sc.compactLocked()
	sc.mu.Unlock()
	sc.marks.mark(marked, &sc.stats.marks)
	return n
}

// markSet marks streams for sending, or, while held (a push in
// progress), collects them and marks them when released: a push that
// changes several types (an endpoint change: load assignments and a flow
// table shard) then wakes each stream once, and the stream builds its
// responses of every type together, in xDS order, so that they leave in
// one write rather than in one wave per type.
type markSet struct {
	mu   sync.Mutex
	held bool
	subs map[*sub]struct{}
}

// mark marks subs now, or when the set is released.
func (ms *markSet) mark(subs map[*sub]struct{}, count *atomic.Int64) {
	ms.mu.Lock()
	if ms.held {
		if ms.subs == nil {
			ms.subs = make(map[*sub]struct{}, len(subs))
		}
		for s := range subs {
			ms.subs[s] = struct{}{}
		}
		ms.mu.Unlock()
		return
	}
	ms.mu.Unlock()
	for s := range subs {
		count.Add(1)
		s.markDirty()
	}
}

// hold defers marking until release.
func (ms *markSet) hold() {
	ms.mu.Lock()
	ms.held = true
	ms.mu.Unlock()
}

// release marks what was collected since hold.
func (ms *markSet) release(count *atomic.Int64) {
	ms.mu.Lock()
	ms.held = false
	subs := ms.subs
	ms.subs = nil
	ms.mu.Unlock()
	for s := range subs {
		count.Add(1)
		s.markDirty()
	}
}

// compactLocked keeps the changelog at most about twice the resources:
// only the last record of each name is kept, and records of removed
// names that every subscribed stream has been sent are dropped. Its cost
// is amortised over the updates that grew the log. sc.mu is held.
func (sc *scope) compactLocked() {
	if len(sc.log) < 1024 || len(sc.log) < 2*len(sc.res) {
		return
	}
	low := sc.seq
	for s := range sc.wild {
		low = min(low, s.sentSeq)
	}
	for _, set := range sc.subs {
		for s := range set {
			low = min(low, s.sentSeq)
		}
	}
	for _, set := range sc.globs {
		for s := range set {
			low = min(low, s.sentSeq)
		}
	}
	last := make(map[string]uint64, len(sc.res))
	for _, r := range sc.log {
		last[r.name] = r.seq
	}
	out := sc.log[:0]
	for _, r := range sc.log {
		if last[r.name] != r.seq {
			continue
		}
		if _, live := sc.res[r.name]; !live && r.seq <= low {
			continue
		}
		out = append(out, r)
	}
	clear(sc.log[len(out):])
	sc.log = out
}

// since returns the index of the first changelog record after seq.
// sc.mu is held.
func (sc *scope) sinceLocked(seq uint64) int {
	return sort.Search(len(sc.log), func(i int) bool { return sc.log[i].seq > seq })
}

// subscribe adds names to s's subscription (wildcard: every resource).
func (sc *scope) subscribe(s *sub, wildcard bool, names []string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if wildcard {
		sc.stats.indexOps.Add(1)
		sc.wild[s] = struct{}{}
	}
	for _, n := range names {
		sc.stats.indexOps.Add(1)
		index := sc.subs
		if isGlob(n) {
			index = sc.globs
		}
		set, ok := index[n]
		if !ok {
			set = map[*sub]struct{}{}
			index[n] = set
		}
		set[s] = struct{}{}
	}
}

// unsubscribe removes names from s's subscription (wildcard: the
// wildcard subscription).
func (sc *scope) unsubscribe(s *sub, wildcard bool, names []string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if wildcard {
		sc.stats.indexOps.Add(1)
		delete(sc.wild, s)
	}
	for _, n := range names {
		sc.stats.indexOps.Add(1)
		index := sc.subs
		if isGlob(n) {
			index = sc.globs
		}
		if set, ok := index[n]; ok {
			delete(set, s)
			if len(set) == 0 {
				delete(index, n)
			}
		}
	}
}

// expandLocked is names with each glob replaced by the scope's resources
// it matches, sorted; names not held are kept (a client may subscribe to
// a name before it exists). sc.mu is held.
func (sc *scope) expandLocked(names []string) []string {
	var globs []string
	for _, n := range names {
		if isGlob(n) {
			globs = append(globs, n)
		}
	}
	if len(globs) == 0 {
		return names
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !isGlob(n) {
			out = append(out, n)
		}
	}
	for n := range sc.res {
		for _, g := range globs {
			if globMatch(g, n) {
				out = append(out, n)
				break
			}
		}
	}
	sc.stats.visited.Add(int64(len(sc.res)))
	return slices.Compact(slices.Sorted(slices.Values(out)))
}

// names returns the scope's resource names, sorted.
func (sc *scope) namesLocked() []string {
	out := make([]string, 0, len(sc.res))
	for n := range sc.res {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// store is every scope of the server: one per shared type, one per
// node for listeners.
type store struct {
	stats  indexStats
	marks  markSet
	shared map[string]*scope // by type URL (not listeners)
	epoch  uint64

	mu  sync.Mutex
	lds map[string]*scope // by node
}

func newStore(epoch uint64) *store {
	st := &store{shared: map[string]*scope{}, lds: map[string]*scope{}, epoch: epoch}
	return st
}

// scope returns the scope a stream of node reads typeURL from (nil for a
// type not served).
func (st *store) scope(typeURL, node string) *scope {
	if sc, ok := st.shared[typeURL]; ok {
		return sc
	}
	if typeURL != resource.ListenerType {
		return nil
	}
	return st.nodeScope(node)
}

// nodeScope returns node's listener scope, made empty on first use.
func (st *store) nodeScope(node string) *scope {
	st.mu.Lock()
	defer st.mu.Unlock()
	sc, ok := st.lds[node]
	if !ok {
		sc = newScope(resource.ListenerType, versionPrefix(resource.ListenerType, st.epoch), &st.stats, &st.marks)
		st.lds[node] = sc
	}
	return sc
}

// resources decodes what the scope serves (for tests and debugging).
func (sc *scope) resources() (map[string]proto.Message, error) {
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	out := make(map[string]proto.Message, len(sc.res))
	for n, e := range sc.res {
		m, err := e.anyOf().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", ShortType(sc.typeURL), n, err)
		}
		out[n] = m
	}
	return out, nil
}
