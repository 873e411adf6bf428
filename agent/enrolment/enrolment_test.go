package enrolment

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fibmesh/fibmesh/api/enrol"
)

// fakeAgent enrols the pods in known, as the agent would once they are in
// its flow table with an SVID.
type fakeAgent struct {
	mu     sync.Mutex
	known  map[string]bool
	forgot []string
	calls  int
}

func (a *fakeAgent) enrol(ctx context.Context, ns, name string, _ *os.File) (Result, error) {
	a.mu.Lock()
	a.calls++
	ok := a.known[ns+"/"+name]
	a.mu.Unlock()
	if !ok {
		<-ctx.Done()
		return Result{}, errors.New("not in node1's flow table: is it scheduled on this node?")
	}
	return Result{Identity: "spiffe://cluster.local/ns/" + ns + "/sa/default", Expiry: time.Unix(2000000000, 0)}, nil
}

func (a *fakeAgent) forget(ns, name string, _ *os.File) {
	a.mu.Lock()
	a.forgot = append(a.forgot, ns+"/"+name)
	a.mu.Unlock()
}

func serve(t *testing.T, dir string, a *fakeAgent) (*Server, func()) {
	t.Helper()
	s, err := Listen(Config{Socket: enrol.SocketPath(dir, "node1"), Enrol: a.enrol, Forget: a.forget, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	return s, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func TestEnrolmentSocket(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := filepath.Join(t.TempDir(), "run")
	sock := enrol.SocketPath(dir, "node1")
	// A stale socket file from a dead agent is replaced.
	os.MkdirAll(filepath.Dir(sock), 0o700)
	os.WriteFile(sock, nil, 0o644)
	a := &fakeAgent{known: map[string]bool{"default/a": true}}
	s, stop := serve(t, dir, a)
	defer stop()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v %v, want a socket with mode 0600", sock, fi.Mode(), err)
	}
	ctx := context.Background()
	netnsFile := filepath.Join(t.TempDir(), "not-a-netns")
	os.WriteFile(netnsFile, nil, 0o600)

	for _, tt := range []struct {
		name    string
		req     enrol.Request
		wantErr string
	}{
		{"enrolled", enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "a", Netns: "/proc/self/ns/net"}, ""},
		{"netns missing", enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "a", Netns: "/run/netns/does-not-exist"}, "no such file"},
		{"netns relative", enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "a", Netns: "fm-node1-pod1"}, "want an absolute path"},
		{"netns not a namespace", enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "a", Netns: netnsFile}, "is not a namespace"},
		{"not a network namespace", enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "a", Netns: "/proc/self/ns/uts"}, "is not a network namespace"},
		{"not scheduled here", enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "b", Netns: "/proc/self/ns/net"}, "not in node1's flow table"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := enrol.Call(ctx, sock, tt.req)
			if tt.wantErr == "" {
				if err != nil || resp.Identity != "spiffe://cluster.local/ns/default/sa/default" || resp.SVIDExpiry.IsZero() {
					t.Fatalf("Call: %+v, %v", resp, err)
				}
				return
			}
			if !errors.Is(err, enrol.ErrRefused) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Call: %v, want a refusal saying %q", err, tt.wantErr)
			}
		})
	}
	if !s.Enrolled("default", "a") || s.Enrolled("default", "b") || s.Netns("default", "a") == nil {
		t.Errorf("enrolled: %+v", s.Pods())
	}
	// OpCheck: enrolled, in that namespace; changes nothing.
	if resp, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpCheck, Namespace: "default", Name: "a", Netns: "/proc/self/ns/net"}); err != nil || resp.Identity != "spiffe://cluster.local/ns/default/sa/default" {
		t.Errorf("check an enrolled pod: %+v, %v", resp, err)
	}
	if _, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpCheck, Namespace: "default", Name: "a"}); err != nil {
		t.Errorf("check an enrolled pod without its netns: %v", err)
	}
	for _, tt := range []struct{ name, netns, want string }{
		{"b", "", "pod default/b is not enrolled on this node"},
		{"a", "/proc/self/ns/uts", "is not a network namespace"},
	} {
		if _, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpCheck, Namespace: "default", Name: tt.name, Netns: tt.netns}); !errors.Is(err, enrol.ErrRefused) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("check %s in %q: %v, want a refusal saying %q", tt.name, tt.netns, err, tt.want)
		}
	}
	if a.calls != 2 || len(a.forgot) != 0 { // the two adds that reached Enrol
		t.Errorf("check called the agent: %d enrol calls, forgot %v", a.calls, a.forgot)
	}
	// The state file names the pod and its netns.
	b, err := os.ReadFile(filepath.Join(filepath.Dir(sock), StateFileName))
	if err != nil || !strings.Contains(string(b), `"netns": "/proc/self/ns/net"`) {
		t.Errorf("state file: %s, %v", b, err)
	}
	if _, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpRemove, Namespace: "default", Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if s.Enrolled("default", "a") || len(a.forgot) != 1 {
		t.Errorf("after remove: pods %+v, forgot %v", s.Pods(), a.forgot)
	}
}

