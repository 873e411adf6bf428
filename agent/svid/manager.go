package svid

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
)

// ManagerConfig configures a Manager: what each pod's Rotator gets.
type ManagerConfig struct {
	Client cav1.CertificateServiceClient
	// Token as in RotatorConfig: nil when the connection sends it.
	Token TokenSource
	// TTL to ask for (0: the CA's default), and the rotators' backoff.
	TTL                    time.Duration
	MinBackoff, MaxBackoff time.Duration
	// OnChange, if set, is called after each SVID a pod receives. It
	// must not block.
	OnChange func(namespace, pod string, s *SVID)
}

// Manager runs one Rotator per pod of the node.
type Manager struct {
	cfg ManagerConfig

	mu   sync.Mutex
	pods map[string]*entry
	wg   sync.WaitGroup
}

type entry struct {
	ns, pod string
	rot     *Rotator
	cancel  context.CancelFunc
	first   chan struct{} // closed at the first SVID
}

// NewManager returns a Manager; Ensure starts a pod's rotation.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Client == nil {
		return nil, errors.New("svid manager: Client is required")
	}
	return &Manager{cfg: cfg, pods: map[string]*entry{}}, nil
}

func key(ns, pod string) string { return ns + "/" + pod }

// Ensure starts rotating the SVID of namespace/pod unless it already is.
// Rotation runs until Remove or Close.
func (m *Manager) Ensure(namespace, pod string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pods == nil {
		return errors.New("svid manager: closed")
	}
	k := key(namespace, pod)
	if _, ok := m.pods[k]; ok {
		return nil
	}
	r, err := NewRotator(RotatorConfig{Client: m.cfg.Client, Token: m.cfg.Token, Namespace: namespace, Pod: pod,
		TTL: m.cfg.TTL, MinBackoff: m.cfg.MinBackoff, MaxBackoff: m.cfg.MaxBackoff})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &entry{ns: namespace, pod: pod, rot: r, cancel: cancel, first: make(chan struct{})}
	m.pods[k] = e
	m.wg.Add(2)
	go func() { defer m.wg.Done(); _ = r.Run(ctx) }()
	go func() {
		defer m.wg.Done()
		once := sync.Once{}
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-r.Updates():
				once.Do(func() { close(e.first) })
				if m.cfg.OnChange != nil {
					m.cfg.OnChange(namespace, pod, s)
				}
			}
		}
	}()
	return nil
}

// Remove stops rotating namespace/pod's SVID and forgets it.
func (m *Manager) Remove(namespace, pod string) {
	m.mu.Lock()
	e, ok := m.pods[key(namespace, pod)]
	delete(m.pods, key(namespace, pod))
	m.mu.Unlock()
	if ok {
		e.cancel()
	}
}

// Retain stops the rotation of every pod keep returns false for.
func (m *Manager) Retain(keep func(namespace, pod string) bool) {
	m.mu.Lock()
	var gone []*entry
	for k, e := range m.pods {
		if !keep(e.ns, e.pod) {
			gone = append(gone, e)
			delete(m.pods, k)
		}
	}
	m.mu.Unlock()
	for _, e := range gone {
		e.cancel()
	}
}

// Wait waits until namespace/pod has an SVID (Ensure must have been
// called) or ctx is done; it then returns the error of the last attempt.
func (m *Manager) Wait(ctx context.Context, namespace, pod string) (*SVID, error) {
	m.mu.Lock()
	e, ok := m.pods[key(namespace, pod)]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no SVID rotation for %s", key(namespace, pod))
	}
	select {
	case <-e.first:
		return e.rot.Current(), nil
	case <-ctx.Done():
		if err := e.rot.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("no SVID for %s yet: %w", key(namespace, pod), ctx.Err())
	}
}

// Get returns namespace/pod's Rotator, nil if it has none.
func (m *Manager) Get(namespace, pod string) *Rotator {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.pods[key(namespace, pod)]; ok {
		return e.rot
	}
	return nil
}

// PodSVID is one pod's SVID state.
type PodSVID struct {
	Namespace, Pod string
	// Current is nil before the first SVID; Err the last attempt's error.
	Current *SVID
	Err     error
}

// List returns every pod's state, sorted by namespace/pod.
func (m *Manager) List() []PodSVID {
	m.mu.Lock()
	out := make([]PodSVID, 0, len(m.pods))
	for _, e := range m.pods {
		out = append(out, PodSVID{Namespace: e.ns, Pod: e.pod, Current: e.rot.Current(), Err: e.rot.Err()})
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b PodSVID) int { return strings.Compare(key(a.Namespace, a.Pod), key(b.Namespace, b.Pod)) })
	return out
}

// Close stops every rotation and waits for them to end.
func (m *Manager) Close() {
	m.mu.Lock()
	for _, e := range m.pods {
		e.cancel()
	}
	m.pods = nil
	m.mu.Unlock()
	m.wg.Wait()
}
