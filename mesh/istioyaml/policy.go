package istioyaml

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// parts are the components of a TrafficPolicy that Istio merges as wholes
// (MergeSubsetTrafficPolicy in pilot/pkg/networking/util): a subset's
// component replaces the destination-level one, a field inside it is never
// merged. nil means unset. TLS is the fourth component; Istio never applies
// it to SNI-DNAT clusters, so it is not kept.
type parts struct {
	lb *mesh.LoadBalancer
	od *mesh.OutlierDetection
	cp *connPool
}

// connPool is connectionPool.tcp, the only part of connectionPool a TCP
// passthrough uses.
type connPool struct {
	connectTimeout, idleTimeout, maxConnDuration time.Duration
	maxConns                                     int32
}

// policy is one validated TrafficPolicy: destination or subset level.
type policy struct {
	parts
	ports []portParts // portLevelSettings, first match wins as in Istio
}

type portParts struct {
	port uint16
	parts
}

// forPort returns the components that apply to port: the port-level entry
// replaces every component wholesale ("default values will be applied to
// fields omitted in port-level traffic policies", destination_rule.proto).
func (p *policy) forPort(port uint16) (parts, bool) {
	for _, pp := range p.ports {
		if pp.port == port {
			return pp.parts, true
		}
	}
	return p.parts, false
}

// mergePolicy is Istio's MergeSubsetTrafficPolicy: destination-level
// components (after the port-level override) overridden by the subset's
// set components, or by all of them when the subset has a port-level entry
// for this port.
func mergePolicy(dest, sub *policy, port uint16) parts {
	var m parts
	if dest != nil {
		m, _ = dest.forPort(port)
	}
	if sub == nil {
		return m
	}
	s, hasPort := sub.forPort(port)
	if dest == nil {
		return s
	}
	if s.lb != nil || hasPort {
		m.lb = s.lb
	}
	if s.od != nil || hasPort {
		m.od = s.od
	}
	if s.cp != nil || hasPort {
		m.cp = s.cp
	}
	return m
}

// trafficPolicy converts merged components to the snapshot's form.
func (p parts) trafficPolicy() mesh.TrafficPolicy {
	var tp mesh.TrafficPolicy
	if p.lb != nil {
		tp.LoadBalancer = *p.lb
	}
	tp.OutlierDetection = p.od
	if p.cp != nil {
		tp.ConnectTimeout = p.cp.connectTimeout
		tp.IdleTimeout = p.cp.idleTimeout
		tp.MaxConnections = p.cp.maxConns
		tp.MaxConnectionDuration = p.cp.maxConnDuration
	}
	return tp
}

// problems collects validation messages for one resource, each prefixed
// with the field path.
type problems struct {
	errs, warns []string
}

func (pr *problems) errf(path, format string, args ...any) {
	pr.errs = append(pr.errs, path+": "+fmt.Sprintf(format, args...))
}

func (pr *problems) warnf(path, format string, args ...any) {
	pr.warns = append(pr.warns, path+": "+fmt.Sprintf(format, args...))
}

// compilePolicy validates a TrafficPolicy at path; nil in gives nil.
func compilePolicy(pr *problems, path string, in *trafficPolicy) *policy {
	if in == nil {
		return nil
	}
	p := &policy{parts: compileParts(pr, path, in.LoadBalancer, in.ConnectionPool, in.OutlierDetection)}
	if in.Tunnel != nil {
		pr.warnf(path+".tunnel", "not applied to SNI-DNAT clusters; ignored")
	}
	if in.ProxyProtocol != nil {
		pr.warnf(path+".proxyProtocol", "upstream PROXY protocol is not supported; ignored")
	}
	seen := map[uint16]bool{}
	for i, pl := range in.PortLevelSettings {
		pp := fmt.Sprintf("%s.portLevelSettings[%d]", path, i)
		if pl.Port == nil {
			pr.errf(pp+".port", "is required")
			continue
		}
		if pl.Port.Number < 1 || pl.Port.Number > math.MaxUint16 {
			pr.errf(pp+".port.number", "%d is out of range 1-65535", pl.Port.Number)
			continue
		}
		n := uint16(pl.Port.Number)
		if seen[n] {
			pr.errf(pp+".port.number", "port %d is listed twice", n)
			continue
		}
		seen[n] = true
		p.ports = append(p.ports, portParts{port: n, parts: compileParts(pr, pp, pl.LoadBalancer, pl.ConnectionPool, pl.OutlierDetection)})
	}
	return p
}

func compileParts(pr *problems, path string, lb *loadBalancerSettings, cp *connectionPoolSettings, od *outlierDetection) parts {
	return parts{
		lb: compileLB(pr, path+".loadBalancer", lb),
		od: compileOD(pr, path+".outlierDetection", od),
		cp: compileCP(pr, path+".connectionPool", cp),
	}
}

