// Package enrol is the contract between a node's agent and the producers
// that tell it about pods (the lab today, a CNI plugin later): a unix
// socket on the node, /run/fibmesh/<node>/enrol.sock (mode 0600), where a
// producer hands over a pod's namespace, name and network namespace path,
// and the agent answers once the pod is enrolled (its network namespace
// held open, its SVID issued, which the controller's CA does only for the
// pod's node, its capture installed) or says why it is not. A pod the
// node's flow table does not list yet (on Kubernetes, until the kubelet
// reports its IP) gets its data path when it does.
//
// One request per connection: the producer writes one JSON Request, the
// agent writes one JSON Response and closes the connection.
package enrol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// DefaultRunDir is the directory under which each node's socket lives.
const DefaultRunDir = "/run/fibmesh"

// SocketPath returns the enrolment socket of node under runDir (""
// means DefaultRunDir).
func SocketPath(runDir, node string) string {
	if runDir == "" {
		runDir = DefaultRunDir
	}
	return filepath.Join(runDir, node, "enrol.sock")
}

// Ops a Request can carry.
const (
	// OpAdd enrols a pod (again: re-adding an enrolled pod with a new
	// netns path replaces it, as after a pod sandbox restart).
	OpAdd = "add"
	// OpRemove forgets a pod: the agent closes its netns handle.
	OpRemove = "remove"
	// OpCheck asks whether a pod is enrolled (in the network namespace
	// Netns names, when given): the CNI plugin's CHECK. It changes
	// nothing.
	OpCheck = "check"
)

// Request is what a producer sends.
type Request struct {
	Op        string `json:"op"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Netns is the path of the pod's network namespace
	// (/run/netns/NAME or /proc/PID/ns/net); required for OpAdd.
	Netns string `json:"netns,omitempty"`
	// Sandbox is the pod sandbox's ID (CNI_CONTAINERID), optional. A
	// pod re-created under the same name (a StatefulSet's, a deleted and
	// re-applied one) is added in its new sandbox before the runtime
	// tears down the old one, often twice (StopPodSandbox, then
	// RemovePodSandbox a minute later): an OpRemove naming another
	// sandbox than the enrolled one is a no-op.
	Sandbox string `json:"sandbox,omitempty"`
}

// Validate says what is wrong with r, naming the field.
func (r Request) Validate() error {
	switch r.Op {
	case OpAdd, OpRemove, OpCheck:
	default:
		return fmt.Errorf("enrol request: op %q: want %q, %q or %q", r.Op, OpAdd, OpRemove, OpCheck)
	}
	if r.Namespace == "" || r.Name == "" {
		return fmt.Errorf("enrol request: namespace and name are required (got %q/%q)", r.Namespace, r.Name)
	}
	if r.Op == OpAdd && r.Netns == "" {
		return fmt.Errorf("enrol request for %s/%s: netns is required to add a pod", r.Namespace, r.Name)
	}
	return nil
}

// Response is the agent's answer.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Identity is the pod's SPIFFE ID (OpAdd, OpCheck) and SVIDExpiry
	// the expiry of the certificate issued for it (OpAdd only).
	Identity   string    `json:"identity,omitempty"`
	SVIDExpiry time.Time `json:"svidExpiry,omitzero"`
}

// ErrRefused is wrapped by Call's error when the agent answered that the
// pod could not be enrolled.
var ErrRefused = errors.New("enrolment refused")

// Call sends req to the agent listening on socket and waits for its
// answer until ctx is done. An agent that refuses returns an error
// wrapping ErrRefused with its reason.
func Call(ctx context.Context, socket string, req Request) (Response, error) {
	if err := req.Validate(); err != nil {
		return Response{}, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return Response{}, fmt.Errorf("enrol %s/%s: agent socket: %w", req.Namespace, req.Name, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, fmt.Errorf("enrol %s/%s: send: %w", req.Namespace, req.Name, errors.Join(ctx.Err(), err))
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("enrol %s/%s: read answer: %w", req.Namespace, req.Name, errors.Join(ctx.Err(), err))
	}
	if !resp.OK {
		return resp, fmt.Errorf("enrol %s/%s: %w: %s", req.Namespace, req.Name, ErrRefused, resp.Error)
	}
	return resp, nil
}
