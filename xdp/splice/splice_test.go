//go:build linux

package splice

import (
	"testing"
	"unsafe"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestLoad checks that the running kernel's verifier accepts the program.
func TestLoad(t *testing.T) {
	testenv.NeedRoot(t)
	var objs SpliceObjects
	if err := LoadSpliceObjects(&objs, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	objs.Close()
}

// TestSizes pins the generated mirrors to the C layouts in prog.c.
func TestSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"struct peer", unsafe.Sizeof(SplicePeer{}), 16},
		{"struct sock_stats", unsafe.Sizeof(SpliceSockStats{}), 32},
		{"struct splice_stat", unsafe.Sizeof(SpliceSpliceStat{}), 16},
	} {
		if c.got != c.want {
			t.Errorf("%s is %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}
