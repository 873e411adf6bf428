// Package svid keeps the X.509 SVIDs of a node's workloads fresh: for
// each pod an ECDSA P-256 key generated on the node (it never leaves it),
// a CSR to the controller's CertificateService (fibmesh.ca.v1), and a
// re-issue with a new key after half of each SVID's lifetime, so the new
// certificate is in place long before the old one expires. The node
// authenticates with a bearer token, sent only over TLS (Credentials).
//
// It is the agent's half of the CA: the controller's half (signing,
// node authentication) is controller/ca, and the two share only
// api/ca/v1.
package svid

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/metadata"

	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
)

// TokenSource returns the bearer token to authenticate the node with; it
// is called before every request, so that a rotated token (a projected
// ServiceAccount token) is picked up.
type TokenSource func(ctx context.Context) (string, error)

// StaticToken returns a TokenSource that always returns token.
func StaticToken(token string) TokenSource {
	return func(context.Context) (string, error) { return token, nil }
}

// TokenFromFile returns a TokenSource reading the token from path on each
// call (a projected ServiceAccount token, which the kubelet rewrites).
func TokenFromFile(path string) TokenSource {
	return func(context.Context) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("read token: %s is empty", path)
		}
		return t, nil
	}
}

// SVID is an X.509 SVID held by a Rotator.
type SVID struct {
	// ID is the SPIFFE ID in the leaf's URI SAN.
	ID spiffeid.ID
	// Certificate is the chain with its private key, ready for tls.Config
	// (Leaf is set).
	Certificate *tls.Certificate
	// Chain is the SVID, leaf first; Roots the trust bundle it came with.
	Chain []*x509.Certificate
	Roots []*x509.Certificate
	// IssuedAt is when the Rotator received it; NotAfter the leaf's.
	IssuedAt, NotAfter time.Time
}

// Defaults of a Rotator.
const (
	DefaultRenewFraction = 0.5
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = 30 * time.Second
)

// RotatorConfig configures a Rotator.
type RotatorConfig struct {
	// Client is the controller's CertificateService.
	Client cav1.CertificateServiceClient
	// Token authenticates the node: each request carries it as
	// "authorization: Bearer" metadata. Nil when the connection already
	// sends it (Credentials as grpc.WithPerRPCCredentials, which the agent
	// uses): sending it twice is refused by the CA. The connection must
	// use TLS: the token is a bearer credential.
	Token TokenSource
	// Namespace and Pod name the workload.
	Namespace, Pod string
	// TTL is the lifetime to ask for, rounded down to seconds; 0 asks for
	// the CA's default.
	TTL time.Duration
	// RenewFraction is the part of an SVID's lifetime (from receipt to
	// NotAfter) after which it is re-issued; 0 means
	// DefaultRenewFraction.
	RenewFraction float64
	// MinBackoff and MaxBackoff bound the wait between failed attempts,
	// which doubles from MinBackoff; 0 means the defaults.
	MinBackoff, MaxBackoff time.Duration
}

// Rotator keeps a workload's SVID fresh: it generates an ECDSA P-256 key
// locally (the key never leaves the node), sends a CSR to the CA, and
// re-issues, with a new key, after RenewFraction of each SVID's lifetime,
// retrying with backoff on failure. It is safe for concurrent use.
type Rotator struct {
	cfg     RotatorConfig
	updates chan *SVID

	mu      sync.Mutex
	current *SVID
	lastErr error
}

// NewRotator checks cfg and returns a Rotator; Run starts it.
func NewRotator(cfg RotatorConfig) (*Rotator, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("rotator: Client is required")
	case cfg.Namespace == "" || cfg.Pod == "":
		return nil, errors.New("rotator: Namespace and Pod are required")
	case cfg.TTL < 0 || (cfg.TTL > 0 && cfg.TTL < time.Second):
		return nil, fmt.Errorf("rotator: TTL %s: use 0 (the CA's default) or at least 1s", cfg.TTL)
	case cfg.RenewFraction < 0 || cfg.RenewFraction >= 1:
		return nil, fmt.Errorf("rotator: RenewFraction %v: want 0 < f < 1 (0 for the default)", cfg.RenewFraction)
	}
	if cfg.RenewFraction == 0 {
		cfg.RenewFraction = DefaultRenewFraction
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	return &Rotator{cfg: cfg, updates: make(chan *SVID, 1)}, nil
}

