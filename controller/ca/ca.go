package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults of a CA; see the With* options.
const (
	// DefaultRootLifetime is the lifetime of a root the CA generates.
	DefaultRootLifetime = 10 * 365 * 24 * time.Hour
	// DefaultTTL is the lifetime of an SVID when the caller asks for none.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest lifetime a caller may ask for.
	DefaultMaxTTL = 7 * 24 * time.Hour
	// ClockSkew is how far before the time of issue an SVID's NotBefore
	// lies, so that peers whose clocks run a little behind accept it.
	ClockSkew = time.Minute
)

// Errors the CA returns, wrapped with details; test with errors.Is.
var (
	// ErrBadCSR: the CSR does not parse, its signature does not verify,
	// its key is too weak, or it asks for SANs (the CA sets the only SAN).
	ErrBadCSR = errors.New("bad certificate request")
	// ErrBadIdentity: the SPIFFE ID to issue for is malformed or outside
	// the CA's trust domain.
	ErrBadIdentity = errors.New("bad SPIFFE ID")
	// ErrRootExpired: the signing root is no longer valid; rotate it.
	ErrRootExpired = errors.New("signing root has expired")
	// ErrReadOnly: the CA's roots come from a Kubernetes Secret, which is
	// the source of truth; change the Secret and call Reload instead.
	ErrReadOnly = errors.New("CA is loaded from a Secret")
	// ErrNotInBundle: Retire was given a root the bundle does not hold.
	ErrNotInBundle = errors.New("root is not in the trust bundle")
	// ErrSigningRoot: Retire was given the root that signs new SVIDs.
	ErrSigningRoot = errors.New("root is the current signing root")
)

// Option tunes a CA.
type Option func(*config)

type config struct {
	rootLifetime time.Duration
	defaultTTL   time.Duration
	maxTTL       time.Duration
	now          func() time.Time
}

func newConfig(opts []Option) config {
	c := config{rootLifetime: DefaultRootLifetime, defaultTTL: DefaultTTL, maxTTL: DefaultMaxTTL, now: time.Now}
	for _, o := range opts {
		o(&c)
	}
	// A default above the cap raises the cap: the operator asked for it.
	c.maxTTL = max(c.maxTTL, c.defaultTTL)
	return c
}

// WithClock makes the CA read the time from now instead of time.Now (for
// tests).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithRootLifetime sets the lifetime of roots the CA generates (default
// DefaultRootLifetime).
func WithRootLifetime(d time.Duration) Option { return func(c *config) { c.rootLifetime = d } }

// WithDefaultTTL sets the lifetime of SVIDs issued with ttl 0 (default
// DefaultTTL).
func WithDefaultTTL(d time.Duration) Option { return func(c *config) { c.defaultTTL = d } }

// WithMaxTTL caps the lifetime a caller may ask for (default
// DefaultMaxTTL, and never below the default TTL).
func WithMaxTTL(d time.Duration) Option { return func(c *config) { c.maxTTL = d } }

// persister saves a CA's state after each rotation and retirement.
type persister interface {
	save(signer *x509.Certificate, key crypto.Signer, roots []*x509.Certificate) error
}

// CA signs workload SVIDs with its current root and keeps the trust bundle:
// the current root and the previous ones not yet retired. A CA is safe for
// concurrent use.
type CA struct {
	cfg   config
	td    spiffeid.TrustDomain
	store persister // nil: in memory only
	// secret is set for a CA from FromSecret (read-only, see Reload).
	secret *secretSource

	mu     sync.Mutex
	signer *x509.Certificate
	key    crypto.Signer
	roots  []*x509.Certificate // trust bundle, newest first

	notifyMu sync.Mutex // orders notifications; taken before mu
	subs     map[int]func([]*x509.Certificate)
	nextSub  int
}

// New returns a CA for trustDomain (e.g. "cluster.local") with a freshly
// generated root, held in memory only: its root is lost when the process
// ends. Use LoadOrCreate or FromSecret in a controller.
func New(trustDomain string, opts ...Option) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", trustDomain, err)
	}
	c := &CA{cfg: newConfig(opts), td: td}
	cert, key, err := NewRoot(trustDomain, c.cfg.rootLifetime, c.cfg.now())
	if err != nil {
		return nil, err
	}
	c.set(&material{cert: cert, key: key, roots: []*x509.Certificate{cert}})
	return c, nil
}

