package ca

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTokenFileParse(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantErr string // substring; "" for success
	}{
		{"ok", "# bootstrap tokens\n\nnode1 s3cret-1\n  node2\ts3cret-2  \nnode1 s3cret-1b\n", ""},
		{"three fields", "node1 s3cret-1\nnode2 s3cret-2 # node two\n", ":2: 5 fields, want 2: <node-name> <token>"},
		{"one field", "node1\n", ":1: 1 fields, want 2"},
		{"bad node name", "Node_1 tok\n", `:1: node name "Node_1"`},
		{"shared token", "node1 same\nnode2 same\n", ":2: the token of node node2 is also on line 1"},
		{"empty", "# nothing\n", "no tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens")
			writeFile(t, path, tt.data)
			_, err := TokenFile(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	if _, err := TokenFile(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestTokenFileAuthenticate(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, "node1 tok-1\nnode2 tok-2\n")
	a, err := TokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	check := func(token, wantNode string, wantErr error) {
		t.Helper()
		node, err := a.Authenticate(ctx, token)
		if !errors.Is(err, wantErr) || node != wantNode {
			t.Errorf("Authenticate(%q) = %q, %v; want %q, %v", token, node, err, wantNode, wantErr)
		}
	}
	check("tok-1", "node1", nil)
	check("tok-2", "node2", nil)
	check("tok-3", "", ErrInvalidToken)
	check("tok-", "", ErrInvalidToken)
	check("", "", ErrInvalidToken)

	// Reload: same size, new content; the mtime moves.
	writeFile(t, path, "node1 tok-9\nnode3 tok-3\n")
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	check("tok-1", "", ErrInvalidToken)
	check("tok-9", "node1", nil)
	check("tok-3", "node3", nil)

	// Replace by rename (a new inode), as editors and kubelet do.
	tmp := path + ".new"
	writeFile(t, tmp, "node4 tok-4\n")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	check("tok-4", "node4", nil)

	// A malformed file fails closed, naming file:line, until fixed.
	writeFile(t, path, "node4 tok-4\nnode5\n")
	if err := os.Chtimes(path, future.Add(time.Hour), future.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, "tok-4"); err == nil || errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), path+":2:") {
		t.Errorf("malformed file: %v, want a file:line error that is not ErrInvalidToken", err)
	}
	writeFile(t, path, "node4 tok-4\n")
	if err := os.Chtimes(path, future.Add(2*time.Hour), future.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("tok-4", "node4", nil)
}

func TestTokenReview(t *testing.T) {
	agent := DefaultAgentServiceAccount
	tests := []struct {
		name     string
		status   authnv1.TokenReviewStatus
		apiErr   error
		wantNode string
		wantErr  error  // errors.Is
		wantMsg  string // substring
	}{
		{name: "bound agent token", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"fibmesh-ca"},
			User: authnv1.UserInfo{Username: agent, Extra: map[string]authnv1.ExtraValue{NodeNameExtra: {"node1"}}}}, wantNode: "node1"},
		{name: "not authenticated", status: authnv1.TokenReviewStatus{Error: "token expired"}, wantErr: ErrInvalidToken, wantMsg: "token expired"},
		{name: "other service account", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"fibmesh-ca"},
			User: authnv1.UserInfo{Username: "system:serviceaccount:default:default", Extra: map[string]authnv1.ExtraValue{NodeNameExtra: {"node1"}}}},
			wantErr: ErrInvalidToken, wantMsg: `not of the agent's ServiceAccount "system:serviceaccount:fibmesh-system:fibmesh-agent"`},
		{name: "not bound to a node", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"fibmesh-ca"}, User: authnv1.UserInfo{Username: agent}},
			wantErr: ErrInvalidToken, wantMsg: NodeNameExtra},
		{name: "wrong audience", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"other"},
			User: authnv1.UserInfo{Username: agent, Extra: map[string]authnv1.ExtraValue{NodeNameExtra: {"node1"}}}}, wantErr: ErrInvalidToken, wantMsg: "audiences"},
		{name: "API server down", apiErr: errors.New("connection refused"), wantMsg: "token review: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			var sent *authnv1.TokenReview
			client.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
				sent = action.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
				if tt.apiErr != nil {
					return true, nil, tt.apiErr
				}
				return true, &authnv1.TokenReview{Spec: sent.Spec, Status: tt.status}, nil
			})
			node, err := TokenReview(client, []string{"fibmesh-ca"}).Authenticate(context.Background(), "the-token")
			if sent == nil || sent.Spec.Token != "the-token" || len(sent.Spec.Audiences) != 1 || sent.Spec.Audiences[0] != "fibmesh-ca" {
				t.Errorf("sent review %+v, want the token and audience fibmesh-ca", sent)
			}
			if node != tt.wantNode {
				t.Errorf("node %q, want %q", node, tt.wantNode)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if tt.apiErr != nil && errors.Is(err, ErrInvalidToken) {
				t.Errorf("API error %v is ErrInvalidToken", err)
			}
			if (tt.wantMsg == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %v, want one saying %q", err, tt.wantMsg)
			}
		})
	}
	if _, err := TokenReview(fake.NewClientset(), nil).Authenticate(context.Background(), ""); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("empty token: %v, want ErrInvalidToken", err)
	}
}
