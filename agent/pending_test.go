package agent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// On Kubernetes the CNI ADD runs before the kubelet reports the pod's
// IP, and the controller places pods by IP: at ADD the node's flow table
// does not list the pod yet (hack/cluster found every meshed pod failing
// ADD). The agent enrols it on its SVID (the CA proves the placement),
// installs its capture at once, so its connections are refused until its
// data path runs, and starts the data path when the IP is listed.
func TestEnrolBeforeIP(t *testing.T) {
	e := setup(t, "--enrol-timeout", "5s")
	sock := enrol.SocketPath(e.runDir, "node1")
	pod1, _ := e.lab.Pod("node1-pod1")
	e.ctl.update(t, func(m *model.Model) { workload(m, pod1.Name).IP = "" })
	// Applied by node1's agent: the pod's host route has left the FIB.
	testenv.Until(t, 10*time.Second, "node1's FIB without node1-pod1", func() bool {
		for _, r := range fibRoutes(t, e.nodes[0]) {
			if strings.HasPrefix(r, pod1.IP.String()+"/32 ") {
				return false
			}
		}
		return true
	})

	ctx := context.Background()
	resp, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: pod1.Name, Netns: lab.NetnsPath(pod1.Netns), Sandbox: "s1"})
	if err != nil || resp.Identity != "spiffe://cluster.local/ns/default/sa/node1-pod1" {
		t.Fatalf("enrol %s before its IP is in the flow table: %+v, %v", pod1.Name, resp, err)
	}
	outbound := fmt.Sprintf("127.0.0.1:%d", slowpath.OutboundPort)
	dial := func() error {
		var err error
		inPod(t, pod1, func() error {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", outbound, 2*time.Second); err == nil {
				c.Close()
			}
			return nil
		})
		return err
	}
	ns, err := os.Open(lab.NetnsPath(pod1.Netns))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if ok, err := capture.Installed(int(ns.Fd())); !ok || err != nil {
		t.Errorf("capture in %s after ADD: %v, %v; want installed (fail closed)", pod1.Name, ok, err)
	}
	if err := dial(); err == nil {
		t.Errorf("%s: the outbound listener %s answers before the pod's IP is in the flow table", pod1.Name, outbound)
	}
	// The kubelet's probes reach the pod from ADD on: the node's probe
	// table names the address the pod's interface holds.
	out, err := exec.Command("ip", "netns", "exec", e.nodes[0].Netns, "nft", "list", "table", "inet", capture.ProbeTable).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ip daddr "+pod1.IP.String()+" ") {
		t.Errorf("node1's probe table after ADD does not name %s (%v):\n%s", pod1.IP, err, out)
	}

	e.ctl.update(t, nil) // the kubelet reports the IP
	testenv.Until(t, 10*time.Second, "the data path of node1-pod1", func() bool { return dial() == nil })
	var pods []admin.PodInfo
	adminJSON(t, e.nodes[0], "/pods", &pods)
	if len(pods) != 1 || pods[0].IP != pod1.IP.String() || pods[0].SVID == nil {
		t.Errorf("/pods: %+v", pods)
	}
	if !strings.Contains(e.agents[0].log.String(), "data path resumed") {
		t.Errorf("agent log: no 'data path resumed'")
	}
}
