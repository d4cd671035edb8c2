package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// userAgent is what Envoy's HTTP health checker sends, so that sidecar
// access logs and app filters that know it keep working.
const userAgent = "Envoy/HC"

// maxBody caps what is read of an HTTP answer, and maxReceive what a TCP
// check buffers while looking for its expected bytes.
const (
	maxBody    = 4 << 10
	maxReceive = 64 << 10
)

// outcome classifies one check like Envoy's HealthCheckFailureType.
type outcome uint8

const (
	passed outcome = iota
	// failActive is a bad answer (status, NOT_SERVING): it fails a healthy
	// endpoint at once unless retriable.
	failActive
	// failNetwork is a connect or I/O error: it counts toward
	// FailureThreshold.
	failNetwork
	// failTimeout is no answer within the timeout (NETWORK_TIMEOUT).
	failTimeout
)

// result is what one check found.
type result struct {
	outcome   outcome
	retriable bool // failActive only: counts toward the threshold
	degraded  bool // passed only: x-envoy-degraded
	reason    string
}

func (r result) immediate() bool { return r.outcome == failActive && !r.retriable }

// prober runs one kind of check against one target. A prober never runs two
// checks at once.
type prober interface {
	check(ctx context.Context) result
	close()
}

// transports are the HTTP clients shared by every HTTP check of a Checker:
// one keeps a connection per target, one closes it after each check.
type transports struct {
	reuse, once *http.Client
}

func newTransports(tlsConf *tls.Config) *transports {
	if tlsConf == nil {
		// The kubelet does not verify HTTPS probe certificates either: a
		// check learns a status, it sends no secret.
		tlsConf = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // see above
	}
	mk := func(keepAlive bool) *http.Client {
		d := &net.Dialer{}
		tr := &http.Transport{
			Proxy:                  nil, // never an HTTP_PROXY from the environment
			DialContext:            d.DialContext,
			TLSClientConfig:        tlsConf.Clone(),
			DisableKeepAlives:      !keepAlive,
			DisableCompression:     true,
			MaxIdleConnsPerHost:    1,
			IdleConnTimeout:        2 * time.Minute,
			MaxResponseHeaderBytes: 16 << 10,
		}
		return &http.Client{
			Transport: tr,
			// Envoy does not follow redirects: a 3xx is not 200.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &transports{reuse: mk(true), once: mk(false)}
}

func (t *transports) close() {
	for _, c := range []*http.Client{t.reuse, t.once} {
		c.CloseIdleConnections()
	}
}

// newProber builds the prober for a defaulted config and a target address.
func newProber(c *CheckConfig, addr netip.AddrPort, tr *transports) prober {
	switch c.method() {
	case methodTCP:
		send, _ := hex.DecodeString(c.TCPSocket.Send)
		p := &tcpProber{addr: addr.String(), send: send}
		for _, r := range c.TCPSocket.Receive {
			b, _ := hex.DecodeString(r)
			p.receive = append(p.receive, b)
		}
		return p
	case methodGRPC:
		return &grpcProber{addr: addr.String(), service: c.GRPC.Service, reuse: *c.ReuseConnection}
	default:
		h := c.HTTPGet
		p := &httpProber{
			url:       strings.ToLower(h.Scheme) + "://" + addr.String() + h.Path,
			host:      h.Host,
			header:    http.Header{"User-Agent": {userAgent}},
			expected:  h.ExpectedStatuses,
			retriable: h.RetriableStatuses,
			client:    tr.once,
		}
		if *c.ReuseConnection {
			p.client = tr.reuse
		}
		for _, hd := range h.HTTPHeaders {
			if strings.EqualFold(hd.Name, "Host") {
				p.host = hd.Value
				continue
			}
			p.header.Set(hd.Name, hd.Value)
		}
		return p
	}
}

// httpProber is Envoy's HTTP health checker with Kubernetes' fields.
type httpProber struct {
	client              *http.Client
	url, host           string
	header              http.Header
	expected, retriable []StatusRange
}

func (p *httpProber) check(ctx context.Context) result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, http.NoBody)
	if err != nil {
		return result{outcome: failActive, reason: "bad request: " + err.Error()}
	}
	req.Header = p.header.Clone()
	if p.host != "" {
		req.Host = p.host
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return netFailure(ctx, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	reason := "status " + strconv.Itoa(resp.StatusCode)
	if resp.Header.Get("x-envoy-immediate-health-check-fail") != "" {
		return result{outcome: failActive, reason: reason + " with x-envoy-immediate-health-check-fail"}
	}
	switch {
	case inRanges(resp.StatusCode, p.expected):
		return result{outcome: passed, degraded: resp.Header.Get("x-envoy-degraded") != "", reason: reason}
	case inRanges(resp.StatusCode, p.retriable):
		return result{outcome: failActive, retriable: true, reason: reason}
	default:
		return result{outcome: failActive, reason: reason}
	}
}

func (p *httpProber) close() {}

func inRanges(code int, rs []StatusRange) bool {
	for _, r := range rs {
		if code >= r.Start && code < r.End {
			return true
		}
	}
	return false
}

// netFailure classifies a transport error: a timeout of the check's context
// is failTimeout, anything else failNetwork, with a short reason.
func netFailure(ctx context.Context, err error) result {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return result{outcome: failTimeout, reason: "timeout"}
	}
	return result{outcome: failNetwork, reason: netReason(err)}
}

func netReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by peer"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		// Drop the "Get \"http://...\": dial tcp ...:" wrappers.
		return op.Err.Error()
	}
	return err.Error()
}

