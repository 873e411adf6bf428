package xds

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/xds/fds"
)

// authNodeKey carries the node a stream authenticated as.
type authNodeKey struct{}

// RequireNode returns a gRPC stream interceptor that authenticates every
// stream with authenticate (which returns the caller's node name or a
// gRPC status error) before the handler runs. The xDS server then holds
// the stream to that node: a request whose node.id names another node is
// refused with PermissionDenied, so an agent can read only its own
// listeners and flow table. Unary calls (the CA) authenticate on their own.
func RequireNode(authenticate func(ctx context.Context) (string, error)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		node, err := authenticate(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, authStream{ss, context.WithValue(ss.Context(), authNodeKey{}, node)})
	}
}

type authStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s authStream) Context() context.Context { return s.ctx }

// authenticatedNode is the node a stream's context was authenticated as
// ("" for a stream from a listener without RequireNode).
func authenticatedNode(ctx context.Context) string {
	n, _ := ctx.Value(authNodeKey{}).(string)
	return n
}

// checkNode refuses a request naming a node other than the stream's
// authenticated one. Requests may omit the node after the first.
func (c callbacks) checkNode(id int64, node string) error {
	v, ok := c.auth.Load(id)
	if !ok || node == "" || v.(string) == node {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "this stream authenticated as node %q asks for node %q's config: an agent gets only its own node's", v, node)
}

// checkFlowTables refuses an authenticated stream's FDS subscription to
// any flow table but the shared one (or its shards) and its own node's: a wildcard (no
// names, or "*") or another node's name. The flow tables live in one
// shared cache, so the node check alone would not keep them apart.
func (c callbacks) checkFlowTables(id int64, typeURL string, names []string, wildcard bool) error {
	v, ok := c.auth.Load(id)
	if !ok || typeURL != fds.TypeURL {
		return nil
	}
	node := v.(string)
	if wildcard {
		return status.Errorf(codes.PermissionDenied, "node %q subscribes to every flow table: subscribe by name to %q (or its shards %q...) and %q", node, fds.MeshName, xdsapi.MeshShard(0), node)
	}
	for _, n := range names {
		if !xdsapi.IsMeshTable(n) && n != node {
			return status.Errorf(codes.PermissionDenied, "node %q asks for flow table %q: an agent gets only %q, its shards and its own node's", node, n, fds.MeshName)
		}
	}
	return nil
}

// firstFlowTableRequest reports whether this is an authenticated delta
// stream's first FDS request (a first request without names is a
// wildcard subscription; later ones without names are ACKs).
func (c callbacks) firstFlowTableRequest(id int64, typeURL string) bool {
	if typeURL != fds.TypeURL {
		return false
	}
	if _, ok := c.auth.Load(id); !ok {
		return false
	}
	_, seen := c.seen.LoadOrStore(id, true)
	return !seen
}
