package ca

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// Authenticator tells which node a bearer token belongs to.
type Authenticator interface {
	// Authenticate returns the name of the node token was issued to. An
	// error wrapping ErrInvalidToken means the token is not accepted; any
	// other error means it could not be checked (a bad token file, an
	// unreachable API server).
	Authenticate(ctx context.Context, token string) (node string, err error)
}

// ErrInvalidToken is wrapped by Authenticate errors for tokens that are
// missing, unknown, expired or not an agent's.
var ErrInvalidToken = errors.New("invalid token")

// TokenFileAuthenticator authenticates nodes with bootstrap tokens from a
// file (see TokenFile).
type TokenFileAuthenticator struct {
	path string

	mu      sync.Mutex
	stat    os.FileInfo // of the version parsed
	entries []tokenEntry
	err     error // of the last read; fails every call until fixed
}

type tokenEntry struct {
	node string
	sum  [sha256.Size]byte
}

// TokenFile returns an Authenticator for the bootstrap tokens in path: one
// "<node-name> <token>" pair a line, separated by spaces or tabs; blank
// lines and lines starting with # are ignored. A node may have several
// tokens (to roll them); a token may belong to one node only. The file is
// read now and re-read whenever its size, modification time or inode
// changes; while it is malformed, every Authenticate fails with the
// file:line of the problem (fail closed: a half-edited file must not keep
// a revoked token alive). Tokens are compared in constant time.
func TokenFile(path string) (*TokenFileAuthenticator, error) {
	a := &TokenFileAuthenticator{path: path}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshLocked(); err != nil {
		return nil, err
	}
	return a, nil
}

// Authenticate implements Authenticator.
func (a *TokenFileAuthenticator) Authenticate(_ context.Context, token string) (string, error) {
	a.mu.Lock()
	err := a.refreshLocked()
	entries := a.entries
	a.mu.Unlock()
	if err != nil {
		return "", err
	}
	if token == "" {
		return "", fmt.Errorf("%w: empty token", ErrInvalidToken)
	}
	// Hashing first gives equal lengths, so that the comparison leaks
	// neither the tokens' lengths nor where they differ; every entry is
	// compared, so that timing does not tell which line matched.
	sum := sha256.Sum256([]byte(token))
	node := ""
	for _, e := range entries {
		if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 && node == "" {
			node = e.node
		}
	}
	if node == "" {
		return "", fmt.Errorf("%w: not a bootstrap token of %s", ErrInvalidToken, a.path)
	}
	return node, nil
}

func (a *TokenFileAuthenticator) refreshLocked() error {
	fi, err := os.Stat(a.path)
	if err != nil {
		a.stat, a.entries, a.err = nil, nil, fmt.Errorf("token file: %w", err)
		return a.err
	}
	if a.stat != nil && os.SameFile(a.stat, fi) && fi.ModTime().Equal(a.stat.ModTime()) && fi.Size() == a.stat.Size() {
		return a.err
	}
	data, err := os.ReadFile(a.path)
	if err != nil {
		a.stat, a.entries, a.err = nil, nil, fmt.Errorf("token file: %w", err)
		return a.err
	}
	a.stat = fi
	a.entries, a.err = parseTokens(a.path, data)
	if a.err != nil {
		a.entries = nil
	}
	return a.err
}

// parseTokens parses a token file; name is its path, for errors.
func parseTokens(name string, data []byte) ([]tokenEntry, error) {
	var entries []tokenEntry
	seen := map[[sha256.Size]byte]int{} // token -> line
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: %d fields, want 2: <node-name> <token> (comments go on lines of their own, starting with #)", name, n, len(f))
		}
		if errs := validation.IsDNS1123Subdomain(f[0]); len(errs) > 0 {
			return nil, fmt.Errorf("%s:%d: node name %q: %s", name, n, f[0], strings.Join(errs, "; "))
		}
		sum := sha256.Sum256([]byte(f[1]))
		if prev, ok := seen[sum]; ok {
			return nil, fmt.Errorf("%s:%d: the token of node %s is also on line %d: give every node its own token", name, n, f[0], prev)
		}
		seen[sum] = n
		entries = append(entries, tokenEntry{node: f[0], sum: sum})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no tokens: add lines \"<node-name> <token>\"", name)
	}
	return entries, nil
}

// DefaultAgentServiceAccount is the Kubernetes user of the agent's
// ServiceAccount tokens (namespace fibmesh-system, ServiceAccount
// fibmesh-agent).
const DefaultAgentServiceAccount = "system:serviceaccount:fibmesh-system:fibmesh-agent"

// NodeNameExtra is the user extra of a pod-bound ServiceAccount token that
// names the pod's node (Kubernetes 1.30 and later).
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// TokenReviewAuthenticator authenticates nodes by the agent pod's
// projected ServiceAccount token, checked by the API server's TokenReview
// API (see TokenReview).
type TokenReviewAuthenticator struct {
	// Client creates TokenReviews (authentication.k8s.io/v1); the
	// controller needs RBAC "create" on tokenreviews.
	Client kubernetes.Interface
	// Audiences the token must be valid for; none means the API server's
	// own audience.
	Audiences []string
	// ServiceAccount is the user the token must belong to
	// (DefaultAgentServiceAccount from TokenReview).
	ServiceAccount string
}

// TokenReview returns an Authenticator that sends each token to the API
// server's TokenReview API and accepts it when it is authenticated, valid
// for one of audiences, belongs to the agent's ServiceAccount
// (DefaultAgentServiceAccount; change ServiceAccount to use another) and
// is bound to a pod on a node: the node is the token's NodeNameExtra.
func TokenReview(client kubernetes.Interface, audiences []string) *TokenReviewAuthenticator {
	return &TokenReviewAuthenticator{Client: client, Audiences: audiences, ServiceAccount: DefaultAgentServiceAccount}
}

// Authenticate implements Authenticator.
func (a *TokenReviewAuthenticator) Authenticate(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("%w: empty token", ErrInvalidToken)
	}
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token review: %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return "", fmt.Errorf("%w: token review: %s", ErrInvalidToken, msg)
	}
	if len(a.Audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(s string) bool { return slices.Contains(a.Audiences, s) }) {
		return "", fmt.Errorf("%w: token is for audiences %q, want one of %q: set the projected token's audience", ErrInvalidToken, st.Audiences, a.Audiences)
	}
	if st.User.Username != a.ServiceAccount {
		return "", fmt.Errorf("%w: token of %q, not of the agent's ServiceAccount %q", ErrInvalidToken, st.User.Username, a.ServiceAccount)
	}
	nodes := st.User.Extra[NodeNameExtra]
	if len(nodes) != 1 || nodes[0] == "" {
		return "", fmt.Errorf("%w: token of %q is not bound to a pod on a node (no %s): use a projected ServiceAccount token (Kubernetes 1.30+)", ErrInvalidToken, st.User.Username, NodeNameExtra)
	}
	return nodes[0], nil
}
