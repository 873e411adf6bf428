package xds

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
)

func TestRequireNode(t *testing.T) {
	tokens := map[string]string{"tok-node1": "node1", "tok-node2": "node2"}
	auth := RequireNode(func(ctx context.Context) (string, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		v := md.Get("authorization")
		if len(v) != 1 {
			return "", status.Error(codes.Unauthenticated, "no token")
		}
		node, ok := tokens[strings.TrimPrefix(v[0], "Bearer ")]
		if !ok {
			return "", status.Error(codes.Unauthenticated, "unknown token")
		}
		return node, nil
	})
	e := newEnv(t, grpc.ChainStreamInterceptor(auth))
	type flowTables []string // FDS names subscribed; nil: the agent's own
	tests := []struct {
		name, token, node string
		delta             bool
		fds               flowTables
		want              codes.Code // codes.OK: the stream is served
	}{
		{"own node, delta", "tok-node1", "node1", true, nil, codes.OK},
		{"own node, state of the world", "tok-node2", "node2", false, nil, codes.OK},
		{"another node's config, delta", "tok-node1", "node2", true, nil, codes.PermissionDenied},
		{"another node's config, state of the world", "tok-node1", "node2", false, nil, codes.PermissionDenied},
		{"another node's flow table, delta", "tok-node1", "node1", true, flowTables{"mesh", "node2"}, codes.PermissionDenied},
		{"another node's flow table, state of the world", "tok-node1", "node1", false, flowTables{"node2"}, codes.PermissionDenied},
		{"every flow table, delta", "tok-node1", "node1", true, flowTables{}, codes.PermissionDenied},
		{"every flow table, state of the world", "tok-node1", "node1", false, flowTables{}, codes.PermissionDenied},
		{"flow tables by *", "tok-node1", "node1", true, flowTables{"*"}, codes.PermissionDenied},
		{"no token", "", "node1", true, nil, codes.Unauthenticated},
		{"unknown token", "tok-nobody", "node1", false, nil, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			subs := AgentSubscriptions(tt.node)
			if tt.fds != nil {
				subs[5].Names = tt.fds
			}
			c := xdsclient.New(conn, xdsclient.Config{Node: tt.node, Delta: tt.delta, Subscriptions: subs})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tt.token)
			}
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			if tt.want == codes.OK {
				await(t, c, "a flow table", func(u xdsclient.Update) bool { return u.TypeURL == AgentSubscriptions(tt.node)[5].TypeURL })
				cancel()
				<-done
				return
			}
			err = <-done
			if got := status.Code(errors.Unwrap(err)); got != tt.want && status.Code(err) != tt.want {
				t.Errorf("stream ended with %v (code %v), want %v", err, got, tt.want)
			}
		})
	}
}

func TestFirstPush(t *testing.T) {
	e := newEnv(t) // pushes the first model
	select {
	case <-e.srv.FirstPush():
	default:
		t.Fatal("FirstPush not closed after the first push")
	}
	if s := New(Options{}); s.FirstPush() == nil {
		t.Fatal("nil FirstPush channel")
	} else {
		select {
		case <-s.FirstPush():
			t.Fatal("FirstPush closed before any push")
		default:
		}
	}
}

// A client that connects before the first push is refused (Unavailable),
// not answered from the empty caches: a reconnecting delta client naming
// the resources it holds would be told they were removed.
func TestStreamsWaitForFirstPush(t *testing.T) {
	s := New(Options{Debounce: time.Millisecond})
	g := grpc.NewServer()
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, delta := range []bool{true, false} {
		c := xdsclient.New(conn, xdsclient.Config{Node: "node1", Delta: delta, Subscriptions: AgentSubscriptions("node1")})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Run(ctx)
		cancel()
		if status.Code(errors.Unwrap(err)) != codes.Unavailable && status.Code(err) != codes.Unavailable {
			t.Errorf("delta=%v: a stream before the first push ended with %v, want Unavailable", delta, err)
		}
	}
}
