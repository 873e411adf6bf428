package analyze

import "strings"

// serviceEntryAddresses reports each port of a ServiceEntry without
// addresses whose protocol is TCP or unset (IST0134, Warning), as
// Istio's ProtocolAddressesAnalyzer: a TCP connection carries no host
// name, so the mesh can tell which host it is for only by its
// destination address.
//
// Unlike Istio, addresses an Istio control plane allocated
// (status.addresses) do not count, and there is no mesh setting that
// turns the check off (Istio's DNS proxy auto-allocation,
// ISTIO_META_DNS_AUTO_ALLOCATE): fibmesh allocates no addresses, and
// its model and DNS serve spec.addresses only.
func serviceEntryAddresses(ix *index) []Finding {
	var fs []Finding
	for _, se := range ix.ses {
		if len(se.Obj.Spec.GetAddresses()) > 0 {
			continue
		}
		allocated := ""
		if len(se.Obj.Status.GetAddresses()) > 0 {
			allocated = "; status.addresses, which an Istio control plane allocated, are not used by fibmesh"
		}
		for i, p := range se.Obj.Spec.GetPorts() {
			proto := p.GetProtocol()
			if proto != "" && !strings.EqualFold(proto, "TCP") {
				continue
			}
			what := "no protocol"
			if proto != "" {
				what = "protocol " + proto
			}
			fs = append(fs, finding(ServiceEntryAddressesRequired, se.Resource,
				"ServiceEntry addresses are required for this protocol (spec.ports[%d]: port %d has %s and spec.addresses is empty%s): "+
					"a TCP connection names no host, so it is told apart only by its destination address; "+
					"set spec.addresses, or declare the port's protocol (HTTP, HTTPS, TLS) if it carries one",
				i, p.GetNumber(), what, allocated))
		}
	}
	return fs
}
