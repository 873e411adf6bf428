package svid

import (
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/model"
)

// The tests run the controller's real CA server (a test may import the
// controller; the agent's code may not).

var testModel = &model.Model{TrustDomain: "cluster.local", Workloads: []*model.Workload{
	{Namespace: "production", Name: "ratings-v1-y", Node: "node2", ServiceAccount: "ratings", Identity: "spiffe://cluster.local/ns/production/sa/ratings"},
	{Namespace: "production", Name: "reviews-v1-x", Node: "node1", ServiceAccount: "reviews", Identity: "spiffe://cluster.local/ns/production/sa/reviews"},
}}

type testServer struct {
	ca     *ca.CA
	srv    *ca.Server
	client cav1.CertificateServiceClient
	model  atomic.Pointer[model.Model]
}

// refused returns how many CSRs the CA refused with reason.
func (ts *testServer) refused(reason string) float64 {
	for _, c := range ts.srv.Collectors() {
		if v, ok := c.(*prometheus.CounterVec); ok {
			return testutil.ToFloat64(v.WithLabelValues(reason))
		}
	}
	return -1
}

// startServer serves the CA (tokens: node1 tok-1, node2 tok-2) on
// 127.0.0.1:0 over plaintext gRPC and checks for leaked goroutines.
func startServer(t *testing.T) *testServer {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	c, err := ca.New("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("node1 tok-1\nnode2 tok-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := ca.TokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{ca: c}
	ts.model.Store(testModel)
	ts.srv = ca.NewServer(c, auth, ca.ModelLookup(ts.model.Load))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	ts.srv.Register(g)
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
	ts.client = cav1.NewCertificateServiceClient(conn)
	return ts
}
