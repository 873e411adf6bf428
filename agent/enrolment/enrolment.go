// Package enrolment is the agent's side of the pod enrolment socket
// (the contract is api/enrol): producers (the lab, a CNI plugin) hand
// over a pod's namespace, name and network namespace path; the Server
// holds the network namespace open, has the agent enrol the pod (known
// from the controller's flow table, SVID issued), and answers. Enrolled
// pods are kept in a state file beside the socket, so that a restarted
// agent knows them again (Restore).
package enrolment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/internal/netns"
)

// DefaultTimeout bounds how long an OpAdd waits for the pod to be
// enrolled.
const DefaultTimeout = 30 * time.Second

// StateFileName is the name of the state file, beside the socket.
const StateFileName = "pods.json"

// Result is what enrolling a pod produced.
type Result struct {
	Identity string
	Expiry   time.Time
}

// Config configures a Server.
type Config struct {
	// Socket is the unix socket path (api/enrol.SocketPath).
	Socket string
	// Enrol makes namespace/name an enrolled pod: it blocks until the pod
	// is in the node's flow table and has an SVID, or ctx is done, and
	// says why not in its error. It is called again for restored pods.
	// netns is the pod's network namespace, held open by the Server
	// (the callee must not close it).
	Enrol func(ctx context.Context, namespace, name string, netns *os.File) (Result, error)
	// Forget is called when a pod is removed (OpRemove), with its network
	// namespace while it is still held (nil if the pod was not enrolled).
	Forget func(namespace, name string, netns *os.File)
	// Timeout bounds an OpAdd (default DefaultTimeout).
	Timeout time.Duration
}

// Pod is an enrolled pod.
type Pod struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Netns     string    `json:"netns"`
	Enrolled  time.Time `json:"enrolled"`
	Identity  string    `json:"identity,omitempty"`
	// NetnsInode identifies the namespace the pod was enrolled in (its
	// nsfs inode): Restore refuses a path that now names another one (a
	// /proc/PID path whose PID was reused while the agent was down).
	NetnsInode uint64 `json:"netnsInode,omitempty"`
	// Sandbox is the request's pod sandbox ID (enrol.Request.Sandbox).
	Sandbox string `json:"sandbox,omitempty"`

	fd *os.File
}

// Key is "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Netns returns the open handle of the pod's network namespace (nil if
// it is not enrolled): what capture (a later issue) enters.
func (s *Server) Netns(namespace, name string) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pods[namespace+"/"+name]; ok {
		return p.fd
	}
	return nil
}

// Server serves the enrolment socket.
type Server struct {
	cfg   Config
	state string

	mu   sync.Mutex
	pods map[string]*Pod
	// removals counts OpRemove per pod: an add that was still waiting
	// when its pod was removed must not put it back.
	removals map[string]uint64
	ln       net.Listener
	wg       sync.WaitGroup
	// saveMu orders state file writes: concurrent enrolments each save,
	// and the last snapshot taken must be the last one renamed in place.
	saveMu sync.Mutex
}

// Listen creates the socket's directory (0700), removes a stale socket
// left by an earlier agent, and listens (the socket is 0600).
func Listen(cfg Config) (*Server, error) {
	if cfg.Socket == "" || cfg.Enrol == nil {
		return nil, errors.New("enrolment: Socket and Enrol are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	dir := filepath.Dir(cfg.Socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("enrolment socket: %w", err)
	}
	if err := os.Remove(cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("enrolment socket: remove stale %s: %w", cfg.Socket, err)
	}
	// The socket is created with the umask applied: make it 0600 from
	// the start rather than chmod after a window where others could
	// connect.
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", cfg.Socket)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("enrolment socket: %w", err)
	}
	if err := os.Chmod(cfg.Socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("enrolment socket: %w", err)
	}
	return &Server{cfg: cfg, state: filepath.Join(dir, StateFileName), pods: map[string]*Pod{}, ln: ln}, nil
}

