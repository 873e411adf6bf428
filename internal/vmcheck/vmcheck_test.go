package vmcheck

import "testing"

// TestNeedULPSkipsOnHost checks that a missing ULP skips the test
// outside the VM (inside, it would fail it).
func TestNeedULPSkipsOnHost(t *testing.T) {
	if InVM() {
		t.Skip("checks the behaviour outside the VM")
	}
	var skipped bool
	t.Run("missing", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		NeedULP(t, "vmcheck-no-such-ulp")
	})
	if !skipped {
		t.Error("NeedULP did not skip for a ULP the kernel lacks")
	}
}
