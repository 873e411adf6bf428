package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

// Access log destinations and formats (--access-log, --access-log-format).
const (
	AccessLogOff    = "off"
	AccessLogStdout = "stdout"
	AccessLogStderr = "stderr"
	AccessLogJSON   = "json"
	AccessLogText   = "text"
	// accessLogQueue is how many lines wait for the writer before new
	// ones are dropped (and counted): a slow disk never slows a request.
	accessLogQueue = 4096
)

// accessLog writes one line per HTTP request and one per TCP connection
// (when it closes, or is refused or denied), in Envoy's JSON or text
// format. The request path only queues the entry; a goroutine formats
// and writes it. When the queue is full the entry is dropped and
// counted (fibmesh_agent_access_log_lines_total{result="dropped"}).
type accessLog struct {
	format string
	w      io.Writer
	closer io.Closer // the file, nil for stdout/stderr
	path   string    // the file's path, "" for stdout/stderr
	ch     chan logEntry
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	// reopen asks the writer to open path again (log rotation); it
	// answers on the channel it is given.
	reopen chan chan error
	// lines counts by result: written, dropped, failed.
	lines                   *prometheus.CounterVec
	written, dropped, ioErr prometheus.Counter
}

// logEntry is a request or a connection, with its metric labels (the
// workloads and service as the metrics say them).
type logEntry struct {
	req    *proxy.RequestInfo
	conn   *proxy.ConnInfo
	labels []string
	flags  string
}

// openAccessLog opens the destination: "off" (or "") gives nil, "stdout",
// "stderr", or a file path (created, appended to). format is "json"
// (default) or "text".
func openAccessLog(dest, format string) (*accessLog, error) {
	switch format {
	case "":
		format = AccessLogJSON
	case AccessLogJSON, AccessLogText:
	default:
		return nil, fmt.Errorf("agent: --access-log-format %q: want %s or %s", format, AccessLogJSON, AccessLogText)
	}
	l := &accessLog{format: format}
	switch dest {
	case "", AccessLogOff:
		return nil, nil
	case AccessLogStdout:
		l.w = os.Stdout
	case AccessLogStderr:
		l.w = os.Stderr
	default:
		f, err := openFile(dest)
		if err != nil {
			return nil, fmt.Errorf("agent: --access-log %s: %w (want off, stdout, stderr or a file the agent can write)", dest, err)
		}
		l.w, l.closer = f, f
	}
	nl := newAccessLog(l.w, l.closer, format)
	if l.closer != nil {
		nl.path = dest
	}
	return nl, nil
}

// openFile opens an access log file for appending.
func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// Reopen closes the access log's file and opens its path again, so that
// a log rotated by renaming goes on in a new file (Envoy reopens its
// access logs on SIGUSR1 too). Lines queued meanwhile wait; none is
// lost. A log to stdout or stderr, or none, has nothing to reopen.
func (l *accessLog) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	answer := make(chan error, 1)
	select {
	case l.reopen <- answer:
	case <-l.done:
		return nil
	}
	return <-answer
}

// newAccessLog starts a log writing to w.
func newAccessLog(w io.Writer, closer io.Closer, format string) *accessLog {
	l := &accessLog{format: format, w: w, closer: closer, ch: make(chan logEntry, accessLogQueue),
		stop: make(chan struct{}), done: make(chan struct{}), reopen: make(chan chan error),
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fibmesh_agent_access_log_lines_total",
			Help: "Access log lines by result: written, dropped (the queue of 4096 lines was full: the writer could not keep up), failed (the write failed)."}, []string{"result"})}
	l.written, l.dropped, l.ioErr = l.lines.WithLabelValues("written"), l.lines.WithLabelValues("dropped"), l.lines.WithLabelValues("failed")
	go l.run()
	return l
}

// request queues an HTTP request's line.
func (l *accessLog) request(ri *proxy.RequestInfo, labels []string) {
	c := *ri
	l.queue(logEntry{req: &c, labels: labels})
}

// conn queues a TCP connection's line; flags are Envoy's response flags
// of a refused or denied one ("" otherwise).
func (l *accessLog) conn(ci *proxy.ConnInfo, labels []string, flags string) {
	c := *ci
	l.queue(logEntry{conn: &c, labels: labels, flags: flags})
}