var simpleLB = map[string]mesh.LBSimple{
	"UNSPECIFIED":   mesh.LBUnspecified,
	"LEAST_REQUEST": mesh.LBLeastRequest,
	"LEAST_CONN":    mesh.LBLeastRequest, // deprecated alias, as istiod maps it
	"ROUND_ROBIN":   mesh.LBRoundRobin,
	"RANDOM":        mesh.LBRandom,
	"PASSTHROUGH":   mesh.LBPassthrough,
}

func compileLB(pr *problems, path string, in *loadBalancerSettings) *mesh.LoadBalancer {
	if in == nil {
		return nil
	}
	out := &mesh.LoadBalancer{}
	if in.Simple != nil && in.ConsistentHash != nil {
		pr.errf(path, "simple and consistentHash are mutually exclusive")
	}
	if in.Simple != nil {
		s, ok := simpleLB[*in.Simple]
		switch {
		case !ok:
			pr.errf(path+".simple", "unknown value %q (want LEAST_REQUEST, ROUND_ROBIN, RANDOM, PASSTHROUGH or UNSPECIFIED)", *in.Simple)
		case *in.Simple == "LEAST_CONN":
			pr.warnf(path+".simple", "LEAST_CONN is deprecated; using LEAST_REQUEST")
		case s == mesh.LBPassthrough:
			pr.warnf(path+".simple", "PASSTHROUGH forwards to the original destination, which an SNI-DNAT cluster does not have")
		}
		out.Simple = s
	}
	if ch := in.ConsistentHash; ch != nil {
		out.ConsistentHash = compileHash(pr, path+".consistentHash", ch)
	}
	if in.LocalityLbSetting != nil {
		out.Locality = compileLocality(pr, path+".localityLbSetting", in.LocalityLbSetting)
	}
	if in.WarmupDurationSecs != nil || in.Warmup != nil {
		pr.warnf(path, "slow-start warmup is not supported; ignored")
	}
	return out
}

func compileHash(pr *problems, path string, ch *consistentHashLB) *mesh.ConsistentHash {
	out := &mesh.ConsistentHash{}
	keys := 0
	if ch.HTTPHeaderName != nil {
		keys++
	}
	if ch.HTTPCookie != nil {
		keys++
	}
	if ch.HTTPQueryParameterName != nil {
		keys++
	}
	if ch.UseSourceIP != nil {
		keys++
		out.UseSourceIP = *ch.UseSourceIP
	}
	if keys > 1 {
		pr.errf(path, "only one hash key (httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName) may be set")
	}
	if ch.HTTPHeaderName != nil || ch.HTTPCookie != nil || ch.HTTPQueryParameterName != nil {
		// Istio then sets no hash policy on tcp_proxy: the ring is used
		// with no key, so the pick is effectively random.
		pr.warnf(path, "HTTP hash keys do not exist on a TLS passthrough; connections are not hashed (use useSourceIp)")
	}
	if ch.RingHash != nil && ch.Maglev != nil {
		pr.errf(path, "ringHash and maglev are mutually exclusive")
	}
	if ch.MinimumRingSize != nil {
		if *ch.MinimumRingSize < 0 {
			pr.errf(path+".minimumRingSize", "must not be negative")
		} else {
			out.MinimumRingSize = uint64(*ch.MinimumRingSize)
		}
	}
	if ch.RingHash != nil {
		if ch.RingHash.MinimumRingSize < 0 {
			pr.errf(path+".ringHash.minimumRingSize", "must not be negative")
		} else {
			out.MinimumRingSize = uint64(ch.RingHash.MinimumRingSize)
		}
	}
	if ch.Maglev != nil {
		out.Maglev = true
		t := ch.Maglev.TableSize
		switch {
		case t < 0:
			pr.errf(path+".maglev.tableSize", "must not be negative")
		case t != 0 && (t >= 5000011 || !isPrime(t)):
			pr.errf(path+".maglev.tableSize", "%d must be a prime number below 5000011", t)
		default:
			out.TableSize = uint64(t)
		}
	}
	if ch.HTTPHeaderRegexRewrite != nil {
		pr.warnf(path+".httpHeaderRegexRewrite", "HTTP only; ignored")
	}
	return out
}

