package xds

import (
	"fmt"
	"math/rand/v2"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// TestChangelogCompaction: thousands of updates (sets and removals of 200
// names) compact the changelog many times, while streams read it at
// different paces, one only at the end; each ends holding exactly the
// scope's resources at their versions, removals included.
func TestChangelogCompaction(t *testing.T) {
	s := New(Options{})
	sc := s.store.shared[resource.RouteType]
	rng := rand.New(rand.NewPCG(14, 14))
	type client struct {
		st    *stream
		sb    *sub
		every int // reads every n updates (0: only at the end)
		held  map[string]string
	}
	var clients []*client
	for i, every := range []int{1, 7, 100, 0} {
		st := newStream(-int64(i+1), true, "")
		st.mu.Lock()
		sb := s.newSub(st, resource.RouteType, true, nil)
		st.mu.Unlock()
		clients = append(clients, &client{st, sb, every, map[string]string{}})
	}
	read := func(c *client) {
		for {
			c.st.mu.Lock()
			resp := s.buildDelta(c.st, c.sb)
			if resp != nil {
				c.sb.nonce = "" // ACKed
			}
			c.st.mu.Unlock()
			if resp == nil {
				return
			}
			for _, r := range resp.Resources {
				c.held[r.Name] = r.Version
			}
			for _, n := range resp.RemovedResources {
				delete(c.held, n)
			}
		}
	}
	compactions := 0
	for i := range 6000 {
		name := fmt.Sprintf("r%d", rng.IntN(200))
		before := len(sc.log)
		if rng.IntN(3) == 0 {
			sc.update(nil, []string{name})
		} else {
			e, err := newEntry(resource.RouteType, name, &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: fmt.Sprint(i)}}}, false)
			if err != nil {
				t.Fatal(err)
			}
			sc.update([]*entry{e}, nil)
		}
		if len(sc.log) < before {
			compactions++
		}
		for _, c := range clients {
			if c.every > 0 && i%c.every == 0 {
				read(c)
			}
		}
	}
	if compactions < 3 {
		t.Fatalf("the changelog was compacted %d times; the test wants several", compactions)
	}
	if len(sc.log) > max(2048, 3*len(sc.res)) {
		t.Errorf("changelog of %d records for %d resources: not compacted", len(sc.log), len(sc.res))
	}
	want := map[string]string{}
	for n, e := range sc.res {
		want[n] = e.version
	}
	for _, c := range clients {
		read(c)
		if len(c.held) != len(want) {
			t.Errorf("stream reading every %d updates holds %d resources, want %d", c.every, len(c.held), len(want))
		}
		for n, v := range want {
			if c.held[n] != v {
				t.Errorf("stream reading every %d updates holds %s at %q, want %q", c.every, n, c.held[n], v)
				break
			}
		}
	}
}

// A glob name ("a/*") subscribes to every resource under its prefix, now
// and later, with one index entry; other names under other prefixes are
// not sent and do not mark the stream; a reconnecting client told of a
// name under the glob that is gone has it removed.
func TestGlobSubscription(t *testing.T) {
	s := New(Options{})
	sc := s.store.shared[resource.RouteType]
	set := func(names ...string) {
		var es []*entry
		for _, n := range names {
			e, err := newEntry(resource.RouteType, n, &routev3.RouteConfiguration{Name: n, VirtualHosts: []*routev3.VirtualHost{{Name: fmt.Sprint(sc.seq)}}}, false)
			if err != nil {
				t.Fatal(err)
			}
			es = append(es, e)
		}
		sc.update(es, nil)
	}
	set("a/1", "a/2", "ab", "b/1", "x")
	st := newStream(-1, true, "")
	st.mu.Lock()
	sb := s.newSub(st, resource.RouteType, false, []string{"a/*", "x"})
	sb.force = []string{"a/*", "x"}
	sb.initial = map[string]string{"a/9": "old"}
	st.mu.Unlock()
	read := func() (names, removed []string) {
		st.mu.Lock()
		defer st.mu.Unlock()
		for {
			resp := s.buildDelta(st, sb)
			if resp == nil {
				return names, removed
			}
			sb.nonce = ""
			for _, r := range resp.Resources {
				names = append(names, r.Name)
			}
			removed = append(removed, resp.RemovedResources...)
		}
	}
	if names, removed := read(); fmt.Sprint(names, removed) != "[a/1 a/2 x] [a/9]" {
		t.Errorf("first sync sent %v and removed %v, want [a/1 a/2 x] and [a/9]", names, removed)
	}
	if len(sc.subs) != 1 || len(sc.globs) != 1 || len(sc.globs["a/*"]) != 1 {
		t.Errorf("index: %d names, globs %v; want x alone by name and a/* as one glob", len(sc.subs), sc.globs)
	}
	sb.dirty.Store(false)
	set("b/2", "ab")
	if sb.dirty.Load() {
		t.Error("b/2 and ab, not under a/, marked the stream")
	}
	set("a/3")
	sc.update(nil, []string{"a/1"})
	if !sb.dirty.Load() {
		t.Error("a/3 added under the glob did not mark the stream")
	}
	if names, removed := read(); fmt.Sprint(names, removed) != "[a/3] [a/1]" {
		t.Errorf("after a/3 added and a/1 removed: sent %v, removed %v", names, removed)
	}
	sc.unsubscribe(sb, false, []string{"a/*"})
	if len(sc.globs) != 0 {
		t.Errorf("unsubscribed, the glob index still holds %v", sc.globs)
	}
}