// Load returns a CA, held in memory only, from PEM: certPEM is the signing
// CA certificate (a self-signed root, or an intermediate), keyPEM its
// private key (PKCS#8, SEC 1 or PKCS#1), rootsPEM the trust bundle (may be
// nil when certPEM is a self-signed root). Rotations are not persisted.
func Load(trustDomain string, certPEM, keyPEM, rootsPEM []byte, opts ...Option) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", trustDomain, err)
	}
	c := &CA{cfg: newConfig(opts), td: td}
	m, err := parseMaterial(td, c.cfg.now(), pemInput{certPEM, "CA certificate"}, pemInput{keyPEM, "CA key"}, pemInput{rootsPEM, "trust bundle"}, false)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	c.set(m)
	return c, nil
}

// NewRoot generates a self-signed root for trustDomain: ECDSA P-256,
// CA:true, subject O=fibmesh, URI SAN spiffe://<trustDomain>, valid from a
// minute before now for lifetime.
func NewRoot(trustDomain string, lifetime time.Duration, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"fibmesh"},
			// The time in the name tells rotated roots apart in tools
			// that show only the subject.
			CommonName: "fibmesh root " + now.UTC().Format("2006-01-02T15:04:05Z"),
		},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: parse root certificate: %w", err)
	}
	return cert, key, nil
}

// randomSerial returns a random, non-zero 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("ca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// TrustDomain returns the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Root returns the certificate that signs new SVIDs.
func (c *CA) Root() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signer
}

// Bundle returns the trust bundle, newest root first: the roots that
// signed SVIDs still in use, without expired ones. The slice is the
// caller's; the certificates must not be modified.
func (c *CA) Bundle() []*x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bundleLocked()
}

func (c *CA) bundleLocked() []*x509.Certificate {
	now := c.cfg.now()
	var b []*x509.Certificate
	for _, r := range c.roots {
		if now.Before(r.NotAfter) {
			b = append(b, r)
		}
	}
	return b
}

// OnBundleChange calls f with the new bundle after every change to it
// (Rotate, RotateRoot, Retire, Reload), in order, from the goroutine that
// made the change. f must not block and must not call Rotate, RotateRoot,
// Retire or Reload (hand the bundle to a goroutine or channel instead).
// A root that expires drops out of Bundle at once, without a call; it
// trusts nothing still valid, since SVIDs never outlive their root. The
// returned cancel stops the calls.
func (c *CA) OnBundleChange(f func([]*x509.Certificate)) (cancel func()) {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	if c.subs == nil {
		c.subs = map[int]func([]*x509.Certificate){}
	}
	id := c.nextSub
	c.nextSub++
	c.subs[id] = f
	return func() {
		c.notifyMu.Lock()
		defer c.notifyMu.Unlock()
		delete(c.subs, id)
	}
}

func (c *CA) notify() {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	b := c.Bundle()
	ids := make([]int, 0, len(c.subs))
	for id := range c.subs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c.subs[id](slices.Clone(b))
	}
}

// set installs m; callers persist before and notify after.
func (c *CA) set(m *material) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.signer, c.key, c.roots = m.cert, m.key, m.roots
}

// RotateRoot generates a new root (as NewRoot, with the CA's root
// lifetime), makes it the signing root and adds it to the bundle, where
// the previous roots stay until retired. It persists the new state (for a
// CA from LoadOrCreate) before using it, and returns the new root.
func (c *CA) RotateRoot() (*x509.Certificate, error) {
	if c.secret != nil {
		return nil, fmt.Errorf("ca: rotate root: %w %s: put the new root in the Secret and call Reload (see docs/ca.md)", ErrReadOnly, c.secret)
	}
	cert, key, err := NewRoot(c.td.Name(), c.cfg.rootLifetime, c.cfg.now())
	if err != nil {
		return nil, err
	}
	if err := c.Rotate(cert, key); err != nil {
		return nil, err
	}
	return cert, nil
}

