package testenv

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestNeedBPFFS(t *testing.T) {
	NeedBPFFS(t)
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFS, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Errorf("after NeedBPFFS, %s is type %#x (%v), want bpffs", BPFFS, st.Type, err)
	}
}