// tcpProber is Envoy's TCP health checker: connect, optionally send and
// look for the expected blocks.
type tcpProber struct {
	addr    string
	send    []byte
	receive [][]byte
}

func (p *tcpProber) check(ctx context.Context) result {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return netFailure(ctx, err)
	}
	defer conn.Close()
	if len(p.send) == 0 {
		return result{outcome: passed, reason: "connected"}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(p.send); err != nil {
		return netFailure(ctx, err)
	}
	if len(p.receive) == 0 {
		return result{outcome: passed, reason: "sent"}
	}
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxReceive {
				return result{outcome: failNetwork, reason: "expected bytes not found in " + strconv.Itoa(len(buf)) + " bytes"}
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if matchInOrder(buf, p.receive) {
			return result{outcome: passed, reason: "expected bytes received"}
		}
		if err != nil {
			if r := netFailure(ctx, err); r.outcome == failTimeout {
				r.reason = "timeout waiting for expected bytes"
				return r
			}
			return result{outcome: failNetwork, reason: "closed before the expected bytes: " + netReason(err)}
		}
	}
}

func (p *tcpProber) close() {}

// matchInOrder is Envoy's fuzzy TCP receive match: every block is found in
// data, in order, not necessarily contiguous.
func matchInOrder(data []byte, blocks [][]byte) bool {
	for _, b := range blocks {
		i := bytes.Index(data, b)
		if i < 0 {
			return false
		}
		data = data[i+len(b):]
	}
	return true
}

// grpcProber calls grpc.health.v1.Health/Check.
type grpcProber struct {
	addr, service string
	reuse         bool

	mu sync.Mutex
	cc *grpc.ClientConn
}

func (p *grpcProber) conn() (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cc != nil {
		return p.cc, nil
	}
	var d net.Dialer
	cc, err := grpc.NewClient("passthrough:///"+p.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithNoProxy(),
		grpc.WithUserAgent(userAgent),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }),
	)
	if err != nil {
		return nil, err
	}
	p.cc = cc
	return cc, nil
}

func (p *grpcProber) check(ctx context.Context) result {
	cc, err := p.conn()
	if err != nil {
		return result{outcome: failNetwork, reason: "grpc client: " + err.Error()}
	}
	if !p.reuse {
		defer p.close()
	}
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: p.service})
	if err != nil {
		st := status.Convert(err)
		switch {
		case st.Code() == codes.DeadlineExceeded || ctx.Err() != nil:
			return result{outcome: failTimeout, reason: "timeout"}
		case st.Code() == codes.Unavailable:
			return result{outcome: failNetwork, reason: "grpc Unavailable: " + st.Message()}
		default:
			return result{outcome: failActive, reason: "grpc " + st.Code().String() + ": " + st.Message()}
		}
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return result{outcome: failActive, reason: "grpc status " + s.String()}
	}
	return result{outcome: passed, reason: "grpc status SERVING"}
}

func (p *grpcProber) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cc != nil {
		_ = p.cc.Close()
		p.cc = nil
	}
}
