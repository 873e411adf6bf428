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
	version string
	hash    [32]byte
	// msg is the message as pushed, kept only where the same message is
	// pushed again unchanged (flow tables) and known by identity; the
	// others keep only their bytes (the translated mesh is garbage once
	// marshalled: at 1,000 nodes their listeners alone were ~80 MB).
	msg  proto.Message
	any  *anypb.Any
	dres *discovery.Resource // as a delta response carries it
}

// newEntry marshals m once and hashes the bytes; keep keeps m.
func newEntry(typeURL, name string, m proto.Message, keep bool) (*entry, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", ShortType(typeURL), name, err)
	}
	h := sha256.Sum256(b)
	e := &entry{name: name, version: hex.EncodeToString(h[:8]), hash: h, any: &anypb.Any{TypeUrl: typeURL, Value: b}}
	if keep {
		e.msg = m
	}
	e.dres = &discovery.Resource{Name: name, Version: e.version, Resource: e.any}
	return e, nil
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

	mu   sync.RWMutex
	seq  uint64
	res  map[string]*entry
	log  []logRec // by seq; compacted to the last record per name
	subs map[string]map[*sub]struct{}
	wild map[*sub]struct{}
}

func newScope(typeURL, prefix string, stats *indexStats) *scope {
	return &scope{typeURL: typeURL, prefix: prefix, stats: stats, res: map[string]*entry{},
		subs: map[string]map[*sub]struct{}{}, wild: map[*sub]struct{}{}}
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
	for s := range marked {
		sc.stats.marks.Add(1)
		s.markDirty()
	}
	return n
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
		set, ok := sc.subs[n]
		if !ok {
			set = map[*sub]struct{}{}
			sc.subs[n] = set
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
		if set, ok := sc.subs[n]; ok {
			delete(set, s)
			if len(set) == 0 {
				delete(sc.subs, n)
			}
		}
	}
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
		sc = newScope(resource.ListenerType, versionPrefix(resource.ListenerType, st.epoch), &st.stats)
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
		m, err := e.any.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", ShortType(sc.typeURL), n, err)
		}
		out[n] = m
	}
	return out, nil
}
