package xds

import (
	"maps"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds/fds"
)

// noteNICTLS records what a stream's node reports, in its xDS node
// metadata (api/fib/v1 NodeMetadataNICTLS), of its NIC's kTLS offload,
// and schedules a push of the flow tables when that changed: every
// route to the node carries it (Route.nic_tls_offload). Only an
// authenticated stream (RequireNode) speaks for its node; a node that
// reports nothing, or a value that is not a bool, counts as no offload.
// A report outlives its stream: the NIC does not change when the agent
// reconnects, and a restarted agent reports again.
func (s *Server) noteNICTLS(stream int64, n *core.Node) {
	node := n.GetId()
	if node == "" {
		return
	}
	if v, ok := s.cb.auth.Load(stream); !ok || v.(string) != node {
		return // unauthenticated (or refused by checkNode already)
	}
	offload, _, err := fibv1.NICTLSFromMetadata(n.GetMetadata())
	s.mu.Lock()
	if s.nics == nil {
		s.nics = map[string]bool{}
	}
	prev, known := s.nics[node]
	s.nics[node] = offload
	changed := prev != offload
	if changed && s.model != nil {
		// Push the model in force again, for the flow tables alone
		// (pushNICTLS), unless a newer one is waiting anyway.
		if s.pending == nil {
			s.pending, s.since = s.model, time.Now()
		}
		s.change.nics = true
	}
	onEvent := s.opts.OnEvent
	s.mu.Unlock()
	if onEvent != nil && (!known || changed || err != nil) {
		reason := "NIC does not offload kTLS: TLS 1.3 to and from this node"
		switch {
		case err != nil:
			reason = err.Error() + "; taken as no offload"
		case offload:
			reason = "NIC offloads kTLS: TLS 1.2 AES-128-GCM with peers whose NIC does too"
		}
		onEvent(Event{Node: node, Kind: "nic-tls", Reason: reason})
	}
	if changed {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// nicSnapshot is a copy of what every node reported of its NIC's kTLS
// offload.
func (s *Server) nicSnapshot() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.nics)
}

// pushNICTLS is push for a change of nodes' NIC reports alone: the last
// flow tables with their routes marked again; nothing else is
// translated, and no per-node table is hashed.
func (s *Server) pushNICTLS(m *model.Model, res PushResult, start time.Time) PushResult {
	tables := s.lastTables.WithNICTLS(s.nicSnapshot())
	if tables == s.lastTables {
		return s.recordPush(m, res, start)
	}
	s.lastTables = tables
	items, lazy := s.flowTables(tables, m.Version, func(string) bool { return false })
	n, err := s.shared[fds.TypeURL].apply(items, nil, lazy)
	res.Updated[ShortType(fds.TypeURL)] = n
	if err != nil {
		res.Err = err
		return res
	}
	return s.recordPush(m, res, start)
}
