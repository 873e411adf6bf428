//go:build !linux

package kubetest

import (
	"os"
	"syscall"
)

// terminate is the signal that asks a process to stop.
var terminate = os.Interrupt

func sysProcAttr() *syscall.SysProcAttr { return nil }
