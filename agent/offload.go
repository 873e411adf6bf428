package agent

import "github.com/fibmesh/fibmesh/slowpath/proxy"

// offloadConfig is the proxy's socket fast path: kTLS and the kernel byte
// path where the kernel has them (unless --offload=off), the XDP flow
// entries of offloaded connections (flows.go), and the NIC kTLS offload
// negotiation (nictls.go).
func (a *Agent) offloadConfig() proxy.Offload {
	return proxy.Offload{
		Disabled:    a.cfg.NoOffload,
		NICTLS:      a.nic.peer,
		LocalNICTLS: a.nic.local,
		Flows:       a.openFlowTable(),
	}
}
