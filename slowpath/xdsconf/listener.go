package xdsconf

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

// DefaultIdleTimeout is tcp_proxy's idle timeout when idle_timeout is
// unset (Envoy's default).
const DefaultIdleTimeout = time.Hour

// compileListener validates and converts a Listener. HTTP chains that
// name an RDS route configuration are left unresolved (HTTPChain has
// RouteConfig set, DefaultCluster empty): the Store joins them with RDS
// when it builds a snapshot.
func compileListener(l *listenerv3.Listener, path string) (*Listener, error) {
	if err := onlyFields(l, path, "name", "address", "filter_chains", "default_filter_chain", "listener_filters",
		"traffic_direction", "listener_filters_timeout", "continue_on_listener_filters_timeout",
		"per_connection_buffer_limit_bytes", "stat_prefix", "use_original_dst", "access_log", "metadata"); err != nil {
		return nil, err
	}
	switch l.GetName() {
	case OutboundListener, InboundListener, InboundPlaintextListener:
	default:
		return nil, errorf(path+".name", "the slow path serves only the listeners %q, %q and %q (docs/xds.md)",
			OutboundListener, InboundListener, InboundPlaintextListener)
	}
	for i, lf := range l.GetListenerFilters() {
		p := fmt.Sprintf("%s.listener_filters[%d] %s", path, i, lf.GetName())
		// filter_disabled: the controller keeps tls_inspector off the
		// ports without SNI chains; the proxy sniffs a ClientHello only
		// on ports with SNI chains anyway, the same set.
		if err := onlyFields(lf, p, "name", "typed_config", "filter_disabled"); err != nil {
			return nil, err
		}
		m, err := unpack(lf.GetTypedConfig(), p+".typed_config")
		if err != nil {
			return nil, err
		}
		switch m.(type) {
		case *originaldstv3.OriginalDst, *tlsinspectorv3.TlsInspector, *httpinspectorv3.HttpInspector:
			// The agent always has the original destination and sniffs
			// TLS and HTTP itself.
		default:
			return nil, errorf(p, "listener filter %s is not supported (the slow path knows original_dst, tls_inspector, http_inspector)", m.ProtoReflect().Descriptor().FullName())
		}
	}
	out := &Listener{Name: l.GetName(), Chains: make([]*FilterChain, 0, len(l.GetFilterChains()))}
	for i, fc := range l.GetFilterChains() {
		c, err := compileChain(fc, fmt.Sprintf("%s.filter_chains[%d] %q", path, i, fc.GetName()), true)
		if err != nil {
			return nil, err
		}
		out.Chains = append(out.Chains, c)
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		c, err := compileChain(d, fmt.Sprintf("%s.default_filter_chain %q", path, d.GetName()), false)
		if err != nil {
			return nil, err
		}
		out.Default = c
	}
	ix, err := buildIndex(out.Chains, true)
	if err != nil {
		return nil, errorf(path+".filter_chains", "%v", err)
	}
	out.idx.Store(ix)
	return out, nil
}

// compileChain converts one filter chain; match is false for the
// default chain, which has none.
func compileChain(fc *listenerv3.FilterChain, path string, match bool) (*FilterChain, error) {
	if err := onlyFields(fc, path, "name", "filter_chain_match", "filters", "transport_socket", "metadata", "transport_socket_connect_timeout"); err != nil {
		return nil, err
	}
	c := &FilterChain{Name: fc.GetName()}
	if m := fc.GetFilterChainMatch(); m != nil {
		if !match {
			return nil, errorf(path+".filter_chain_match", "the default filter chain has no match")
		}
		if err := compileChainMatch(m, c, path+".filter_chain_match"); err != nil {
			return nil, err
		}
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		tls, err := downstreamTLS(ts, path+".transport_socket")
		if err != nil {
			return nil, err
		}
		c.TLS = tls
	}
	if err := compileFilters(fc.GetFilters(), c, path+".filters"); err != nil {
		return nil, err
	}
	return c, nil
}

