package ca

import (
	"context"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fibmesh/fibmesh/agent/svid"
	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// testModel has workloads on node1 and node2 and one not yet scheduled;
// Workloads sorted by namespace/name, as Build sorts them.
var testModel = &model.Model{TrustDomain: td, Workloads: []*model.Workload{
	{Namespace: "production", Name: "pending", ServiceAccount: "pending", Identity: "spiffe://cluster.local/ns/production/sa/pending"},
	{Namespace: "production", Name: "ratings-v1-y", Node: "node2", ServiceAccount: "ratings", Identity: "spiffe://cluster.local/ns/production/sa/ratings"},
	{Namespace: "production", Name: "reviews-v1-x", Node: "node1", ServiceAccount: "reviews", Identity: "spiffe://cluster.local/ns/production/sa/reviews"},
}}

type testServer struct {
	ca     *CA
	srv    *Server
	client cav1.CertificateServiceClient
}

// startServer serves a Server with lookup (nil: testModel's) on
// 127.0.0.1:0 with the tokens node1 tok-1 and node2 tok-2, and checks for
// leaked goroutines once the test and its cleanups are done.
func startServer(t *testing.T, lookup Lookup) *testServer {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) }) // registered first: runs last
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, "node1 tok-1\nnode2 tok-2\n")
	auth, err := TokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lookup == nil {
		lookup = ModelLookup(func() *model.Model { return testModel })
	}
	srv := NewServer(c, auth, lookup)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{ca: c, srv: srv, client: cav1.NewCertificateServiceClient(conn)}
}

// counts reads the server's counters: "issued" and each refusal reason.
func (ts *testServer) counts() map[string]float64 {
	m := map[string]float64{"issued": testutil.ToFloat64(ts.srv.issued)}
	for _, r := range reasons {
		m[r] = testutil.ToFloat64(ts.srv.refused.WithLabelValues(r))
	}
	return m
}

func delta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

func TestServer(t *testing.T) {
	ts := startServer(t, nil)
	key := newKey(t)
	good := csrDER(t, &x509.CertificateRequest{}, key)
	withSAN := csrDER(t, &x509.CertificateRequest{DNSNames: []string{"reviews.production.svc"}}, key)
	tests := []struct {
		name       string
		auth       string // authorization metadata; "" for none
		ns, pod    string
		csr        []byte
		ttl        int64
		wantCode   codes.Code
		wantReason string // counter that moves: "issued" or a reason
		wantMsg    string
	}{
		{"issued", "Bearer tok-1", "production", "reviews-v1-x", good, 0, codes.OK, "issued", ""},
		{"scheme is case-insensitive", "bearer tok-2", "production", "ratings-v1-y", good, 3600, codes.OK, "issued", ""},
		{"no token", "", "production", "reviews-v1-x", good, 0, codes.Unauthenticated, ReasonUnauthenticated, "missing authorization metadata"},
		{"wrong token", "Bearer tok-7", "production", "reviews-v1-x", good, 0, codes.Unauthenticated, ReasonUnauthenticated, "invalid token"},
		{"not a bearer token", "Basic dG9rLTE=", "production", "reviews-v1-x", good, 0, codes.Unauthenticated, ReasonUnauthenticated, "Bearer <token>"},
		{"foreign workload", "Bearer tok-1", "production", "ratings-v1-y", good, 0, codes.PermissionDenied, ReasonForeignWorkload, "pod production/ratings-v1-y is on node node2, not node1"},
		{"unscheduled workload", "Bearer tok-1", "production", "pending", good, 0, codes.PermissionDenied, ReasonForeignWorkload, "pod production/pending is not scheduled on a node yet"},
		{"unknown workload", "Bearer tok-1", "production", "ghost", good, 0, codes.PermissionDenied, ReasonUnknownWorkload, "pod production/ghost is not known"},
		{"bad CSR", "Bearer tok-1", "production", "reviews-v1-x", []byte("not a csr"), 0, codes.InvalidArgument, ReasonBadCSR, "bad certificate request"},
		{"CSR with SANs", "Bearer tok-1", "production", "reviews-v1-x", withSAN, 0, codes.InvalidArgument, ReasonBadCSR, "DNS:reviews.production.svc"},
		{"no pod", "Bearer tok-1", "production", "", good, 0, codes.InvalidArgument, ReasonBadRequest, "namespace and pod are required"},
		{"negative ttl", "Bearer tok-1", "production", "reviews-v1-x", good, -1, codes.InvalidArgument, ReasonBadRequest, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.auth != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.auth)
			}
			before := ts.counts()
			resp, err := ts.client.CreateCertificate(ctx, &cav1.CertificateRequest{Namespace: tt.ns, Pod: tt.pod, Csr: tt.csr, TtlSeconds: tt.ttl})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code %v (%v), want %v", got, err, tt.wantCode)
			}
			if err != nil && !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Errorf("message %q does not say %q", status.Convert(err).Message(), tt.wantMsg)
			}
			if d := cmp.Diff(map[string]float64{tt.wantReason: 1}, delta(before, ts.counts())); d != "" {
				t.Errorf("counter deltas (-want +got):\n%s", d)
			}
			if err != nil {
				return
			}
			got, err := svid.ParseResponse(resp, key, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, identity, _ := ModelLookup(func() *model.Model { return testModel })(tt.ns, tt.pod)
			if got.ID.String() != identity {
				t.Errorf("SVID for %s, want %s", got.ID, identity)
			}
			if want := got.Chain[0].NotAfter.Unix(); resp.NotAfterUnix != want {
				t.Errorf("not_after_unix %d, want %d", resp.NotAfterUnix, want)
			}
		})
	}
}