// Rotate makes cert, with its private key, the signing root: new SVIDs
// are signed by it, and the bundle holds it and the previous roots until
// they are retired (Retire) or expire. cert must be a CA certificate
// valid now; if it is not self-signed, its issuer must already be in the
// bundle. The new state is persisted (for a CA from LoadOrCreate) before
// it is used.
func (c *CA) Rotate(cert *x509.Certificate, key crypto.Signer) error {
	if c.secret != nil {
		return fmt.Errorf("ca: rotate: %w %s: put the new root in the Secret and call Reload (see docs/ca.md)", ErrReadOnly, c.secret)
	}
	now := c.cfg.now()
	if err := checkSigner(c.td, cert, key, now, "new root"); err != nil {
		return fmt.Errorf("ca: rotate: %w", err)
	}
	c.mu.Lock()
	roots := slices.DeleteFunc(slices.Clone(c.roots), func(r *x509.Certificate) bool { return r.Equal(cert) || !now.Before(r.NotAfter) })
	if selfSigned(cert) {
		roots = append([]*x509.Certificate{cert}, roots...)
	} else if issuerIn(cert, roots) == nil {
		c.mu.Unlock()
		return fmt.Errorf("ca: rotate: new CA certificate %q is not self-signed and its issuer %q is not in the trust bundle", cert.Subject, cert.Issuer)
	}
	if c.store != nil {
		if err := c.store.save(cert, key, roots); err != nil {
			c.mu.Unlock()
			return fmt.Errorf("ca: rotate: %w", err)
		}
	}
	c.signer, c.key, c.roots = cert, key, roots
	c.mu.Unlock()
	c.notify()
	return nil
}

// Retire removes root from the trust bundle: SVIDs it signed stop
// verifying. Retire it once every SVID has been re-issued by the new root
// (after the longest SVID lifetime since the rotation). The signing root
// cannot be retired (ErrSigningRoot), nor a root not in the bundle
// (ErrNotInBundle). The new state is persisted (for a CA from
// LoadOrCreate).
func (c *CA) Retire(root *x509.Certificate) error {
	if c.secret != nil {
		return fmt.Errorf("ca: retire: %w %s: remove the root from root-cert.pem in the Secret and call Reload (see docs/ca.md)", ErrReadOnly, c.secret)
	}
	c.mu.Lock()
	if root.Equal(c.signer) || (!selfSigned(c.signer) && issuerIn(c.signer, []*x509.Certificate{root}) != nil) {
		c.mu.Unlock()
		return fmt.Errorf("ca: retire %q: %w: rotate first", root.Subject, ErrSigningRoot)
	}
	i := slices.IndexFunc(c.roots, root.Equal)
	if i < 0 {
		c.mu.Unlock()
		return fmt.Errorf("ca: retire %q: %w", root.Subject, ErrNotInBundle)
	}
	roots := slices.Delete(slices.Clone(c.roots), i, i+1)
	if c.store != nil {
		if err := c.store.save(c.signer, c.key, roots); err != nil {
			c.mu.Unlock()
			return fmt.Errorf("ca: retire: %w", err)
		}
	}
	c.roots = roots
	c.mu.Unlock()
	c.notify()
	return nil
}

// Issued is an SVID the CA signed.
type Issued struct {
	// Chain is the SVID, leaf first, followed by the signing CA when it
	// is an intermediate.
	Chain []*x509.Certificate
	// Roots is the trust bundle at the time of issue.
	Roots []*x509.Certificate
}

// CheckCSR parses a DER PKCS#10 request and checks it: its signature, its
// key (ECDSA P-256 or P-384, RSA of 2048 bits or more, Ed25519), and that
// it asks for no SANs. Errors wrap ErrBadCSR.
func CheckCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: parse DER PKCS#10: %w", ErrBadCSR, err)
	}
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

func checkCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return fmt.Errorf("%w: no CSR", ErrBadCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s: use P-256 or P-384", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA key of %d bits: use 2048 or more", ErrBadCSR, k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, k)
	}
	if n := len(csr.DNSNames) + len(csr.EmailAddresses) + len(csr.IPAddresses) + len(csr.URIs); n > 0 {
		return fmt.Errorf("%w: it asks for %d SANs (%s): send a CSR without SANs, the CA sets the SPIFFE ID", ErrBadCSR, n, sanList(csr))
	}
	return nil
}

func sanList(csr *x509.CertificateRequest) string {
	var s []string
	for _, d := range csr.DNSNames {
		s = append(s, "DNS:"+d)
	}
	for _, e := range csr.EmailAddresses {
		s = append(s, "email:"+e)
	}
	for _, ip := range csr.IPAddresses {
		s = append(s, "IP:"+ip.String())
	}
	for _, u := range csr.URIs {
		s = append(s, "URI:"+u.String())
	}
	if len(s) > 4 {
		s = append(s[:4], "...")
	}
	return fmt.Sprint(s)
}

