package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent and the controller share only api/: the agent binary links
// no controller package (a controller package would drag client-go and
// the model into every node).
func TestAgentImportsNoController(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/fibmesh/fibmesh/cmd/fibmesh-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/fibmesh/fibmesh/controller/") || p == "github.com/fibmesh/fibmesh/controller" {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("cmd/fibmesh-agent links controller packages %v: the agent may import api/ only (move what both need there)", bad)
	}
	if !strings.Contains(string(out), "github.com/fibmesh/fibmesh/agent/svid") {
		t.Error("go list output does not list agent/svid: is the test reading the right package?")
	}
}