// Run obtains an SVID and keeps re-issuing it until ctx is done, when it
// returns ctx's error. The last SVID stays available after Run returns.
func (r *Rotator) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	for {
		var wait time.Duration
		svid, err := r.Fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.mu.Lock()
			r.lastErr = err
			r.mu.Unlock()
			wait, backoff = backoff, min(2*backoff, r.cfg.MaxBackoff)
		} else {
			r.publish(svid)
			backoff = r.cfg.MinBackoff
			life := svid.NotAfter.Sub(svid.IssuedAt)
			wait = time.Until(svid.IssuedAt.Add(time.Duration(float64(life) * r.cfg.RenewFraction)))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (r *Rotator) publish(svid *SVID) {
	r.mu.Lock()
	r.current, r.lastErr = svid, nil
	r.mu.Unlock()
	// Latest wins: replace an update the reader has not taken yet.
	for {
		select {
		case r.updates <- svid:
			return
		default:
		}
		select {
		case <-r.updates:
		default:
		}
	}
}

// Fetch obtains one SVID with a new key, without changing the Rotator's
// current one: Run calls it. The response is checked: the leaf holds the
// new key and verifies against the bundle that came with it.
func (r *Rotator) Fetch(ctx context.Context) (*SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("rotator: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("rotator: create CSR: %w", err)
	}
	if r.cfg.Token != nil {
		tok, err := r.cfg.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("rotator: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	resp, err := r.cfg.Client.CreateCertificate(ctx, &cav1.CertificateRequest{
		Namespace:  r.cfg.Namespace,
		Pod:        r.cfg.Pod,
		Csr:        csr,
		TtlSeconds: int64(r.cfg.TTL / time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("rotator: SVID for %s/%s: %w", r.cfg.Namespace, r.cfg.Pod, err)
	}
	received := time.Now()
	svid, err := ParseResponse(resp, key, received)
	if err != nil {
		return nil, fmt.Errorf("rotator: SVID for %s/%s: %w", r.cfg.Namespace, r.cfg.Pod, err)
	}
	return svid, nil
}

// ParseResponse checks a CA's answer to a CSR made with key: the leaf
// holds key's public half, carries a SPIFFE ID, and verifies against the
// trust bundle that came with it at received. It returns the SVID.
func ParseResponse(resp *cav1.CertificateResponse, key *ecdsa.PrivateKey, received time.Time) (*SVID, error) {
	parse := func(what string, ders [][]byte) ([]*x509.Certificate, error) {
		if len(ders) == 0 {
			return nil, fmt.Errorf("response has no %s", what)
		}
		var cs []*x509.Certificate
		for i, d := range ders {
			c, err := x509.ParseCertificate(d)
			if err != nil {
				return nil, fmt.Errorf("response %s[%d]: %w", what, i, err)
			}
			cs = append(cs, c)
		}
		return cs, nil
	}
	chain, err := parse("cert_chain", resp.GetCertChain())
	if err != nil {
		return nil, err
	}
	roots, err := parse("trust_bundle", resp.GetTrustBundle())
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("the issued certificate is not for the key sent")
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	bundle := x509bundle.FromX509Authorities(id.TrustDomain(), roots)
	if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(received)); err != nil {
		return nil, fmt.Errorf("issued certificate does not verify against its bundle: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &SVID{ID: id, Certificate: cert, Chain: chain, Roots: roots, IssuedAt: received, NotAfter: leaf.NotAfter}, nil
}

// ErrNoSVID is returned by the Rotator's accessors before its first SVID.
var ErrNoSVID = errors.New("no SVID yet")

// Current returns the current SVID, nil before the first. It must not be
// modified.
func (r *Rotator) Current() *SVID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// Err returns the error of the last attempt, nil after a success.
func (r *Rotator) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Updates returns a channel that receives each new SVID. It holds only
// the latest: a slow reader skips to it. One reader only; others use
// Current.
func (r *Rotator) Updates() <-chan *SVID { return r.updates }

// GetCertificate returns the current SVID's certificate, for
// tls.Config.GetCertificate.
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.cert() }

// GetClientCertificate returns the current SVID's certificate, for
// tls.Config.GetClientCertificate.
func (r *Rotator) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cert()
}

func (r *Rotator) cert() (*tls.Certificate, error) {
	s := r.Current()
	if s == nil {
		return nil, fmt.Errorf("rotator %s/%s: %w", r.cfg.Namespace, r.cfg.Pod, ErrNoSVID)
	}
	return s.Certificate, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
