// Package xdsclient is an ADS client: one gRPC stream to the controller,
// state-of-the-world or delta, subscribed to a set of resource types. It
// ACKs what its validator accepts and NACKs, with the validator's reason,
// what it refuses, keeping the last good resources in force. The agent
// uses it for its config; tests and the xDS benchmark use it as a real
// client of the controller.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	// The resource types the controller serves, registered for Any.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

// Subscription is one resource type and the names wanted (the
// agent↔controller contract's type, api/xds).
type Subscription = xdsapi.Subscription

// Config configures a Client.
type Config struct {
	// Node is the xDS node.id: the Kubernetes node name.
	Node string
	// Metadata, if set, is the xDS node.metadata sent with the node on
	// each stream's first request: what the agent reports of itself (api/fib/v1
	// NodeMetadataNICTLS). It must not be modified once the client runs.
	Metadata *structpb.Struct
	// Delta selects the incremental protocol; otherwise
	// state-of-the-world.
	Delta bool
	// Subscriptions in the order they are requested.
	Subscriptions []Subscription
	// Validate, if set, checks a response before it is applied: all of
	// the type's resources as they would be after it (name → resource).
	// An error NACKs the response with the error's text; the resources in
	// force do not change.
	Validate func(typeURL string, resources map[string]proto.Message) error
	// NoStore keeps no resources, only their names and versions: each
	// response is still decoded, validated (Validate sees only the
	// resources it carried) and ACKed. For load generators that simulate
	// many agents in one process; Resources then returns nothing.
	NoStore bool
}

// Update is one response as the client handled it.
type Update struct {
	TypeURL string
	Version string
	// Changed and Removed name the resources the response carried.
	Changed []string
	Removed []string
	// NACK is the validator's error when the response was refused.
	NACK error
	// At is when the ACK or NACK was sent.
	At time.Time
}

// Client is one ADS stream's worth of config.
type Client struct {
	cfg  Config
	conn grpc.ClientConnInterface

	mu        sync.Mutex
	resources map[string]map[string]proto.Message // type → name → resource
	versions  map[string]map[string]string        // delta: type → name → version
	version   map[string]string                   // type → last accepted version
	gen       map[string]uint64                   // type → responses accepted
	updates   chan Update
}

// DialOptions are the connection options an xDS client of the fibmesh
// controller dials with (besides credentials): fixed HTTP/2 flow-control
// windows. With gRPC's default dynamic windows, every burst of data
// received is followed by a bandwidth-estimation PING and its ACK, in
// both directions: for an xDS stream, whose responses and ACKs are each a
// burst, that doubled the frames, writes and wake-ups per response (the
// controller sets the same on its side, xds.GRPCServerOptions). A window
// of 1 MiB holds a first sync's pages of every type at once.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStaticStreamWindowSize(1 << 20),
		grpc.WithStaticConnWindowSize(1 << 20),
	}
}

// New returns a client that will speak over conn.
func New(conn grpc.ClientConnInterface, cfg Config) *Client {
	return &Client{
		cfg: cfg, conn: conn,
		resources: map[string]map[string]proto.Message{},
		versions:  map[string]map[string]string{},
		version:   map[string]string{},
		gen:       map[string]uint64{},
		updates:   make(chan Update, 64),
	}
}

// Updates delivers every response handled, in order. If the reader falls
// behind by more than 64, the oldest are dropped, never the stream.
func (c *Client) Updates() <-chan Update { return c.updates }

// Resources returns the resources in force of one type (a copy of the
// map; the messages must not be modified).
func (c *Client) Resources(typeURL string) map[string]proto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.resources[typeURL])
}

// Version returns the last version of a type the client accepted.
func (c *Client) Version(typeURL string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version[typeURL]
}

// Generation counts the responses of a type the client has accepted:
// when it has not changed, neither have Resources. A reader that derives
// something from a type's resources keeps it until the count moves.
func (c *Client) Generation(typeURL string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen[typeURL]
}

