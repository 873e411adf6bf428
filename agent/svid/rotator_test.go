package svid

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/model"
)

// waitSVID waits for the next update, failing the test after timeout.
func waitSVID(t *testing.T, r *Rotator, timeout time.Duration) *SVID {
	t.Helper()
	select {
	case s := <-r.Updates():
		return s
	case <-time.After(timeout):
		t.Fatalf("no SVID within %s (last error: %v)", timeout, r.Err())
		return nil
	}
}

func TestRotatorRenewsBeforeExpiry(t *testing.T) {
	ts := startServer(t)
	r, err := NewRotator(RotatorConfig{Client: ts.client, Token: StaticToken("tok-1"), Namespace: "production", Pod: "reviews-v1-x", TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetCertificate(nil); !errors.Is(err, ErrNoSVID) {
		t.Errorf("GetCertificate before the first SVID: %v, want ErrNoSVID", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v, want context.Canceled", err)
		}
	}()

	first := waitSVID(t, r, 10*time.Second)
	if got := first.NotAfter.Sub(first.IssuedAt); got > 2*time.Second {
		t.Errorf("lifetime %s, want at most the 2s asked for", got)
	}
	second := waitSVID(t, r, 10*time.Second)
	if !second.IssuedAt.Before(first.NotAfter) {
		t.Errorf("re-issued at %s, after the first SVID expired (%s)", second.IssuedAt, first.NotAfter)
	}
	if renewAt := first.IssuedAt.Add(first.NotAfter.Sub(first.IssuedAt) / 2); second.IssuedAt.Before(renewAt) {
		t.Errorf("re-issued at %s, before half the lifetime (%s)", second.IssuedAt, renewAt)
	}
	if second.Chain[0].SerialNumber.Cmp(first.Chain[0].SerialNumber) == 0 {
		t.Error("the same certificate twice")
	}
	if first.Certificate.PrivateKey == second.Certificate.PrivateKey {
		t.Error("re-issued with the same key, want a new key each time")
	}
	b := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("cluster.local"), second.Roots)
	if _, _, err := x509svid.Verify(second.Chain, b, x509svid.WithTime(second.IssuedAt)); err != nil {
		t.Error(err)
	}
	if cur, err := r.GetCertificate(nil); err != nil || cur.Leaf.NotAfter.Before(second.NotAfter) {
		t.Errorf("GetCertificate: %v, want the latest SVID", err)
	}
}

func TestRotatorRetries(t *testing.T) {
	// The pod is not in the model at first (it has just been created),
	// then appears.
	ts := startServer(t)
	ts.model.Store(&model.Model{})
	r, err := NewRotator(RotatorConfig{Client: ts.client, Token: StaticToken("tok-1"), Namespace: "production", Pod: "reviews-v1-x", MinBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(10 * time.Second)
	for ts.refused(ca.ReasonUnknownWorkload) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the rotator did not retry")
		}
		time.Sleep(5 * time.Millisecond) // polling a counter, not standing in for synchronisation
	}
	ts.model.Store(testModel)
	s := waitSVID(t, r, 10*time.Second)
	if s.ID.String() != "spiffe://cluster.local/ns/production/sa/reviews" {
		t.Errorf("SVID for %s", s.ID)
	}
	if r.Err() != nil {
		t.Errorf("Err after success: %v", r.Err())
	}
}

func TestNewRotatorChecks(t *testing.T) {
	ts := startServer(t)
	base := RotatorConfig{Client: ts.client, Token: StaticToken("t"), Namespace: "a", Pod: "b"}
	for _, tt := range []struct {
		name string
		edit func(*RotatorConfig)
	}{
		{"no client", func(c *RotatorConfig) { c.Client = nil }},
		{"no pod", func(c *RotatorConfig) { c.Pod = "" }},
		{"sub-second ttl", func(c *RotatorConfig) { c.TTL = time.Millisecond }},
		{"fraction 1", func(c *RotatorConfig) { c.RenewFraction = 1 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			if _, err := NewRotator(c); err == nil {
				t.Error("no error")
			}
		})
	}
}
