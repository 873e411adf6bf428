package ca

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
)

// Lookup finds the pod namespace/pod in the current model: the node it is
// scheduled on ("" when not yet scheduled) and its SPIFFE ID; ok is false
// for a pod the model does not know.
type Lookup func(namespace, pod string) (node, identity string, ok bool)

// Reasons a Server refuses a CSR: the values of the reason label of
// fibmesh_ca_csr_refused_total.
const (
	ReasonUnauthenticated = "unauthenticated"  // no token, or a token not accepted
	ReasonUnknownWorkload = "unknown_workload" // the pod is not in the model
	ReasonForeignWorkload = "foreign_workload" // the pod is on another node
	ReasonBadCSR          = "bad_csr"          // the CSR is malformed, weak, or asks for SANs
	ReasonBadRequest      = "bad_request"      // namespace or pod missing, negative ttl
	// ReasonInternal: the request could not be checked or signed (the
	// token file is malformed, the API server is unreachable, the root
	// has expired); should stay zero.
	ReasonInternal = "internal"
)

var reasons = []string{ReasonUnauthenticated, ReasonUnknownWorkload, ReasonForeignWorkload, ReasonBadCSR, ReasonBadRequest, ReasonInternal}

// Server is the CertificateService: it authenticates the calling node,
// checks that the pod asked for is scheduled on it, and signs the pod's
// CSR with the CA.
type Server struct {
	cav1.UnimplementedCertificateServiceServer

	ca     *CA
	auth   Authenticator
	lookup Lookup

	issued  prometheus.Counter
	refused *prometheus.CounterVec
}

// NewServer returns a Server signing with ca, authenticating nodes with
// auth and finding pods with lookup.
func NewServer(ca *CA, auth Authenticator, lookup Lookup) *Server {
	s := &Server{
		ca: ca, auth: auth, lookup: lookup,
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fibmesh_ca_csr_issued_total",
			Help: "SVIDs the CA issued to node agents.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fibmesh_ca_csr_refused_total",
			Help: "CSRs the CA refused, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range reasons {
		s.refused.WithLabelValues(r) // export zeros
	}
	return s
}

// Register registers s on r (the xDS server's grpc.Server).
func (s *Server) Register(r grpc.ServiceRegistrar) { cav1.RegisterCertificateServiceServer(r, s) }

// Collectors returns the Server's metrics, fibmesh_ca_csr_issued_total and
// fibmesh_ca_csr_refused_total{reason}, for the caller to register.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.issued, s.refused}
}

// CreateCertificate implements cav1.CertificateServiceServer.
func (s *Server) CreateCertificate(ctx context.Context, req *cav1.CertificateRequest) (*cav1.CertificateResponse, error) {
	resp, reason, err := s.create(ctx, req)
	if err != nil {
		s.refused.WithLabelValues(reason).Inc()
		return nil, err
	}
	s.issued.Inc()
	return resp, nil
}

func (s *Server) create(ctx context.Context, req *cav1.CertificateRequest) (*cav1.CertificateResponse, string, error) {
	node, err := AuthenticateNode(ctx, s.auth)
	if err != nil {
		reason := ReasonUnauthenticated
		if status.Code(err) != codes.Unauthenticated {
			reason = ReasonInternal
		}
		return nil, reason, err
	}

	if req.GetNamespace() == "" || req.GetPod() == "" {
		return nil, ReasonBadRequest, status.Error(codes.InvalidArgument, "namespace and pod are required")
	}
	if req.GetTtlSeconds() < 0 {
		return nil, ReasonBadRequest, status.Errorf(codes.InvalidArgument, "ttl_seconds %d is negative: use 0 for the default", req.GetTtlSeconds())
	}
	key := req.GetNamespace() + "/" + req.GetPod()
	podNode, identity, ok := s.lookup(req.GetNamespace(), req.GetPod())
	switch {
	case !ok:
		return nil, ReasonUnknownWorkload, status.Errorf(codes.PermissionDenied, "pod %s is not known to the controller (node %s asked)", key, node)
	case podNode == "":
		return nil, ReasonForeignWorkload, status.Errorf(codes.PermissionDenied, "pod %s is not scheduled on a node yet, not on node %s", key, node)
	case podNode != node:
		return nil, ReasonForeignWorkload, status.Errorf(codes.PermissionDenied, "pod %s is on node %s, not %s", key, podNode, node)
	case identity == "":
		return nil, ReasonUnknownWorkload, status.Errorf(codes.PermissionDenied, "pod %s has no identity in the model", key)
	}

	csr, err := CheckCSR(req.GetCsr())
	if err != nil {
		return nil, ReasonBadCSR, status.Errorf(codes.InvalidArgument, "pod %s: %v", key, err)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if req.GetTtlSeconds() > int64(DefaultRootLifetime/time.Second) {
		ttl = DefaultRootLifetime // avoid overflow; Issue caps it anyway
	}
	iss, err := s.ca.Issue(csr, identity, ttl)
	switch {
	case errors.Is(err, ErrBadCSR):
		return nil, ReasonBadCSR, status.Errorf(codes.InvalidArgument, "pod %s: %v", key, err)
	case err != nil:
		return nil, ReasonInternal, status.Errorf(codes.Internal, "pod %s: %v", key, err)
	}
	resp := &cav1.CertificateResponse{NotAfterUnix: iss.Chain[0].NotAfter.Unix()}
	for _, c := range iss.Chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	for _, r := range iss.Roots {
		resp.TrustBundle = append(resp.TrustBundle, r.Raw)
	}
	return resp, "", nil
}

// AuthenticateNode returns the node a gRPC call's bearer token
// ("authorization: Bearer <token>") was issued to. Its errors are gRPC
// statuses: Unauthenticated for a missing or refused token, Unavailable
// when the token could not be checked.
func AuthenticateNode(ctx context.Context, auth Authenticator) (string, error) {
	token, err := bearerToken(ctx)
	if err != nil {
		return "", status.Error(codes.Unauthenticated, err.Error())
	}
	node, err := auth.Authenticate(ctx, token)
	switch {
	case errors.Is(err, ErrInvalidToken):
		return "", status.Errorf(codes.Unauthenticated, "authenticate node: %v", err)
	case err != nil:
		return "", status.Errorf(codes.Unavailable, "authenticate node: %v", err)
	}
	return node, nil
}

// bearerToken returns the token of the "authorization: Bearer <token>"
// metadata.
func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) == 0 {
		return "", errors.New("missing authorization metadata: send \"authorization: Bearer <token>\"")
	}
	if len(v) > 1 {
		return "", errors.New("more than one authorization metadata value")
	}
	scheme, tok, ok := strings.Cut(v[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("authorization metadata is not \"Bearer <token>\"")
	}
	return strings.TrimSpace(tok), nil
}
