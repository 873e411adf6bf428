package kubetest

import "syscall"

// terminate is the signal that asks a process to stop.
var terminate = syscall.SIGTERM

// sysProcAttr kills etcd and kube-apiserver with the test process (a
// test binary killed by go test's -timeout runs no cleanups) and keeps
// them out of the terminal's process group (a ^C reaches the test, which
// stops them in order).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
