package admin

import (
	"net/http"
	"net/netip"
)

// Service is one service VIP:port/protocol the node's XDP FIB
// load-balances (/services), as its maps hold it.
type Service struct {
	VIP   netip.Addr `json:"vip"`
	Port  uint16     `json:"port"`
	Proto string     `json:"proto"`
	// Hostname is the service's name in the flow tables ("" for a table
	// the FIB holds that the tables no longer name).
	Hostname string `json:"hostname,omitempty"`
	// Slots is the size of the service's Maglev table (a prime); 0: no
	// ready backend, and the FIB answers new flows with ICMP port
	// unreachable (UDP) or a TCP RST.
	Slots int `json:"slots"`
	// Backends are the backends of the table, by address, then any
	// backend that left it but still has flows on this node.
	Backends []ServiceBackend `json:"backends"`
	// Flows is the number of the service's live flows on this node: its
	// forward flow entries, whichever backend they go to.
	Flows int `json:"flows"`
	// Pending says why the FIB does not hold the table the flow tables
	// ask for yet (it is retried).
	Pending string `json:"pending,omitempty"`
}

// ServiceBackend is one backend of a Service.
type ServiceBackend struct {
	Addr netip.AddrPort `json:"addr"`
	// Node runs the backend, as the flow tables say.
	Node string `json:"node,omitempty"`
	// Weight is its relative share in the flow tables (FDS weight 0
	// counts as 1); 0 for a backend that left the service.
	Weight uint32 `json:"weight"`
	// Slots is how many slots of the Maglev table it holds, Share
	// Slots / the service's Slots: the fraction of new flows it gets.
	Slots int     `json:"slots"`
	Share float64 `json:"share"`
	// Flows is the number of live flows this node's FIB sends to it
	// (forward flow entries whose DNAT names it).
	Flows int `json:"flows"`
}

// ServiceSource is a Source that also lists the service VIPs of its
// FIB. Handler serves /services when its Source is one; a separate
// interface, so that Sources without a FIB of services need not answer.
type ServiceSource interface {
	Services() ([]Service, error)
}

// handleServices adds GET /services to mux when src is a ServiceSource.
func handleServices(mux *http.ServeMux, src Source) {
	ss, ok := src.(ServiceSource)
	if !ok {
		return
	}
	mux.HandleFunc("GET /services", func(w http.ResponseWriter, r *http.Request) {
		svcs, err := ss.Services()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if svcs == nil {
			svcs = []Service{}
		}
		writeJSON(w, svcs)
	})
}
