package xds

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
