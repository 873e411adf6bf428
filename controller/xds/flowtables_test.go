package xds

import (
	"testing"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds/fds"
	"github.com/fibmesh/fibmesh/perf/xdsbench"
)

func testdataModel(t *testing.T) *model.Model {
	t.Helper()
	snap, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(snap, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// After a push of tables built afresh (a pod change: new shard messages of
// mostly equal content), the tables hold the shards pushed before, so a
// readiness push derived from them (WithServices) skips every shard but
// the changed one by identity instead of hashing them all again.
func TestFlowTablesKeepPushedShards(t *testing.T) {
	m := testdataModel(t)
	s := New(Options{})
	s.flowTables(fds.Build(m), 1, nil)
	t2 := fds.Build(m) // equal content, new messages
	s.flowTables(t2, 2, nil)
	var host string
	for _, sv := range m.Services {
		if len(sv.VIPs) > 0 {
			host = sv.Hostname
			break
		}
	}
	t3, ok := t2.WithServices(m, map[string]bool{host: true})
	if !ok {
		t.Fatal("WithServices declined a readiness-only change")
	}
	miss := 0
	for _, sh := range t3.Shards() {
		if s.tables[sh.GetNode()].table != sh {
			miss++
		}
	}
	if miss > 1 {
		t.Errorf("%d of %d shards of the readiness push are not the messages pushed before (want at most the changed one)", miss, len(t3.Shards()))
	}
}

// The whole table's served version identifies its bytes: content A, then
// B, then A again carries a new version stamp, and so a new resource
// version.
func TestFlowTablesWholeVersion(t *testing.T) {
	mesh, err := xdsbench.New(20, 200, 4)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(mesh.Snapshot, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{})
	st := s.shared[fds.TypeURL]
	push := func(tb *fds.Tables, v uint64) (string, string) {
		items, lazy := s.flowTables(tb, v, nil)
		if _, err := st.apply(items, nil, lazy); err != nil {
			t.Fatal(err)
		}
		e := st.hashes[fds.MeshName]
		msg, err := e.anyOf().UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		return e.version, msg.(*fibv1.FlowTable).GetVersion()
	}
	tA := fds.Build(m).WithNICTLS(nil)
	eA, vA := push(tA, 1)
	tB := tA.WithNICTLS(map[string]bool{tA.Mesh.GetRoutes()[0].GetNode(): true})
	eB, vB := push(tB, 2)
	eA2, vA2 := push(tB.WithNICTLS(nil), 3)
	if eA == eB || vA == vB {
		t.Fatalf("A and B: versions %s/%s, stamps %s/%s; want B different (the test tests nothing)", eA, eB, vA, vB)
	}
	if eA2 == eA && vA2 != vA {
		t.Errorf("A again: resource version %s as before for other bytes (stamp %s, was %s)", eA2, vA2, vA)
	}
}