func (c *Client) publish(u Update) {
	for {
		select {
		case c.updates <- u:
			return
		default:
			select {
			case <-c.updates:
			default:
			}
		}
	}
}

// Run opens the stream and serves it until ctx is done (nil) or the
// stream fails (the error). Resources in force survive a failed stream:
// call Run again to reconnect; a delta client then tells the server what
// it has.
func (c *Client) Run(ctx context.Context) error {
	if len(c.cfg.Subscriptions) == 0 {
		return errors.New("xdsclient: no subscriptions")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ads := discovery.NewAggregatedDiscoveryServiceClient(c.conn)
	var err error
	if c.cfg.Delta {
		err = c.runDelta(ctx, ads)
	} else {
		err = c.runSotW(ctx, ads)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (c *Client) node() *core.Node {
	return &core.Node{Id: c.cfg.Node, UserAgentName: "fibmesh-agent", Metadata: c.cfg.Metadata}
}

// sendErr is the error of a failed Send: gRPC returns io.EOF from Send
// when the server has ended the stream, and the server's status (say,
// Unauthenticated) only from the next receive.
func sendErr(st grpc.ClientStream, m any, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for { // responses still queued come first, then the status
		rerr := st.RecvMsg(m)
		if rerr == nil {
			continue
		}
		if !errors.Is(rerr, io.EOF) {
			return rerr
		}
		return err
	}
}

func nackStatus(err error) *status.Status {
	return &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

func (c *Client) runSotW(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient) error {
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("xds stream: %w", err)
	}
	for i, sub := range c.cfg.Subscriptions {
		req := &discovery.DiscoveryRequest{TypeUrl: sub.TypeURL, ResourceNames: sub.Names, VersionInfo: c.Version(sub.TypeURL)}
		if i == 0 {
			req.Node = c.node()
		}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("xds request %s: %w", sub.TypeURL, sendErr(st, new(discovery.DiscoveryResponse), err))
		}
	}
	names := map[string][]string{}
	for _, sub := range c.cfg.Subscriptions {
		names[sub.TypeURL] = sub.Names
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("xds stream: %w", err)
		}
		u := Update{TypeURL: resp.GetTypeUrl(), Version: resp.GetVersionInfo()}
		next, changed, err := c.sotwNext(resp)
		if err == nil && c.cfg.Validate != nil {
			err = c.cfg.Validate(resp.GetTypeUrl(), next)
		}
		req := &discovery.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResourceNames: names[resp.GetTypeUrl()], ResponseNonce: resp.GetNonce()}
		u.Changed = changed
		c.mu.Lock()
		if err != nil {
			u.NACK = err
			req.VersionInfo = c.version[resp.GetTypeUrl()]
			req.ErrorDetail = nackStatus(err)
		} else {
			if !c.cfg.NoStore {
				c.resources[resp.GetTypeUrl()] = next
			}
			c.version[resp.GetTypeUrl()] = resp.GetVersionInfo()
			c.gen[resp.GetTypeUrl()]++
			req.VersionInfo = resp.GetVersionInfo()
		}
		c.mu.Unlock()
		if err := st.Send(req); err != nil {
			return fmt.Errorf("xds ack %s: %w", resp.GetTypeUrl(), sendErr(st, new(discovery.DiscoveryResponse), err))
		}
		u.At = time.Now()
		c.publish(u)
	}
}

func (c *Client) sotwNext(resp *discovery.DiscoveryResponse) (map[string]proto.Message, []string, error) {
	c.mu.Lock()
	var next map[string]proto.Message
	// Listeners and clusters come whole in every state-of-the-world
	// response (one missing is removed); the other types carry the
	// changed resources only.
	if cache.ResourceRequiresFullStateInSotw(resp.GetTypeUrl()) || c.cfg.NoStore {
		next = map[string]proto.Message{}
	} else {
		next = maps.Clone(c.resources[resp.GetTypeUrl()])
		if next == nil {
			next = map[string]proto.Message{}
		}
	}
	c.mu.Unlock()
	var changed []string
	for _, a := range resp.GetResources() {
		m, name, err := decode(resp.GetTypeUrl(), a)
		if err != nil {
			return nil, nil, err
		}
		next[name] = m
		changed = append(changed, name)
	}
	return next, changed, nil
}

