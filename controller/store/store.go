// Package store defines how the controller's config stores hand their input
// to the model: a Store watches one source (a directory of YAML, see
// store/file; the Kubernetes API, see store/kube) and sends each new state
// of that source as an Update.
//
// Updates are coalesced: a reader that falls behind never sees a queue of
// stale states, only the latest one. A store therefore never blocks on its
// reader, and the reader never has to drain a backlog to catch up.
package store

import (
	"context"
	"sync"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Store is one source of config.
type Store interface {
	// Run watches the source and publishes Updates until ctx is done.
	// It returns nil when ctx is done, or an error if the store cannot
	// start at all (for example, the directory to watch does not exist).
	// Updates is closed when Run returns. Run may be called once.
	Run(ctx context.Context) error
	// Updates delivers the latest state of the source. The first Update
	// comes once the store has read its source completely (for Kubernetes,
	// once the informer caches are synced). Only the latest Update is
	// kept: an Update not yet received is replaced by a newer one.
	Updates() <-chan Update
}

// Update is one state of a store's source.
type Update struct {
	// Snapshot is the source's current content when Err is nil. When Err
	// is non-nil it is the last good snapshot, which stays in force; it
	// is nil if there has been none yet.
	//
	// Snapshots and the objects in them are shared and must not be
	// modified.
	Snapshot *config.Snapshot
	// Err is non-nil when the source's current content was rejected or
	// could not be read: a broken document (*config.DecodeError values,
	// joined with errors.Join), a directory that went away, a watch that
	// could not be set up. A later good Update supersedes it.
	Err error
}

// Publisher hands Updates from a store to its one reader, keeping only the
// latest: Publish never blocks, and replaces an Update the reader has not
// received yet. Publishing the same state twice in a row (see Equal) is a
// no-op, so that events that change nothing a store reports (an informer
// delivering its initial list after the first snapshot, an editor's swap
// file) cause no Update. The zero Publisher is not usable; use
// NewPublisher.
type Publisher struct {
	mu        sync.Mutex
	ch        chan Update
	last      Update
	published bool
	closed    bool
}

// NewPublisher returns a Publisher with nothing published yet.
func NewPublisher() *Publisher {
	return &Publisher{ch: make(chan Update, 1)}
}

// Updates returns the channel the reader receives Updates on.
func (p *Publisher) Updates() <-chan Update { return p.ch }

// Publish makes u the latest Update. It reports whether u was new, that
// is, not equal to the previous Update. Publishing after Close is a no-op.
func (p *Publisher) Publish(u Update) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || (p.published && Equal(p.last, u)) {
		return false
	}
	p.last, p.published = u, true
	// The channel holds at most one Update and only Publish sends on it,
	// under mu: if it is full, the reader has not taken the older Update
	// yet, so take it back and send the newer one in its place.
	select {
	case <-p.ch:
	default:
	}
	p.ch <- u
	return true
}

// Close closes the Updates channel after the Update still in it, if any,
// has been received. It may be called more than once.
func (p *Publisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.ch)
	}
}

// Equal reports whether a and b describe the same state: errors with the
// same text, and the same snapshot: the same pointer, or the same
// resources (kind, namespace, name, source) holding the very same objects.
//
// Objects are compared by identity, never by content: the reader of the
// older Update may be reading those objects at the same time (a protobuf
// message caches its size and reflection data in itself), and reading
// them here would race with it. Stores that rebuild objects (store/file)
// reuse the older snapshot themselves when its content did not change.
func Equal(a, b Update) bool {
	if (a.Err == nil) != (b.Err == nil) {
		return false
	}
	if a.Err != nil && a.Err.Error() != b.Err.Error() {
		return false
	}
	if a.Snapshot == b.Snapshot {
		return true
	}
	if a.Snapshot == nil || b.Snapshot == nil {
		return false
	}
	return sameResources(a.Snapshot.Resources, b.Snapshot.Resources) &&
		sameResources(a.Snapshot.Skipped, b.Snapshot.Skipped)
}

func sameResources(a, b []config.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GVK != b[i].GVK || a[i].Namespace != b[i].Namespace ||
			a[i].Name != b[i].Name || a[i].Source != b[i].Source ||
			a[i].Object != b[i].Object {
			return false
		}
	}
	return true
}
