package l4bench

import "github.com/fibmesh/fibmesh/perf/benchlab"

// WritePKI creates the haproxy pair's throwaway PKI in dir
// (benchlab.WritePKI): a CA and two SVID-like leaf certificates, with the
// SPIFFE IDs spiffe://<trust domain>/ns/<plain ns>/sa/client-plain and
// .../server-plain; the server's also names t.ServerName for haproxy's
// host check. It returns the files' paths: ca.pem, client.pem and
// server.pem (certificate then PKCS#8 key, mode 0600).
func WritePKI(dir string, t Topology) (Files, error) {
	p, err := benchlab.WritePKI(dir, benchlab.PKISpec{TrustDomain: t.TrustDomain, Namespace: t.PlainNamespace,
		ClientSA: "client-plain", ServerSA: "server-plain", ServerDNS: t.ServerName()})
	if err != nil {
		return Files{}, err
	}
	return Files{CA: p.CA, ClientPEM: p.ClientPEM, ServerPEM: p.ServerPEM}, nil
}
