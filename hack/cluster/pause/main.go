// Command pause is the pod sandbox's process for hack/cluster's offline
// single-node cluster (no registry to pull registry.k8s.io/pause from):
// it holds the pod's namespaces, reaps the zombies it inherits as PID 1,
// and exits at SIGINT or SIGTERM, as Kubernetes' pause.c does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