func TestRestore(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	a := &fakeAgent{known: map[string]bool{"default/a": true}}
	_, stop := serve(t, dir, a)
	sock := enrol.SocketPath(dir, "node1")
	if _, err := enrol.Call(context.Background(), sock, enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "a", Netns: "/proc/self/ns/net"}); err != nil {
		t.Fatal(err)
	}
	stop()
	// A state file also naming a pod whose netns is gone.
	state := filepath.Join(filepath.Dir(sock), StateFileName)
	b, _ := os.ReadFile(state)
	b = []byte(strings.Replace(string(b), `"pods": [`, `"pods": [{"namespace": "default", "name": "gone", "netns": "/run/netns/fm-gone-xyz"},`+
		`{"namespace": "default", "name": "moved", "netns": "/proc/self/ns/net", "netnsInode": 1},`, 1))
	os.WriteFile(state, b, 0o600)

	s, stop2 := serve(t, dir, a)
	defer stop2()
	err := s.Restore(context.Background())
	if err == nil || !strings.Contains(err.Error(), "pod default/gone") || !strings.Contains(err.Error(), "pod default/moved: /proc/self/ns/net is another network namespace now") {
		t.Errorf("Restore: %v, want the gone pod and the moved one reported", err)
	}
	if !s.Enrolled("default", "a") || s.Enrolled("default", "gone") || s.Enrolled("default", "moved") {
		t.Errorf("restored %+v", s.Pods())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		n := a.calls
		a.mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restored pod not enrolled again")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An add still waiting for the pod's SVID when the pod is removed does
// not put it back.
func TestRemoveDuringAdd(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	var forgot []string
	var mu sync.Mutex
	s, err := Listen(Config{
		Socket: enrol.SocketPath(filepath.Join(t.TempDir(), "run"), "node1"),
		Enrol: func(ctx context.Context, ns, name string, _ *os.File) (Result, error) {
			close(started)
			<-release
			return Result{Identity: "spiffe://cluster.local/ns/default/sa/default"}, nil
		},
		Forget:  func(ns, name string, _ *os.File) { mu.Lock(); forgot = append(forgot, ns+"/"+name); mu.Unlock() },
		Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	added := make(chan enrol.Response, 1)
	go func() {
		added <- s.Do(context.Background(), enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "a", Netns: "/proc/self/ns/net"})
	}()
	<-started
	if r := s.Do(context.Background(), enrol.Request{Op: enrol.OpRemove, Namespace: "default", Name: "a"}); !r.OK {
		t.Fatalf("remove: %+v", r)
	}
	close(release)
	if r := <-added; r.OK || !strings.Contains(r.Error, "removed while it was being enrolled") {
		t.Errorf("the add that raced the removal answered %+v", r)
	}
	if s.Enrolled("default", "a") {
		t.Error("the removed pod is enrolled again")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(forgot) != 2 {
		t.Errorf("forgot %v, want the pod forgotten by the removal and by the add that lost", forgot)
	}
}

// A restored pod removed while its enrolment runs again is forgotten
// once more when that enrolment returns: what it set up is undone.
func TestRemoveDuringRestore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	sock := enrol.SocketPath(dir, "node1")
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	state := `{"pods": [{"namespace": "default", "name": "a", "netns": "/proc/self/ns/net"}]}`
	if err := os.WriteFile(filepath.Join(filepath.Dir(sock), StateFileName), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{})
	forgot := make(chan string, 4)
	s, err := Listen(Config{
		Socket: sock,
		Enrol: func(ctx context.Context, ns, name string, _ *os.File) (Result, error) {
			close(started)
			<-release
			return Result{}, nil
		},
		Forget:  func(ns, name string, _ *os.File) { forgot <- ns + "/" + name },
		Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	if err := s.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-started
	if r := s.Do(context.Background(), enrol.Request{Op: enrol.OpRemove, Namespace: "default", Name: "a"}); !r.OK {
		t.Fatalf("remove: %+v", r)
	}
	if got := <-forgot; got != "default/a" {
		t.Fatalf("the removal forgot %q", got)
	}
	close(release)
	select {
	case got := <-forgot:
		if got != "default/a" {
			t.Errorf("the restore that lost forgot %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Error("the restored enrolment that raced the removal did not forget the pod")
	}
}

// A pod re-created under the same name is added in its new sandbox before
// the runtime tears down the old one (kubelet's StopPodSandbox, then
// RemovePodSandbox a minute later, each a CNI DEL): removing the old
// sandbox keeps the pod enrolled in the new one; removing the new one, or
// a remove naming no sandbox, releases it.
func TestRemoveOtherSandbox(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := filepath.Join(t.TempDir(), "run")
	sock := enrol.SocketPath(dir, "node1")
	a := &fakeAgent{known: map[string]bool{"default/web-0": true}}
	s, stop := serve(t, dir, a)
	defer stop()
	ctx := context.Background()
	add := func(sandbox string) {
		t.Helper()
		if _, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: "web-0", Netns: "/proc/self/ns/net", Sandbox: sandbox}); err != nil {
			t.Fatalf("add in sandbox %s: %v", sandbox, err)
		}
	}
	remove := func(sandbox string) {
		t.Helper()
		if _, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpRemove, Namespace: "default", Name: "web-0", Sandbox: sandbox}); err != nil {
			t.Fatalf("remove sandbox %s: %v", sandbox, err)
		}
	}
	add("old")
	add("new")
	remove("old")
	remove("old")
	if !s.Enrolled("default", "web-0") || len(a.forgot) != 0 {
		t.Fatalf("after the old sandbox's teardown: pods %+v, forgot %v; want web-0 still enrolled", s.Pods(), a.forgot)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(sock), StateFileName))
	if err != nil || !strings.Contains(string(b), `"sandbox": "new"`) {
		t.Errorf("state file: %s, %v; want the pod's sandbox", b, err)
	}
	remove("new")
	if s.Enrolled("default", "web-0") || len(a.forgot) != 1 {
		t.Errorf("after the new sandbox's teardown: pods %+v, forgot %v", s.Pods(), a.forgot)
	}
	add("new2")
	remove("")
	if s.Enrolled("default", "web-0") || len(a.forgot) != 2 {
		t.Errorf("after a remove naming no sandbox: pods %+v, forgot %v", s.Pods(), a.forgot)
	}
}