// Restore reads the state file an earlier agent wrote and holds each
// pod's network namespace open again; a pod whose namespace is gone is
// dropped (its error is returned, joined, for the caller to log). The
// pods are enrolled again in the background (Enrol), without a caller
// waiting.
func (s *Server) Restore(ctx context.Context) error {
	b, err := os.ReadFile(s.state)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enrolment state: %w", err)
	}
	var st struct {
		Pods []Pod `json:"pods"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("enrolment state %s: %w (remove it; producers re-enrol their pods)", s.state, err)
	}
	var errs []error
	for _, p := range st.Pods {
		fd, err := openNetns(p.Netns)
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", p.Key(), err))
			continue
		}
		if ino := inode(fd); p.NetnsInode != 0 && ino != p.NetnsInode {
			fd.Close()
			errs = append(errs, fmt.Errorf("pod %s: %s is another network namespace now (inode %d, enrolled in %d): dropped; its producer enrols it again if it still runs", p.Key(), p.Netns, ino, p.NetnsInode))
			continue
		}
		// Enrol gets its own descriptor: a newer enrolment of the pod
		// (its producer enrolling it again meanwhile) closes p.fd, and
		// a closed number may be reused by any open before Enrol reads it.
		efd, err := netns.Dup(fd, fd.Name())
		if err != nil {
			fd.Close()
			errs = append(errs, fmt.Errorf("pod %s: %w", p.Key(), err))
			continue
		}
		p := p
		p.fd = fd
		s.mu.Lock()
		s.pods[p.Key()] = &p
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer efd.Close()
			c, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
			defer cancel()
			_, _ = s.cfg.Enrol(c, p.Namespace, p.Name, efd)
			// Removed while it was being enrolled again: what Enrol set
			// up is undone (a re-enrolment in another namespace keeps
			// its own).
			s.mu.Lock()
			_, still := s.pods[p.Key()]
			s.mu.Unlock()
			if !still && s.cfg.Forget != nil {
				s.cfg.Forget(p.Namespace, p.Name, nil)
			}
		}()
	}
	if err := s.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Serve answers requests until ctx is done; then it closes the socket,
// waits for the requests in progress and releases the namespaces.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.wg.Wait()
			s.closeAll()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("enrolment socket: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c)
		}()
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pods {
		p.fd.Close()
	}
	s.pods = map[string]*Pod{}
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req enrol.Request
	dec := json.NewDecoder(c)
	if err := dec.Decode(&req); err != nil {
		writeResp(c, enrol.Response{Error: fmt.Sprintf("read request: %v: send one JSON request (api/enrol)", err)})
		return
	}
	c.SetReadDeadline(time.Time{})
	writeResp(c, s.Do(ctx, req))
}

func writeResp(c net.Conn, r enrol.Response) {
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_ = json.NewEncoder(c).Encode(r)
}

// Do carries out one request and returns the answer (the socket's
// handler; exported for tests and in-process producers).
func (s *Server) Do(ctx context.Context, req enrol.Request) enrol.Response {
	if err := req.Validate(); err != nil {
		return enrol.Response{Error: err.Error()}
	}
	key := req.Namespace + "/" + req.Name
	switch req.Op {
	case enrol.OpCheck:
		return s.check(key, req.Netns)
	case enrol.OpRemove:
		s.mu.Lock()
		p, ok := s.pods[key]
		if ok && req.Sandbox != "" && p.Sandbox != "" && req.Sandbox != p.Sandbox {
			// The teardown of a sandbox the pod has left: the pod
			// enrolled in its new one stays.
			s.mu.Unlock()
			return enrol.Response{OK: true}
		}
		delete(s.pods, key)
		if s.removals == nil {
			s.removals = map[string]uint64{}
		}
		s.removals[key]++
		s.mu.Unlock()
		var fd *os.File
		if ok {
			fd = p.fd
		}
		if s.cfg.Forget != nil {
			s.cfg.Forget(req.Namespace, req.Name, fd)
		}
		if fd != nil {
			fd.Close()
		}
		if err := s.save(); err != nil {
			return enrol.Response{Error: err.Error()}
		}
		return enrol.Response{OK: true}
	}
	s.mu.Lock()
	gen := s.removals[key]
	s.mu.Unlock()
	fd, err := openNetns(req.Netns)
	if err != nil {
		return enrol.Response{Error: fmt.Sprintf("pod %s: %v", key, err)}
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	res, err := s.cfg.Enrol(cctx, req.Namespace, req.Name, fd)
	if err != nil {
		fd.Close()
		return enrol.Response{Error: fmt.Sprintf("pod %s: %v", key, err)}
	}
	p := &Pod{Namespace: req.Namespace, Name: req.Name, Netns: req.Netns, Enrolled: time.Now(), Identity: res.Identity, NetnsInode: inode(fd), Sandbox: req.Sandbox, fd: fd}
	s.mu.Lock()
	if s.removals[key] != gen { // removed while this add waited
		s.mu.Unlock()
		if s.cfg.Forget != nil {
			s.cfg.Forget(req.Namespace, req.Name, fd)
		}
		fd.Close()
		return enrol.Response{Error: fmt.Sprintf("pod %s: removed while it was being enrolled", key)}
	}
	old := s.pods[key]
	s.pods[key] = p
	s.mu.Unlock()
	if old != nil {
		old.fd.Close()
	}
	if err := s.save(); err != nil {
		return enrol.Response{Error: err.Error()}
	}
	return enrol.Response{OK: true, Identity: res.Identity, SVIDExpiry: res.Expiry}
}

// check answers OpCheck: the pod is enrolled, in the network namespace
// netns names when it is given (the same namespace, by inode, not only
// the same path).
func (s *Server) check(key, netnsPath string) enrol.Response {
	s.mu.Lock()
	p, ok := s.pods[key]
	var id string
	var ino uint64
	var path string
	if ok {
		id, path = p.Identity, p.Netns
		ino = inode(p.fd)
	}
	s.mu.Unlock()
	if !ok {
		return enrol.Response{Error: fmt.Sprintf("pod %s is not enrolled on this node", key)}
	}
	if netnsPath != "" {
		f, err := openNetns(netnsPath)
		if err != nil {
			return enrol.Response{Error: fmt.Sprintf("pod %s: %v", key, err)}
		}
		got := inode(f)
		f.Close()
		if got != ino {
			return enrol.Response{Error: fmt.Sprintf("pod %s is enrolled in network namespace %s, not %s", key, path, netnsPath)}
		}
	}
	return enrol.Response{OK: true, Identity: id}
}

// Pods returns the enrolled pods, sorted by namespace/name.
func (s *Server) Pods() []Pod {
	s.mu.Lock()
	out := make([]Pod, 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, *p)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Pod) int { return strings.Compare(a.Key(), b.Key()) })
	return out
}

// Enrolled reports whether namespace/name is enrolled.
func (s *Server) Enrolled(namespace, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pods[namespace+"/"+name]
	return ok
}

// save writes the state file atomically (a temporary file of its own,
// synced, renamed in place), one save at a time.
func (s *Server) save() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	pods := s.Pods()
	b, err := json.MarshalIndent(struct {
		Pods []Pod `json:"pods"`
	}{pods}, "", "  ")
	if err != nil {
		return fmt.Errorf("enrolment state: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(s.state), ".pods-*.json")
	if err != nil {
		return fmt.Errorf("enrolment state: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.state)
	}
	if err != nil {
		return fmt.Errorf("enrolment state %s: %w", s.state, err)
	}
	return nil
}

// openNetns opens path and checks that it is a network namespace.
func openNetns(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("netns %q: want an absolute path (/run/netns/NAME or /proc/PID/ns/net)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		f.Close()
		return nil, fmt.Errorf("netns %s is not a namespace (want /run/netns/NAME or /proc/PID/ns/net)", path)
	}
	// A namespace, but of the network kind? NS_GET_NSTYPE says.
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err == nil && t != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("netns %s is not a network namespace", path)
	}
	return f, nil
}

// inode is the nsfs inode of an open namespace (0 if it cannot be read).
func inode(f *os.File) uint64 {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return 0
	}
	return st.Ino
}