func compileChainMatch(m *listenerv3.FilterChainMatch, c *FilterChain, path string) error {
	if err := onlyFields(m, path, "destination_port", "prefix_ranges", "server_names", "source_prefix_ranges", "transport_protocol"); err != nil {
		return err
	}
	if m.DestinationPort != nil {
		p := m.GetDestinationPort().GetValue()
		if p == 0 || p > 65535 {
			return errorf(path+".destination_port", "%d is not a port", p)
		}
		c.Port = p
	}
	var err error
	if c.Prefixes, err = prefixes(m.GetPrefixRanges(), path+".prefix_ranges"); err != nil {
		return err
	}
	if c.SourcePrefixes, err = prefixes(m.GetSourcePrefixRanges(), path+".source_prefix_ranges"); err != nil {
		return err
	}
	for i, n := range m.GetServerNames() {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == "" || strings.Contains(strings.TrimPrefix(n, "*."), "*") || (strings.HasPrefix(n, "*") && !strings.HasPrefix(n, "*.")) {
			return errorf(fmt.Sprintf("%s.server_names[%d]", path, i), "%q is not a server name (a wildcard is a leading \"*.\")", m.GetServerNames()[i])
		}
		if !slices.Contains(c.ServerNames, n) {
			c.ServerNames = append(c.ServerNames, n)
		}
	}
	switch tp := m.GetTransportProtocol(); tp {
	case "":
	case "tls":
		// A sniffed server name implies TLS; without server names the
		// slow path cannot tell TLS apart.
		if len(c.ServerNames) == 0 {
			return errorf(path+".transport_protocol", "\"tls\" is honoured only with server_names")
		}
	default:
		return errorf(path+".transport_protocol", "%q is not supported", tp)
	}
	return nil
}

