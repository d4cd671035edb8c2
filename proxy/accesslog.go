package proxy

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// AccessLogFormat selects the access log line format.
type AccessLogFormat uint8

// Formats: Istio's default text format, and JSON with Istio's keys (LOG-1).
const (
	AccessLogText AccessLogFormat = iota
	AccessLogJSON
)

// AccessLog writes one line per connection in Istio's default format, with
// the HTTP fields as "-" as Envoy prints them for TCP. REQUESTED_SERVER_NAME
// is the original SNI; upstream_cluster is the rewritten cluster name.
type AccessLog struct {
	mu     sync.Mutex
	w      io.Writer
	format AccessLogFormat
	buf    []byte
}

// NewAccessLog returns an AccessLog writing to w. Writes are serialized.
func NewAccessLog(w io.Writer, f AccessLogFormat) *AccessLog {
	return &AccessLog{w: w, format: f, buf: make([]byte, 0, 512)}
}

type accessEntry struct {
	start                 time.Time
	duration              time.Duration
	flags, details        string
	received, sent        int64
	upstreamHost, cluster string
	upstreamLocal         string
	downLocal, downRemote string
	sni                   string
	failureReason         string
}

func (l *AccessLog) write(e *accessEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf[:0]
	ts := e.start.UTC().Format("2006-01-02T15:04:05.000Z")
	ms := strconv.FormatInt(e.duration.Milliseconds(), 10)
	if l.format == AccessLogJSON {
		b = append(b, '{')
		b = jsonField(b, "start_time", ts, true)
		for _, k := range []string{"method", "path", "protocol"} {
			b = jsonField(b, k, "-", false)
		}
		b = append(b, `,"response_code":0`...)
		b = jsonField(b, "response_flags", e.flags, false)
		b = jsonField(b, "response_code_details", "-", false)
		b = jsonField(b, "connection_termination_details", e.details, false)
		b = jsonField(b, "upstream_transport_failure_reason", dash(e.failureReason), false)
		b = append(b, `,"bytes_received":`...)
		b = strconv.AppendInt(b, e.received, 10)
		b = append(b, `,"bytes_sent":`...)
		b = strconv.AppendInt(b, e.sent, 10)
		b = append(b, `,"duration":`...)
		b = append(b, ms...)
		for _, k := range []string{"upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority"} {
			b = jsonField(b, k, "-", false)
		}
		b = jsonField(b, "upstream_host", dash(e.upstreamHost), false)
		b = jsonField(b, "upstream_cluster", dash(e.cluster), false)
		b = jsonField(b, "upstream_local_address", dash(e.upstreamLocal), false)
		b = jsonField(b, "downstream_local_address", dash(e.downLocal), false)
		b = jsonField(b, "downstream_remote_address", dash(e.downRemote), false)
		b = jsonField(b, "requested_server_name", dash(e.sni), false)
		b = jsonField(b, "route_name", "-", false)
		b = append(b, "}\n"...)
	} else {
		// [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
		// %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
		// %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
		// "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
		// %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
		b = append(b, '[')
		b = append(b, ts...)
		b = append(b, `] "- - -" 0 `...)
		b = append(b, e.flags...)
		b = append(b, " - "...)
		b = append(b, e.details...)
		b = append(b, ` "`...)
		b = append(b, dash(e.failureReason)...)
		b = append(b, `" `...)
		b = strconv.AppendInt(b, e.received, 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, e.sent, 10)
		b = append(b, ' ')
		b = append(b, ms...)
		b = append(b, ` - "-" "-" "-" "-" "`...)
		b = append(b, dash(e.upstreamHost)...)
		b = append(b, `" `...)
		for _, s := range []string{e.cluster, e.upstreamLocal, e.downLocal, e.downRemote, e.sni} {
			b = append(b, dash(s)...)
			b = append(b, ' ')
		}
		b = append(b, "-\n"...)
	}
	l.buf = b
	_, _ = l.w.Write(b)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func jsonField(b []byte, k, v string, first bool) []byte {
	if !first {
		b = append(b, ',')
	}
	b = appendJSONString(b, k)
	b = append(b, ':')
	return appendJSONString(b, v)
}

// appendJSONString quotes s as a JSON string. An SNI is client input: control
// characters and invalid UTF-8 must not break the line.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20 || r == utf8.RuneError:
			b = append(b, '\\', 'u', '0', '0', hex[(r>>4)&0xf], hex[r&0xf])
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}