func (l *accessLog) queue(e logEntry) {
	select {
	case l.ch <- e:
	default:
		l.dropped.Inc()
	}
}

// run writes the queued lines, flushing whenever the queue is empty.
func (l *accessLog) run() {
	defer close(l.done)
	bw := bufio.NewWriterSize(l.w, 64<<10)
	var line []byte
	write := func(e logEntry) {
		line = l.format1(line[:0], e)
		if _, err := bw.Write(line); err != nil {
			l.ioErr.Inc()
			return
		}
		l.written.Inc()
	}
	for {
		select {
		case e := <-l.ch:
			write(e)
			for n := len(l.ch); n > 0; n-- {
				write(<-l.ch)
			}
			if err := bw.Flush(); err != nil {
				l.ioErr.Inc()
			}
		case answer := <-l.reopen:
			err := bw.Flush()
			f, oerr := openFile(l.path)
			if oerr != nil {
				// Keep writing to the old file rather than nowhere.
				answer <- fmt.Errorf("agent: reopen access log %s: %w", l.path, oerr)
				continue
			}
			if l.closer != nil {
				err = errors.Join(err, l.closer.Close())
			}
			l.w, l.closer = f, f
			bw.Reset(f)
			answer <- err
		case <-l.stop:
			for n := len(l.ch); n > 0; n-- {
				write(<-l.ch)
			}
			bw.Flush()
			return
		}
	}
}

// close writes what is queued and closes the file.
func (l *accessLog) close() error {
	if l == nil {
		return nil
	}
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		if l.closer != nil {
			err = l.closer.Close()
		}
	})
	return err
}

func (l *accessLog) format1(b []byte, e logEntry) []byte {
	r := entryRecord(e)
	if l.format == AccessLogText {
		return r.appendText(b)
	}
	return r.appendJSON(b)
}

// record is one access log line's fields, by Envoy's (Istio's default
// JSON access log format) names; fibmesh adds who the two sides were.
// An empty string is a field not known: null in JSON, "-" in text.
type record struct {
	StartTime                      string
	Method                         string
	Path                           string
	Protocol                       string
	ResponseCode                   int
	ResponseFlags                  string
	ResponseCodeDetails            string
	ConnectionTerminationDetails   string
	UpstreamTransportFailureReason string
	BytesReceived                  int64
	BytesSent                      int64
	Duration                       int64
	XForwardedFor                  string
	UserAgent                      string
	RequestID                      string
	Authority                      string
	UpstreamHost                   string
	UpstreamCluster                string
	DownstreamLocalAddress         string
	DownstreamRemoteAddress        string
	RequestedServerName            string
	RouteName                      string
	DownstreamPeerURISAN           string
	UpstreamPeerURISAN             string
	GRPCStatus                     string
	// fibmesh's: the side that logged, its pod, and the two workloads
	// and the service as the metrics label them.
	Reporter                 string
	Direction                string
	Pod                      string
	SourceWorkload           string
	SourceNamespace          string
	SourcePrincipal          string
	DestinationWorkload      string
	DestinationNamespace     string
	DestinationPrincipal     string
	DestinationService       string
	ConnectionSecurityPolicy string
	Offload                  string
}

// Positions in istioLabels of the fields a record copies.
const (
	lblReporter     = 0
	lblSrcWorkload  = 1
	lblSrcNamespace = 2
	lblSrcPrincipal = 3
	lblDstWorkload  = 9
	lblDstNamespace = 10
	lblDstPrincipal = 11
	lblDstService   = 17
	lblSecurity     = 22
)

// envoyTime is Envoy's %START_TIME% in UTC, with milliseconds.
const envoyTime = "2006-01-02T15:04:05.000Z"