// Issue signs an SVID for spiffeID (which must be in the CA's trust
// domain) with csr's public key. The SVID's only SAN is the URI spiffeID;
// its key usages are DigitalSignature and KeyEncipherment, its extended
// key usages ServerAuth and ClientAuth. It lives ttl (the CA's default
// when 0, capped at the CA's maximum and at the signing root's NotAfter)
// from a minute before now (ClockSkew). csr is checked as CheckCSR does.
func (c *CA) Issue(csr *x509.CertificateRequest, spiffeID string, ttl time.Duration) (*Issued, error) {
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	id, err := spiffeid.FromString(spiffeID)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadIdentity, spiffeID, err)
	}
	if id.TrustDomain() != c.td {
		return nil, fmt.Errorf("%w %q: not in trust domain %q", ErrBadIdentity, spiffeID, c.td.Name())
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("%w %q: a workload ID needs a path (/ns/<ns>/sa/<sa>)", ErrBadIdentity, spiffeID)
	}
	switch {
	case ttl < 0:
		return nil, fmt.Errorf("ca: negative ttl %s", ttl)
	case ttl == 0:
		ttl = c.cfg.defaultTTL
	case ttl > c.cfg.maxTTL:
		ttl = c.cfg.maxTTL
	}
	tmpl := &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{id.URL()},
	}
	return c.sign(tmpl, csr.PublicKey, ttl, "SVID for "+spiffeID)
}

// sign fills tmpl's serial number, validity (ttl from a minute before
// now, within the signing root's) and basic constraints (CA:false), and
// signs pub with the current root. what names the certificate in errors.
func (c *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration, what string) (*Issued, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}

	c.mu.Lock()
	signer, key, roots := c.signer, c.key, c.bundleLocked()
	c.mu.Unlock()

	now := c.cfg.now()
	if !now.Before(signer.NotAfter) {
		return nil, fmt.Errorf("ca: issue %s: %w (at %s): rotate the root", what, ErrRootExpired, signer.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore, notAfter := now.Add(-ClockSkew), now.Add(ttl)
	if notBefore.Before(signer.NotBefore) {
		notBefore = signer.NotBefore
	}
	if notAfter.After(signer.NotAfter) {
		notAfter = signer.NotAfter
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	// BasicConstraints CA:false, as the X509-SVID spec asks.
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, pub, key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", what, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse %s: %w", what, err)
	}
	chain := []*x509.Certificate{leaf}
	if !selfSigned(signer) {
		chain = append(chain, signer)
	}
	return &Issued{Chain: chain, Roots: roots}, nil
}

// selfSigned reports whether cert is signed by its own key.
func selfSigned(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, cert.RawSubject) && cert.CheckSignatureFrom(cert) == nil
}

// issuerIn returns the certificate among roots that signed cert, or nil.
func issuerIn(cert *x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	for _, r := range roots {
		if bytes.Equal(cert.RawIssuer, r.RawSubject) && cert.CheckSignatureFrom(r) == nil {
			return r
		}
	}
	return nil
}

// checkSigner checks that cert can sign SVIDs of td with key at now.
func checkSigner(td spiffeid.TrustDomain, cert *x509.Certificate, key crypto.Signer, now time.Time, name string) error {
	if cert == nil || key == nil {
		return fmt.Errorf("%s: certificate and key are required", name)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("%s %q is not a CA certificate (basicConstraints CA:false): it must be the CA that signs workload certificates", name, cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s %q lacks the keyCertSign key usage", name, cert.Subject)
	}
	if now.Before(cert.NotBefore) || !now.Before(cert.NotAfter) {
		return fmt.Errorf("%s %q is valid from %s to %s, not now (%s): replace it", name, cert.Subject,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return fmt.Errorf("%s %q: the private key does not match the certificate's public key", name, cert.Subject)
	}
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" && u.Host != td.Name() {
			return fmt.Errorf("%s %q is for trust domain %q, not %q: use a root of %q or set the trust domain to %q", name, cert.Subject, u.Host, td.Name(), td.Name(), u.Host)
		}
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// Reload re-reads the Secret of a CA from FromSecret and applies it: a new
// ca-cert.pem/ca-key.pem becomes the signing root, root-cert.pem the
// bundle; bundle listeners are told when the bundle changed. On error the
// CA keeps its current state. For other CAs it returns an error.
func (c *CA) Reload(ctx context.Context) error {
	if c.secret == nil {
		return errors.New("ca: reload: this CA is not loaded from a Secret")
	}
	m, err := c.secret.load(ctx, c.td, c.cfg.now())
	if err != nil {
		return err
	}
	c.mu.Lock()
	changed := !slices.EqualFunc(m.roots, c.roots, (*x509.Certificate).Equal)
	c.signer, c.key, c.roots = m.cert, m.key, m.roots
	c.mu.Unlock()
	if changed {
		c.notify()
	}
	return nil
}