// The agent's client (agent/svid Rotator.Fetch) against the real server.
func TestServerWithRotatorClient(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tt := range []struct {
		name, token, pod string
		wantCode         codes.Code
		wantReason       string
	}{
		{"own workload", "tok-1", "reviews-v1-x", codes.OK, "issued"},
		{"foreign workload", "tok-1", "ratings-v1-y", codes.PermissionDenied, ReasonForeignWorkload},
		{"wrong token", "nope", "reviews-v1-x", codes.Unauthenticated, ReasonUnauthenticated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := svid.NewRotator(svid.RotatorConfig{Client: ts.client, Token: svid.StaticToken(tt.token), Namespace: "production", Pod: tt.pod})
			if err != nil {
				t.Fatal(err)
			}
			before := ts.counts()
			got, err := r.Fetch(ctx)
			if got := status.Code(unwrapStatus(err)); got != tt.wantCode {
				t.Fatalf("Fetch: %v, want code %v", err, tt.wantCode)
			}
			if d := cmp.Diff(map[string]float64{tt.wantReason: 1}, delta(before, ts.counts())); d != "" {
				t.Errorf("counter deltas (-want +got):\n%s", d)
			}
			if err != nil {
				return
			}
			id, err := verify(got.Chain, ts.ca.Bundle(), time.Now())
			if err != nil || id.String() != "spiffe://cluster.local/ns/production/sa/reviews" {
				t.Errorf("x509svid.Verify: %s, %v; want spiffe://cluster.local/ns/production/sa/reviews", id, err)
			}
		})
	}
}

// unwrapStatus finds the gRPC status error in err's chain.
func unwrapStatus(err error) error {
	for e := err; e != nil; {
		if _, ok := status.FromError(e); ok {
			return e
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err
}

func TestCollectorsRegister(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(c, nil, nil)
	reg := prometheus.NewPedanticRegistry()
	for _, col := range s.Collectors() {
		if err := reg.Register(col); err != nil {
			t.Fatal(err)
		}
	}
	n, err := testutil.GatherAndCount(reg, "fibmesh_ca_csr_issued_total", "fibmesh_ca_csr_refused_total")
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + len(reasons); n != want {
		t.Errorf("%d series, want %d (issued and every reason, zero)", n, want)
	}
}
