package demo

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

const testPrefix = "fm-dt-"

// TestRun runs the demo with the real binaries on a lab of its own and
// checks what it claims: every pod enrolled, both nodes' FIBs hold the
// routes, the traffic crossed both nodes in XDP (redirects up, kernel
// forwarding flat), and the edits removed the client's route from both
// FIBs and put it back.
func TestRun(t *testing.T) {
	testenv.NeedRoot(t)
	bin, stateDir := t.TempDir(), t.TempDir()
	if err := testenv.BuildCommands(bin, "cmd/fibmesh-lab", "cmd/fibmesh-controller", "cmd/fibmesh-agent", "cmd/fibctl"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kubelet.Stop(stateDir, time.Minute); err != nil {
			t.Errorf("stop the kubelet: %v", err)
		}
		if t.Failed() {
			for _, f := range []string{kubelet.LogFile, "controller.log", "agent-node1.log", "agent-node2.log"} {
				b, _ := os.ReadFile(filepath.Join(stateDir, f))
				t.Logf("%s:\n%s", f, b)
			}
		}
		if err := lab.Cleanup(testPrefix); err != nil {
			t.Errorf("lab.Cleanup: %v", err)
		}
		if pins, _ := filepath.Glob("/sys/fs/bpf/fibmesh/" + testPrefix + "*"); len(pins) > 0 {
			t.Errorf("pins left behind: %v", pins)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	err := Run(ctx, Options{BinDir: bin, Manifests: "../../examples", Prefix: testPrefix, StateDir: stateDir,
		Self: filepath.Join(bin, "fibmesh-lab"), Out: &buf})
	t.Logf("demo output:\n%s", buf.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	o := buf.String()
	for _, want := range []string{
		"enrolled as spiffe://cluster.local/ns/production/sa/reviews",
		`"Service": "client"`,
		"node1: route to 10.200.1.11/32 gone",
		"node2: route to 10.200.1.11/32 gone",
		"node1: route to 10.200.1.11/32 back",
		"node2: route to 10.200.1.11/32 back",
		"with x-canary-user: true: v1: 0, v2: 200",
		"RBAC: access denied (403)",
	} {
		if !strings.Contains(o, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	// The 90/10 split, within the 99.9% binomial bounds of 200 draws.
	var v1, v2 int
	i := strings.Index(o, "    v1: ")
	if i < 0 {
		t.Errorf("the output has no canary split")
	} else if _, err := fmt.Sscanf(o[i:], "    v1: %d, v2: %d", &v1, &v2); err != nil || v1+v2 != 200 || v2 < 6 || v2 > 34 {
		t.Errorf("canary split v1 %d, v2 %d (%v): want 200 answers, 6..34 from v2", v1, v2, err)
	}
	rows := 0
	sc := bufio.NewScanner(strings.NewReader(o))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || !strings.HasPrefix(f[0], "node") {
			continue
		}
		redirected, err1 := strconv.Atoi(f[1])
		forwarded, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		rows++
		if redirected == 0 || forwarded != 0 {
			t.Errorf("%s: %d redirected in XDP, %d forwarded by the kernel; want some and none", f[0], redirected, forwarded)
		}
	}
	if rows != 2 {
		t.Errorf("counter table has %d node rows, want 2", rows)
	}
	// The lab stays up, the client back.
	st, err := kubelet.Get(ctx, stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pods) != 6 || !st.Ready {
		t.Errorf("after the demo: %d pods, ready %v (%v); want the examples' 6, ready", len(st.Pods), st.Ready, st.NotReady)
	}
}
