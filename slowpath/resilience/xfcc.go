package resilience

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// XFCC returns the x-forwarded-client-cert element Istio's sidecar adds
// to a request it received over mTLS:
//
//	By=<by>;Hash=<sha256 of the peer's leaf certificate, hex>;Subject="";URI=<uri>
//
// by is the URI SAN of the receiving side's own certificate (its SPIFFE
// ID), uri the URI SAN of the peer's (the caller's SPIFFE ID), certDER
// the peer's leaf certificate in DER. Envoy writes the element when the
// HTTP connection manager has forward_client_cert_details APPEND_FORWARD
// and set_current_client_cert_details {subject, uri, dns}, which is what
// Istio's inbound listener sets; Envoy's keys are documented at
// https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-client-cert
// and Istio's request-routing task shows the result:
// By=spiffe://cluster.local/ns/default/sa/default;Hash=20afebed…;Subject="";URI=spiffe://cluster.local/ns/default/sa/default.
//
// Subject is always "" as in Istio: workload certificates (Istio's and
// fibmesh's CA) have an empty subject; DNS keys are absent because they
// carry no DNS SAN. A by or uri value holding one of , ; = " or a space
// is double-quoted with \" escapes, as Envoy's XFCC grammar requires
// (SPIFFE IDs never hold them). The hash is fixed per connection: the
// proxy should build the element once per connection, not per request.
func XFCC(by, uri string, certDER []byte) string {
	var buf [256]byte // on the stack: the string is the one allocation
	return string(AppendXFCC(buf[:0], by, uri, certDER))
}

// AppendXFCC appends XFCC's element to dst and returns the extended
// slice.
func AppendXFCC(dst []byte, by, uri string, certDER []byte) []byte {
	sum := sha256.Sum256(certDER)
	dst = append(dst, "By="...)
	dst = appendXFCCValue(dst, by)
	dst = append(dst, ";Hash="...)
	dst = hex.AppendEncode(dst, sum[:])
	dst = append(dst, `;Subject="";URI=`...)
	return appendXFCCValue(dst, uri)
}

func appendXFCCValue(dst []byte, v string) []byte {
	if !strings.ContainsAny(v, ",;=\" \t") {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, v[i])
	}
	return append(dst, '"')
}

// XFCCAppend is APPEND_FORWARD: it returns the request's
// x-forwarded-client-cert value with element appended after a comma, or
// element alone when the request had none. Envoy's sidecar keeps what
// the caller sent (its own proxy's elements, or anything an application
// wrote) and the last element is the one this hop vouches for.
func XFCCAppend(existing, element string) string {
	if existing == "" {
		return element
	}
	return existing + "," + element
}
