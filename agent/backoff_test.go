package agent

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBackoffFullJitter(t *testing.T) {
	base, cap := 100*time.Millisecond, 30*time.Second
	for _, tt := range []struct {
		n     int
		bound time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {5, 3200 * time.Millisecond}, {9, cap}, {80, cap}} {
		seen := map[time.Duration]bool{}
		var maxSeen time.Duration
		for range 1000 {
			d := Backoff(base, cap, tt.n)
			if d < 0 || d >= tt.bound {
				t.Fatalf("attempt %d: %s outside [0, %s)", tt.n, d, tt.bound)
			}
			seen[d] = true
			maxSeen = max(maxSeen, d)
		}
		// Full jitter: spread over the whole range, not bunched at the
		// bound (1000 agents must not reconnect in step).
		if len(seen) < 900 || maxSeen < tt.bound*9/10 {
			t.Errorf("attempt %d: %d distinct waits, largest %s of %s", tt.n, len(seen), maxSeen, tt.bound)
		}
	}
}

func TestFailureClass(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{statusErr(16, "invalid token"), "refused"},
		{statusErr(16, "transport: per-RPC creds failed due to error: no node token to send: read token file: open /x: no such file or directory"), "token-file"},
		{statusErr(14, "connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\""), "tls"},
		{statusErr(14, "connection error: desc = \"transport: Error while dialing: dial tcp 10.100.0.254:15012: connect: connection refused\""), "unreachable"},
	} {
		if got, _ := failureClass(tt.err); got != tt.want {
			t.Errorf("failureClass(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func statusErr(code uint32, msg string) error {
	return fmt.Errorf("xds delta stream: %w", status.Error(codes.Code(code), msg))
}
