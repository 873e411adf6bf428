package svid

import (
	"context"
	"errors"
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

// ErrNoToken is wrapped by the credentials' error when the token source
// fails: no request was sent. (gRPC turns it into an Unauthenticated
// status holding its text, which is how the agent tells it from a token
// the controller refused.)
var ErrNoToken = errors.New("no node token to send")

type bearer struct{ token TokenSource }

func (b bearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	tok, err := b.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoToken, err)
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
