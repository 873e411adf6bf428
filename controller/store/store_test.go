package store_test

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/store"
)

func snap(names ...string) *config.Snapshot {
	s := &config.Snapshot{}
	for _, n := range names {
		s.Resources = append(s.Resources, config.Resource{
			Name:   n,
			Object: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}},
		})
	}
	return s
}

// TestPublisherCoalesces: a reader that did not keep up gets only the
// latest Update, and Publish never blocks.
func TestPublisherCoalesces(t *testing.T) {
	p := store.NewPublisher()
	a, b, c := snap("a"), snap("b"), snap("c")
	for _, s := range []*config.Snapshot{a, b, c} {
		if !p.Publish(store.Update{Snapshot: s}) {
			t.Fatalf("Publish(%v) = false, want true", s.Resources[0].Name)
		}
	}
	if u := <-p.Updates(); u.Snapshot != c {
		t.Errorf("got %v, want the latest, c", u.Snapshot.Resources[0].Name)
	}
	select {
	case u := <-p.Updates():
		t.Errorf("second Update %v, want none", u)
	default:
	}
}

// TestPublisherDropsRepeats: publishing the same state again sends
// nothing; a different error, or no error, is a new state.
func TestPublisherDropsRepeats(t *testing.T) {
	p := store.NewPublisher()
	good := snap("a")
	steps := []struct {
		u    store.Update
		sent bool
	}{
		{store.Update{Snapshot: good}, true},
		{store.Update{Snapshot: good}, false},
		{store.Update{Snapshot: &config.Snapshot{Resources: good.Resources}}, false}, // same resources
		{store.Update{Snapshot: snap("a")}, true},                                    // equal content, other objects: compared by identity only
		{store.Update{Snapshot: good}, true},
		{store.Update{Snapshot: good, Err: errors.New("broken")}, true},
		{store.Update{Snapshot: good, Err: errors.New("broken")}, false}, // same text
		{store.Update{Snapshot: good, Err: errors.New("broken twice")}, true},
		{store.Update{Snapshot: good}, true}, // fixed: same snapshot, but no error now
		{store.Update{Snapshot: snap("a", "b")}, true},
		{store.Update{}, true},
	}
	for i, st := range steps {
		if got := p.Publish(st.u); got != st.sent {
			t.Errorf("step %d: Publish = %v, want %v", i, got, st.sent)
		}
		if st.sent {
			if u := <-p.Updates(); !store.Equal(u, st.u) {
				t.Errorf("step %d: received %+v, want %+v", i, u, st.u)
			}
		}
	}
}

// TestPublisherClose: the reader gets the pending Update, then sees the
// channel closed; publishing after Close does nothing.
func TestPublisherClose(t *testing.T) {
	p := store.NewPublisher()
	p.Publish(store.Update{Snapshot: snap("a")})
	p.Close()
	p.Close()
	if p.Publish(store.Update{Snapshot: snap("b")}) {
		t.Error("Publish after Close = true")
	}
	if u, open := <-p.Updates(); !open || u.Snapshot.Resources[0].Name != "a" {
		t.Errorf("got %+v, %v; want the pending Update a", u, open)
	}
	if _, open := <-p.Updates(); open {
		t.Error("Updates not closed")
	}
}