func isPrime(n int64) bool {
	if n < 2 {
		return false
	}
	for d := int64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func compileLocality(pr *problems, path string, in *localityLbSetting) *mesh.LocalityLB {
	out := &mesh.LocalityLB{FailoverPriority: append([]string(nil), in.FailoverPriority...)}
	if in.Enabled != nil {
		v := *in.Enabled
		out.Enabled = &v
	}
	if len(in.Distribute) > 0 && len(in.Failover) > 0 {
		pr.errf(path, "distribute and failover cannot both be set")
	}
	for i, d := range in.Distribute {
		dp := fmt.Sprintf("%s.distribute[%d]", path, i)
		if d.From == "" {
			pr.errf(dp+".from", "is required")
		}
		var sum int64
		to := make(map[string]uint32, len(d.To))
		for _, k := range sortedKeys(d.To) {
			w := d.To[k]
			if w < 0 || w > 100 {
				pr.errf(dp+".to", "weight %d for %q is out of range 0-100", w, k)
				continue
			}
			sum += w
			to[k] = uint32(w)
		}
		if sum != 100 {
			pr.errf(dp+".to", "weights sum to %d, want 100", sum)
		}
		out.Distribute = append(out.Distribute, mesh.Distribute{From: d.From, To: to})
	}
	for i, f := range in.Failover {
		fp := fmt.Sprintf("%s.failover[%d]", path, i)
		switch {
		case f.From == "" || f.To == "":
			pr.errf(fp, "from and to are required")
		case f.From == f.To:
			pr.errf(fp, "from and to are the same region %q", f.From)
		case strings.Contains(f.From, "/") || strings.Contains(f.To, "/"):
			pr.errf(fp, "failover is between regions only (no \"/\")")
		}
		out.Failover = append(out.Failover, mesh.Failover{From: f.From, To: f.To})
	}
	return out
}

func compileCP(pr *problems, path string, in *connectionPoolSettings) *connPool {
	if in == nil {
		return nil
	}
	out := &connPool{}
	t := in.TCP
	if t == nil {
		return out
	}
	tp := path + ".tcp"
	if t.MaxConnections != nil {
		switch v := *t.MaxConnections; {
		case v < 0:
			pr.errf(tp+".maxConnections", "must not be negative")
		case v > math.MaxInt32:
			pr.errf(tp+".maxConnections", "%d is too large", v)
		default:
			out.maxConns = int32(v)
		}
	}
	out.connectTimeout = duration(pr, tp+".connectTimeout", t.ConnectTimeout, time.Millisecond)
	out.maxConnDuration = duration(pr, tp+".maxConnectionDuration", t.MaxConnectionDuration, time.Millisecond)
	if t.IdleTimeout != nil {
		n := len(pr.errs)
		out.idleTimeout = duration(pr, tp+".idleTimeout", t.IdleTimeout, 0)
		if out.idleTimeout == 0 && len(pr.errs) == n {
			pr.warnf(tp+".idleTimeout", "0s (never time out) is not supported; the gateway default of 1h applies")
		}
	}
	return out
}

func compileOD(pr *problems, path string, in *outlierDetection) *mesh.OutlierDetection {
	if in == nil {
		return nil
	}
	out := &mesh.OutlierDetection{SplitExternalLocalOrigin: in.SplitExternalLocalOriginErrors}
	out.ConsecutiveErrors = count(pr, path+".consecutiveErrors", in.ConsecutiveErrors)
	out.Consecutive5xxErrors = count(pr, path+".consecutive5xxErrors", in.Consecutive5xxErrors)
	out.ConsecutiveGatewayErrors = count(pr, path+".consecutiveGatewayErrors", in.ConsecutiveGatewayErrors)
	out.ConsecutiveLocalOriginErrors = count(pr, path+".consecutiveLocalOriginFailures", in.ConsecutiveLocalOriginFailures)
	out.Interval = duration(pr, path+".interval", in.Interval, time.Millisecond)
	out.BaseEjectionTime = duration(pr, path+".baseEjectionTime", in.BaseEjectionTime, time.Millisecond)
	out.MaxEjectionTime = duration(pr, path+".maxEjectionTime", in.MaxEjectionTime, time.Millisecond)
	out.MaxEjectionPercent = percent(pr, path+".maxEjectionPercent", in.MaxEjectionPercent)
	out.MinHealthPercent = percent(pr, path+".minHealthPercent", in.MinHealthPercent)
	return out
}

func count(pr *problems, path string, v *int64) *uint32 {
	if v == nil {
		return nil
	}
	if *v < 0 || *v > math.MaxUint32 {
		pr.errf(path, "%d is out of range (0 to 2^32-1)", *v)
		return nil
	}
	u := uint32(*v)
	return &u
}

func percent(pr *problems, path string, v *int64) *int32 {
	if v == nil {
		return nil
	}
	if *v < 0 || *v > 100 {
		pr.errf(path, "%d is out of range 0-100", *v)
		return nil
	}
	p := int32(*v)
	return &p
}

// duration parses an Istio duration ("10s", "1m", "100ms", "1.5s"). min is
// Istio's lower bound for the field ("MUST BE >=1ms"); 0 allows 0s.
func duration(pr *problems, path string, s *string, min time.Duration) time.Duration {
	if s == nil {
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSpace(*s))
	switch {
	case err != nil:
		pr.errf(path, "invalid duration %q (want a number with a unit: 100ms, 10s, 1m, 1h)", *s)
	case d < 0:
		pr.errf(path, "duration %s must not be negative", *s)
	case d < min:
		pr.errf(path, "duration %s must be at least %s", *s, min)
	default:
		return d
	}
	return 0
}

// sortedKeys returns m's keys in order, for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