// downstreamTLS converts a listener transport socket: raw_buffer (nil)
// or a DownstreamTlsContext whose certificate is a workload's SVID over
// SDS (named by its SPIFFE ID) validated against the trust bundle.
func downstreamTLS(ts *corev3.TransportSocket, path string) (*DownstreamTLS, error) {
	if err := onlyFields(ts, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	m, err := unpack(ts.GetTypedConfig(), path+".typed_config")
	if err != nil {
		return nil, err
	}
	switch ctx := m.(type) {
	case *rawbufferv3.RawBuffer:
		return nil, nil
	case *tlsv3.DownstreamTlsContext:
		p := path + ".typed_config"
		if err := onlyFields(ctx, p, "common_tls_context", "require_client_certificate", "disable_stateless_session_resumption"); err != nil {
			return nil, err
		}
		cc := ctx.GetCommonTlsContext()
		if cc == nil {
			return nil, errorf(p+".common_tls_context", "missing: the workload's certificate is required")
		}
		p += ".common_tls_context"
		if err := onlyFields(cc, p, "tls_certificate_sds_secret_configs", "validation_context_sds_secret_config", "combined_validation_context"); err != nil {
			return nil, err
		}
		certs := cc.GetTlsCertificateSdsSecretConfigs()
		if len(certs) != 1 {
			return nil, errorf(p+".tls_certificate_sds_secret_configs", "want exactly one SDS secret (the workload's SPIFFE ID), got %d", len(certs))
		}
		if err := onlyFields(certs[0], p+".tls_certificate_sds_secret_configs[0]", "name", "sds_config"); err != nil {
			return nil, err
		}
		id, err := spiffeid.FromString(certs[0].GetName())
		if err != nil {
			return nil, errorf(p+".tls_certificate_sds_secret_configs[0].name", "%q is not a workload's SPIFFE ID: %v", certs[0].GetName(), err)
		}
		if err := rootCAValidation(cc, p, false); err != nil {
			return nil, err
		}
		return &DownstreamTLS{Identity: id, RequireClientCert: ctx.GetRequireClientCertificate().GetValue()}, nil
	}
	return nil, errorf(path, "transport socket %s is not supported (the slow path knows tls and raw_buffer)", m.ProtoReflect().Descriptor().FullName())
}

// rootCAValidation checks that a TLS context validates peers against
// the trust bundle (SDS ROOTCA), the only one the agent holds. SAN
// matchers are the caller's (sans true: upstream).
func rootCAValidation(cc *tlsv3.CommonTlsContext, path string, sans bool) error {
	var sds *tlsv3.SdsSecretConfig
	switch v := cc.GetValidationContextType().(type) {
	case nil:
		return errorf(path, "no validation context: peers must be verified against SDS %q", xdsapi.RootCASecret)
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		sds = v.ValidationContextSdsSecretConfig
		path += ".validation_context_sds_secret_config"
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		cv := v.CombinedValidationContext
		path += ".combined_validation_context"
		if err := onlyFields(cv, path, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return err
		}
		if dv := cv.GetDefaultValidationContext(); dv != nil {
			allowed := []string{}
			if sans {
				allowed = append(allowed, "match_typed_subject_alt_names", "match_subject_alt_names")
			}
			if err := onlyFields(dv, path+".default_validation_context", allowed...); err != nil {
				return err
			}
		}
		sds = cv.GetValidationContextSdsSecretConfig()
		path += ".validation_context_sds_secret_config"
	default:
		return errorf(path, "validation context %s is not supported", oneofName(cc, "validation_context_type"))
	}
	if sds == nil {
		return errorf(path, "missing: peers must be verified against SDS %q", xdsapi.RootCASecret)
	}
	if err := onlyFields(sds, path, "name", "sds_config"); err != nil {
		return err
	}
	if sds.GetName() != xdsapi.RootCASecret {
		return errorf(path+".name", "%q: the agent verifies peers only against the trust bundle %q", sds.GetName(), xdsapi.RootCASecret)
	}
	return nil
}

// compileFilters converts a chain's network filters: any number of
// network RBAC filters, then exactly one terminal filter (tcp_proxy or
// http_connection_manager), last.
//
// The chain's RBAC (FilterChain.RBAC) joins the network RBAC filters
// and the HTTP ones as L4 sees them; an HTTP chain's per-request RBAC
// (HTTPChain.RBAC) joins the same network filters and the HTTP ones
// compiled for requests.
func compileFilters(fs []*listenerv3.Filter, c *FilterChain, path string) error {
	var az, azReq rbacAcc
	for i, f := range fs {
		p := fmt.Sprintf("%s[%d] %s", path, i, f.GetName())
		if err := onlyFields(f, p, "name", "typed_config"); err != nil {
			return err
		}
		m, err := unpack(f.GetTypedConfig(), p+".typed_config")
		if err != nil {
			return err
		}
		p += ".typed_config"
		if c.TCP != nil || c.HTTP != nil {
			return errorf(p, "follows the terminal filter")
		}
		switch cfg := m.(type) {
		case *netrbacv3.RBAC:
			if err := onlyFields(cfg, p, "rules", "stat_prefix", "shadow_rules", "shadow_rules_stat_prefix", "enforcement_type"); err != nil {
				return err
			}
			if cfg.GetEnforcementType() != netrbacv3.RBAC_ONE_TIME_ON_FIRST_BYTE {
				return errorf(p+".enforcement_type", "%s is not supported: the slow path decides once per connection", cfg.GetEnforcementType())
			}
			if err := az.add(cfg.GetRules(), rbacNetwork, p+".rules"); err != nil {
				return err
			}
			if err := azReq.add(cfg.GetRules(), rbacNetwork, p+".rules"); err != nil {
				return err
			}
		case *tcpproxyv3.TcpProxy:
			t, err := compileTCPProxy(cfg, p)
			if err != nil {
				return err
			}
			c.TCP, c.StatPrefix = t, cfg.GetStatPrefix()
		case *hcmv3.HttpConnectionManager:
			h, err := compileHCM(cfg, &az, &azReq, p)
			if err != nil {
				return err
			}
			c.HTTP, c.StatPrefix = h, cfg.GetStatPrefix()
		default:
			return errorf(p, "network filter %s is not supported (the slow path knows rbac, tcp_proxy and http_connection_manager)", m.ProtoReflect().Descriptor().FullName())
		}
	}
	if c.TCP == nil && c.HTTP == nil {
		return errorf(path, "no tcp_proxy or http_connection_manager: the chain has nowhere to send a connection")
	}
	c.RBAC = az.rbac()
	if c.HTTP != nil {
		c.HTTP.RBAC = azReq.rbac()
	}
	return nil
}

// rbacAcc collects the RBAC filters of a chain, network and HTTP, into
// one RBAC. DENY filters merge (any match denies); two ALLOW filters
// (both must allow) have no single-filter form and are refused.
type rbacAcc struct {
	deny      []*Policy
	hasDeny   bool
	allow     *RBACFilter
	allowPath string
}

// add compiles one RBAC filter's rules; nil rules enforce nothing (as
// in Envoy).
func (a *rbacAcc) add(rules *rbacv3.RBAC, mode rbacMode, path string) error {
	if rules == nil {
		return nil
	}
	f, deny, err := compileRBAC(rules, mode, path)
	if err != nil {
		return err
	}
	if deny {
		a.hasDeny = true
		a.deny = append(a.deny, f.Policies...)
		return nil
	}
	if a.allow != nil {
		return errorf(path, "a second ALLOW RBAC filter in one chain (the first is %s): the slow path has one ALLOW filter per chain", a.allowPath)
	}
	a.allow, a.allowPath = f, path
	return nil
}

func (a *rbacAcc) rbac() *RBAC {
	if !a.hasDeny && a.allow == nil {
		return nil
	}
	r := &RBAC{Allow: a.allow}
	if a.hasDeny {
		r.Deny = &RBACFilter{Policies: a.deny}
	}
	return r
}

// compileTCPProxy converts a tcp_proxy filter.
func compileTCPProxy(t *tcpproxyv3.TcpProxy, path string) (*TCPProxy, error) {
	if err := onlyFields(t, path, "stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log", "max_connect_attempts"); err != nil {
		return nil, err
	}
	out := &TCPProxy{IdleTimeout: DefaultIdleTimeout}
	switch cs := t.GetClusterSpecifier().(type) {
	case *tcpproxyv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, errorf(path+".cluster", "must not be empty")
		}
		out.Clusters = []WeightedCluster{{Name: cs.Cluster, Weight: 1}}
	case *tcpproxyv3.TcpProxy_WeightedClusters:
		p := path + ".weighted_clusters"
		if err := onlyFields(cs.WeightedClusters, p, "clusters"); err != nil {
			return nil, err
		}
		for i, wc := range cs.WeightedClusters.GetClusters() {
			pi := fmt.Sprintf("%s.clusters[%d]", p, i)
			if err := onlyFields(wc, pi, "name", "weight"); err != nil {
				return nil, err
			}
			if wc.GetName() == "" {
				return nil, errorf(pi+".name", "must not be empty")
			}
			if wc.GetWeight() == 0 {
				return nil, errorf(pi+".weight", "must be at least 1")
			}
			out.Clusters = append(out.Clusters, WeightedCluster{Name: wc.GetName(), Weight: wc.GetWeight()})
		}
		if len(out.Clusters) == 0 {
			return nil, errorf(p+".clusters", "must not be empty")
		}
	default:
		return nil, errorf(path, "no cluster or weighted_clusters")
	}
	if t.IdleTimeout != nil {
		if err := t.GetIdleTimeout().CheckValid(); err != nil {
			return nil, errorf(path+".idle_timeout", "%v", err)
		}
		d := t.GetIdleTimeout().AsDuration()
		switch {
		case d < 0:
			return nil, errorf(path+".idle_timeout", "%s is negative", d)
		case d == 0:
			d = NoIdleTimeout // Envoy: 0s disables the timeout
		}
		out.IdleTimeout = d
	}
	out.prepare()
	return out, nil
}

