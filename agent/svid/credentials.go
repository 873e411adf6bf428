package svid

import (
	"context"
	"fmt"

	"google.golang.org/grpc/credentials"
)

// Credentials returns gRPC per-RPC credentials that send token as
// "authorization: Bearer <token>" on every call of a connection (the xDS
// stream and the CSRs alike). They refuse to be sent without transport
// security: a bearer token never crosses the network in clear.
func Credentials(token TokenSource) credentials.PerRPCCredentials {
	return bearer{token}
}

type bearer struct{ token TokenSource }

func (b bearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	tok, err := b.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("node token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
