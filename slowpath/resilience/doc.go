// Package resilience holds the per-cluster state an L7 sidecar keeps to
// protect itself and its upstreams, in Envoy's and Istio's semantics: the
// circuit breaker (Breaker: DestinationRule connectionPool, Envoy's
// circuit_breakers DEFAULT priority), consecutive-5xx outlier detection
// (Outlier: DestinationRule outlierDetection, Envoy's outlier_detection),
// and two request headers the sidecar writes: x-request-id (RequestID)
// and x-forwarded-client-cert (XFCC).
//
// Everything here is pure computation: no I/O, no goroutines, no timers.
// Time enters through an injected clock (NewOutlier's now), and ejections
// end lazily when the clock passes their deadline, where Envoy runs an
// interval timer. Each type documents where it differs from Envoy.
//
// The state is one client pod's view, as one sidecar holds it: the proxy
// keeps one Breaker and one Outlier per (client pod, cluster), so limits
// apply per pod, exactly as with Istio sidecars (not per node or mesh).
package resilience
