package xds

import (
	"context"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/perf/xdsbench"
)

// BenchmarkPushOneRoute is one VirtualService edit's push (translate,
// hash, cache updates) for 1,000 services, 10,000 pods and 1,000 nodes,
// with no agent connected: the controller's share of convergence.
func BenchmarkPushOneRoute(b *testing.B) {
	mesh, err := xdsbench.New(1000, 10000, 1000)
	if err != nil {
		b.Fatal(err)
	}
	s := New(Options{})
	m, err := model.Build(mesh.Snapshot, nil, model.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if r := s.push(ctx, m, time.Now(), pending{full: true}); r.Err != nil {
		b.Fatal(r.Err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		mesh.SetCanary(i%100*xdsbench.CanaryEvery, int32(10+i%80))
		next, err := model.Build(mesh.Snapshot, m, model.Options{})
		if err != nil {
			b.Fatal(err)
		}
		m = next
		var ch pending
		ch.add(m.Change)
		if r := s.push(ctx, m, time.Now(), ch); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

// BenchmarkPushEndpointChurn is one pod's readiness flip's push for the
// same mesh: the service's load assignments and the flow table change.
func BenchmarkPushEndpointChurn(b *testing.B) {
	mesh, err := xdsbench.New(1000, 10000, 1000)
	if err != nil {
		b.Fatal(err)
	}
	s := New(Options{})
	m, err := model.Build(mesh.Snapshot, nil, model.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if r := s.push(ctx, m, time.Now(), pending{full: true}); r.Err != nil {
		b.Fatal(r.Err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		mesh.SetReady(i/2*7919%10000, i%2 == 0)
		next, err := model.Build(mesh.Snapshot, m, model.Options{})
		if err != nil {
			b.Fatal(err)
		}
		m = next
		var ch pending
		ch.add(m.Change)
		if r := s.push(ctx, m, time.Now(), ch); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}
