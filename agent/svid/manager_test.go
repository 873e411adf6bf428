package svid

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestManager(t *testing.T) {
	ts := startServer(t)
	var changes atomic.Int32
	m, err := NewManager(ManagerConfig{Client: ts.client, Token: StaticToken("tok-1"), TTL: 2 * time.Second,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnChange: func(ns, pod string, s *SVID) { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Own pod: issued.
	if err := m.Ensure("production", "reviews-v1-x"); err != nil {
		t.Fatal(err)
	}
	s, err := m.Wait(ctx, "production", "reviews-v1-x")
	if err != nil || s.ID.String() != "spiffe://cluster.local/ns/production/sa/reviews" {
		t.Fatalf("Wait: %v, %v", s, err)
	}
	// Another node's pod: refused, and Wait says why.
	if err := m.Ensure("production", "ratings-v1-y"); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if _, err := m.Wait(short, "production", "ratings-v1-y"); err == nil || !strings.Contains(err.Error(), "is on node node2, not node1") {
		t.Errorf("Wait for a foreign pod: %v", err)
	}
	if got := m.List(); len(got) != 2 || got[0].Pod != "ratings-v1-y" || got[0].Current != nil || got[1].Current == nil {
		t.Errorf("List: %+v", got)
	}
	m.Retain(func(ns, pod string) bool { return pod == "reviews-v1-x" })
	if m.Get("production", "ratings-v1-y") != nil {
		t.Error("Retain kept the foreign pod")
	}
	// Rotation: a second SVID before the first expires.
	deadline := time.Now().Add(5 * time.Second)
	for changes.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("not re-issued")
		}
		time.Sleep(10 * time.Millisecond) // polling a counter
	}
	if cur := m.Get("production", "reviews-v1-x").Current(); !cur.IssuedAt.Before(s.NotAfter) || cur.Chain[0].SerialNumber.Cmp(s.Chain[0].SerialNumber) == 0 {
		t.Errorf("second SVID issued at %s, first expires %s", cur.IssuedAt, s.NotAfter)
	}
	m.Remove("production", "reviews-v1-x")
	if len(m.List()) != 0 {
		t.Error("Remove left the pod")
	}
}

func TestCredentialsNeedTLS(t *testing.T) {
	// A plaintext connection with the token credentials cannot be made
	// (grpc checks RequireTransportSecurity when dialing).
	_, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(Credentials(StaticToken("tok-1"))))
	if err == nil {
		t.Fatal("a plaintext connection accepted the bearer token credentials")
	}
	md, err := Credentials(StaticToken("tok-1")).GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer tok-1" {
		t.Errorf("metadata %v, %v", md, err)
	}
}