// compileHCM converts an HTTP connection manager as the slow path sees
// it at L4: where bytes go (the route configuration's catch-all route)
// and its HTTP RBAC filters, which join the chain's RBAC as L4 sees
// them (az) and as requests do (azReq).
func compileHCM(h *hcmv3.HttpConnectionManager, az, azReq *rbacAcc, path string) (*HTTPChain, error) {
	if err := onlyFields(h, path, "stat_prefix", "codec_type", "rds", "route_config", "http_filters",
		// Accepted and left to L7: they change nothing at L4.
		"common_http_protocol_options", "http_protocol_options", "http2_protocol_options", "server_name",
		"stream_idle_timeout", "request_timeout", "request_headers_timeout", "drain_timeout", "delayed_close_timeout",
		"access_log", "use_remote_address", "xff_num_trusted_hops", "skip_xff_append", "via", "generate_request_id",
		"preserve_external_request_id", "forward_client_cert_details", "set_current_client_cert_details",
		"normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "upgrade_configs", "tracing",
		"max_request_headers_kb", "add_user_agent"); err != nil {
		return nil, err
	}
	out := &HTTPChain{}
	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if err := onlyFields(rs.Rds, path+".rds", "config_source", "route_config_name"); err != nil {
			return nil, err
		}
		if rs.Rds.GetRouteConfigName() == "" {
			return nil, errorf(path+".rds.route_config_name", "must not be empty")
		}
		if cs := rs.Rds.GetConfigSource(); cs != nil && cs.GetAds() == nil {
			return nil, errorf(path+".rds.config_source", "the agent reads routes only over ADS")
		}
		out.RouteConfig = rs.Rds.GetRouteConfigName()
	case *hcmv3.HttpConnectionManager_RouteConfig:
		d, err := compileRoute(rs.RouteConfig, path+".route_config")
		if err != nil {
			return nil, err
		}
		if out.routes, err = compileRouteConfig(rs.RouteConfig, path+".route_config"); err != nil {
			return nil, err
		}
		out.DefaultCluster, out.Clusters = d.cluster, d.clusters
		out.prepare()
	default:
		return nil, errorf(path, "route specifier %s is not supported (use rds or route_config)", oneofName(h, "route_specifier"))
	}
	fs := h.GetHttpFilters()
	router := false
	for i, f := range fs {
		p := fmt.Sprintf("%s.http_filters[%d] %s", path, i, f.GetName())
		if err := onlyFields(f, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		m, err := unpack(f.GetTypedConfig(), p+".typed_config")
		if err != nil {
			return nil, err
		}
		p += ".typed_config"
		switch cfg := m.(type) {
		case *httprbacv3.RBAC:
			if err := onlyFields(cfg, p, "rules", "rules_stat_prefix", "shadow_rules", "shadow_rules_stat_prefix", "track_per_rule_stats"); err != nil {
				return nil, err
			}
			if err := az.add(cfg.GetRules(), rbacHTTPAtL4, p+".rules"); err != nil {
				return nil, err
			}
			if err := azReq.add(cfg.GetRules(), rbacHTTP, p+".rules"); err != nil {
				return nil, err
			}
		case *faultv3.HTTPFault:
			// Faults act on requests: nothing to do at L4.
		case *routerv3.Router:
			if i != len(fs)-1 {
				return nil, errorf(p, "the router must be the last HTTP filter")
			}
			router = true
		default:
			return nil, errorf(p, "HTTP filter %s is not supported (the slow path knows rbac, fault and router)", m.ProtoReflect().Descriptor().FullName())
		}
	}
	if !router {
		return nil, errorf(path+".http_filters", "must end with envoy.filters.http.router")
	}
	return out, nil
}