func addr(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// entryRecord fills a record from a request or a connection.
func entryRecord(e logEntry) record {
	var r record
	if len(e.labels) > lblSecurity {
		lv := func(i int) string {
			if v := e.labels[i]; v != unknown {
				return v
			}
			return ""
		}
		r.Reporter, r.SourceWorkload, r.SourceNamespace, r.SourcePrincipal = e.labels[lblReporter], lv(lblSrcWorkload), lv(lblSrcNamespace), lv(lblSrcPrincipal)
		r.DestinationWorkload, r.DestinationNamespace, r.DestinationPrincipal = lv(lblDstWorkload), lv(lblDstNamespace), lv(lblDstPrincipal)
		r.DestinationService, r.ConnectionSecurityPolicy = lv(lblDstService), lv(lblSecurity)
	}
	if ri := e.req; ri != nil {
		r.StartTime = ri.Start.UTC().Format(envoyTime)
		r.Method, r.Path, r.Protocol = ri.Method, ri.Path, ri.Protocol
		r.ResponseCode, r.ResponseFlags = ri.Code, ri.Flags
		if ri.Policy != "" {
			r.ResponseCodeDetails = "rbac_access_denied_matched_policy[" + ri.Policy + "]"
		}
		if ri.Err != nil {
			r.UpstreamTransportFailureReason = ri.Err.Error()
		}
		r.BytesReceived, r.BytesSent, r.Duration = ri.BytesReceived, ri.BytesSent, ri.Duration.Milliseconds()
		r.XForwardedFor, r.UserAgent, r.RequestID, r.Authority = ri.ForwardedFor, ri.UserAgent, ri.RequestID, ri.Authority
		r.UpstreamHost, r.UpstreamCluster = addr(ri.Upstream), ri.Cluster
		r.DownstreamLocalAddress, r.DownstreamRemoteAddress = addr(ri.Destination), addr(ri.Source)
		r.RouteName, r.GRPCStatus = ri.Route, ri.GRPCStatus
		if ri.Direction == proxy.DirectionInbound {
			r.DownstreamPeerURISAN = ri.Peer
		} else {
			r.UpstreamPeerURISAN = ri.Peer
		}
		r.Direction, r.Pod = ri.Direction, ri.Pod
		return r
	}
	c := e.conn
	r.StartTime = c.Start.UTC().Format(envoyTime)
	r.ResponseFlags = e.flags
	end := c.End
	if end.IsZero() {
		end = time.Now()
	}
	r.Duration = end.Sub(c.Start).Milliseconds()
	r.ConnectionTerminationDetails = c.Reason
	// Envoy's bytes_received are the downstream's, bytes_sent what went
	// back to it.
	r.BytesReceived, r.BytesSent = int64(c.BytesOut), int64(c.BytesIn)
	if c.Direction == proxy.DirectionInbound {
		r.BytesReceived, r.BytesSent = int64(c.BytesIn), int64(c.BytesOut)
		r.DownstreamPeerURISAN = c.PeerIdentity
	} else {
		r.UpstreamPeerURISAN = c.PeerIdentity
	}
	r.UpstreamHost, r.UpstreamCluster = addr(c.Upstream), c.Cluster
	r.DownstreamLocalAddress, r.DownstreamRemoteAddress = addr(c.Destination), addr(c.Source)
	r.RequestedServerName, r.Offload = c.ServerName, c.Offload
	r.Direction, r.Pod = c.Direction, c.Pod
	return r
}

// appendJSON writes the record as one JSON object and a newline, its
// unknown strings as null (as Envoy's JSON format does).
func (r *record) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	key := func(k string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
	}
	str := func(k, v string) {
		key(k)
		if v == "" {
			b = append(b, "null"...)
			return
		}
		q, _ := json.Marshal(v) // a string always marshals
		b = append(b, q...)
	}
	num := func(k string, v int64) {
		key(k)
		b = strconv.AppendInt(b, v, 10)
	}
	str("start_time", r.StartTime)
	str("method", r.Method)
	str("path", r.Path)
	str("protocol", r.Protocol)
	num("response_code", int64(r.ResponseCode))
	str("response_flags", orDash(r.ResponseFlags))
	str("response_code_details", r.ResponseCodeDetails)
	str("connection_termination_details", r.ConnectionTerminationDetails)
	str("upstream_transport_failure_reason", r.UpstreamTransportFailureReason)
	num("bytes_received", r.BytesReceived)
	num("bytes_sent", r.BytesSent)
	num("duration", r.Duration)
	str("x_forwarded_for", r.XForwardedFor)
	str("user_agent", r.UserAgent)
	str("request_id", r.RequestID)
	str("authority", r.Authority)
	str("upstream_host", r.UpstreamHost)
	str("upstream_cluster", r.UpstreamCluster)
	str("downstream_local_address", r.DownstreamLocalAddress)
	str("downstream_remote_address", r.DownstreamRemoteAddress)
	str("requested_server_name", r.RequestedServerName)
	str("route_name", r.RouteName)
	str("downstream_peer_uri_san", r.DownstreamPeerURISAN)
	str("upstream_peer_uri_san", r.UpstreamPeerURISAN)
	str("grpc_status", r.GRPCStatus)
	str("reporter", r.Reporter)
	str("direction", r.Direction)
	str("pod", r.Pod)
	str("source_workload", r.SourceWorkload)
	str("source_namespace", r.SourceNamespace)
	str("source_principal", r.SourcePrincipal)
	str("destination_workload", r.DestinationWorkload)
	str("destination_namespace", r.DestinationNamespace)
	str("destination_principal", r.DestinationPrincipal)
	str("destination_service", r.DestinationService)
	str("connection_security_policy", r.ConnectionSecurityPolicy)
	str("offload", r.Offload)
	return append(b, '}', '\n')
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// appendText writes the record in the shape of Istio's default text
// format (Envoy's default plus the termination details, cluster and
// addresses):
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//
// followed by fibmesh's reporter, the source and destination workloads
// (namespace/name) and the peer's SPIFFE ID. Unknown fields are "-";
// unquoted fields have their spaces replaced by '_', quoted ones their
// quotes and control characters escaped.
func (r *record) appendText(b []byte) []byte {
	word := func(s string) {
		b = append(b, ' ')
		if s == "" {
			b = append(b, '-')
			return
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c == ' ':
				b = append(b, '_')
			case c < 0x20 || c == 0x7f || c == '"':
				b = append(b, '?')
			default:
				b = append(b, c)
			}
		}
	}
	quoted := func(s string) {
		b = append(b, ' ', '"')
		b = appendEscaped(b, orDash(s))
		b = append(b, '"')
	}
	b = append(b, '[')
	b = append(b, r.StartTime...)
	b = append(b, "] \""...)
	b = appendEscaped(b, orDash(r.Method))
	b = append(b, ' ')
	b = appendEscaped(b, orDash(r.Path))
	b = append(b, ' ')
	b = appendEscaped(b, orDash(r.Protocol))
	b = append(b, '"')
	word(strconv.Itoa(r.ResponseCode))
	word(orDash(r.ResponseFlags))
	word(r.ResponseCodeDetails)
	word(r.ConnectionTerminationDetails)
	quoted(r.UpstreamTransportFailureReason)
	word(strconv.FormatInt(r.BytesReceived, 10))
	word(strconv.FormatInt(r.BytesSent, 10))
	word(strconv.FormatInt(r.Duration, 10))
	word("") // upstream service time
	quoted(r.XForwardedFor)
	quoted(r.UserAgent)
	quoted(r.RequestID)
	quoted(r.Authority)
	quoted(r.UpstreamHost)
	word(r.UpstreamCluster)
	word("") // upstream local address
	word(r.DownstreamLocalAddress)
	word(r.DownstreamRemoteAddress)
	word(r.RequestedServerName)
	word(r.RouteName)
	word(r.Reporter)
	word(nsName(r.SourceNamespace, r.SourceWorkload))
	word(nsName(r.DestinationNamespace, r.DestinationWorkload))
	peer := r.DownstreamPeerURISAN
	if peer == "" {
		peer = r.UpstreamPeerURISAN
	}
	word(peer)
	return append(b, '\n')
}

func nsName(ns, name string) string {
	if ns == "" && name == "" {
		return ""
	}
	return orDash(ns) + "/" + orDash(name)
}

// appendEscaped appends s with '"', '\' and control characters escaped,
// so that a quoted field stays one field on one line.
func appendEscaped(b []byte, s string) []byte {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '"' || r == '\\' }) {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, fmt.Sprintf("\\x%02x", c)...)
		default:
			b = append(b, c)
		}
	}
	return b
}
