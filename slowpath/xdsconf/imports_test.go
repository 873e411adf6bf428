package xdsconf

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent links this package: it may import api/ and Envoy's types,
// never the controller (its tests read the controller's translation,
// which is fine: test imports are not linked into the agent).
func TestImportsNoController(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, p := range deps {
		if strings.HasPrefix(p, "github.com/fibmesh/fibmesh/") && p != "github.com/fibmesh/fibmesh/slowpath/xdsconf" &&
			!strings.HasPrefix(p, "github.com/fibmesh/fibmesh/api/") {
			t.Errorf("slowpath/xdsconf imports %s: only api/ is allowed", p)
		}
	}
	if len(deps) < 10 {
		t.Errorf("go list -deps printed %d packages: is it reading this package?", len(deps))
	}
}