func decode(typeURL string, a *anypb.Any) (proto.Message, string, error) {
	if a.GetTypeUrl() != typeURL {
		return nil, "", fmt.Errorf("resource of type %s in a %s response", a.GetTypeUrl(), typeURL)
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, "", fmt.Errorf("decode %s: %w", typeURL, err)
	}
	name := ResourceName(m)
	if name == "" {
		return nil, "", fmt.Errorf("%s resource without a name", typeURL)
	}
	return m, name, nil
}

// ResourceName is a resource's xDS name: go-control-plane's (its name
// field, cluster_name for a ClusterLoadAssignment); for a FlowTable, its
// node, or "mesh" for the shared table.
func ResourceName(m proto.Message) string {
	if ft, ok := m.(*fibv1.FlowTable); ok {
		if ft.GetNode() == "" {
			return "mesh"
		}
		return ft.GetNode()
	}
	return cache.GetResourceName(m)
}

func (c *Client) runDelta(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient) error {
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("xds delta stream: %w", err)
	}
	for i, sub := range c.cfg.Subscriptions {
		c.mu.Lock()
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: sub.TypeURL, ResourceNamesSubscribe: sub.Names,
			InitialResourceVersions: maps.Clone(c.versions[sub.TypeURL])}
		c.mu.Unlock()
		if i == 0 {
			req.Node = c.node()
		}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("xds delta request %s: %w", sub.TypeURL, sendErr(st, new(discovery.DeltaDiscoveryResponse), err))
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("xds delta stream: %w", err)
		}
		t := resp.GetTypeUrl()
		u := Update{TypeURL: t, Version: resp.GetSystemVersionInfo(), Removed: resp.GetRemovedResources()}
		c.mu.Lock()
		var next map[string]proto.Message
		if !c.cfg.NoStore {
			next = maps.Clone(c.resources[t])
		}
		c.mu.Unlock()
		if next == nil {
			next = map[string]proto.Message{}
		}
		// The versions change in place once the response is accepted:
		// cloning a type's map for every response cost O(resources) per
		// response (1,000 route configurations for a one-route edit).
		var derr error
		for _, r := range resp.GetResources() {
			m, _, err := decode(t, r.GetResource())
			if err != nil {
				derr = fmt.Errorf("resource %s: %w", r.GetName(), err)
				break
			}
			next[r.GetName()] = m
			u.Changed = append(u.Changed, r.GetName())
		}
		for _, n := range resp.GetRemovedResources() {
			delete(next, n)
		}
		if derr == nil && c.cfg.Validate != nil {
			derr = c.cfg.Validate(t, next)
		}
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}
		if derr != nil {
			u.NACK = derr
			req.ErrorDetail = nackStatus(derr)
		} else {
			c.mu.Lock()
			if !c.cfg.NoStore {
				c.resources[t] = next
			}
			versions := c.versions[t]
			if versions == nil {
				versions = map[string]string{}
				c.versions[t] = versions
			}
			for _, r := range resp.GetResources() {
				versions[r.GetName()] = r.GetVersion()
			}
			for _, n := range resp.GetRemovedResources() {
				delete(versions, n)
			}
			c.version[t] = resp.GetSystemVersionInfo()
			c.gen[t]++
			c.mu.Unlock()
		}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("xds delta ack %s: %w", t, sendErr(st, new(discovery.DeltaDiscoveryResponse), err))
		}
		u.At = time.Now()
		c.publish(u)
	}
}
