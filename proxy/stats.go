package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eastwest-gw/eastwest/mesh"
)

// clusterStats are Envoy's per-cluster counters for one cluster. They are
// created on a cluster's first connection and dropped after a quiet period
// (MET-3), so 10,000 services do not mean 10,000 idle series sets.
type clusterStats struct {
	name                                string
	total, active, connectFail, timeout atomic.Int64
	exceeded, noneHealthy, idle, maxDur atomic.Int64
	overflow                            atomic.Int64
	rx, tx                              atomic.Int64
	connectMS, lengthMS                 histogram
	lastUsed                            atomic.Int64 // unix nanoseconds
	dead                                atomic.Bool
}

// istioKey is the part of Istio's label set that varies per connection; the
// rest is constant ("source", "unknown", "tcp") or derived from the cluster.
type istioKey struct {
	cluster  *mesh.Cluster
	workload string
	ns       string
	app      string
	version  string
	canonSvc string
	canonRev string
	flags    string
}

type istioStats struct {
	key                        istioKey
	opened, closed, sent, recv atomic.Int64
	active                     atomic.Int64
	lastUsed                   atomic.Int64
	dead                       atomic.Bool
}

// histogram is a fixed-bucket histogram updated without locks.
type histogram struct {
	counts [len(msBuckets) + 1]atomic.Uint64
	sumUS  atomic.Uint64 // microseconds, so the sum stays an integer
}

var msBuckets = [...]float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 60000, 3600000}

func (h *histogram) observe(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	i := 0
	for i < len(msBuckets) && ms > msBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumUS.Add(uint64(d.Microseconds()))
}

func (h *histogram) metric(desc *prometheus.Desc, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(msBuckets))
	var cum uint64
	for i, b := range msBuckets {
		cum += h.counts[i].Load()
		buckets[b] = cum
	}
	cum += h.counts[len(msBuckets)].Load()
	return prometheus.MustNewConstHistogram(desc, cum, float64(h.sumUS.Load())/1000, buckets, labels...)
}

// statsSet holds the lazily created series and exports them at scrape time.
type statsSet struct {
	clusters  sync.Map // cluster name -> *clusterStats
	istio     sync.Map // istioKey -> *istioStats
	clusterID string
}

func (ss *statsSet) cluster(name string) *clusterStats {
	for {
		v, ok := ss.clusters.Load(name)
		if !ok {
			v, _ = ss.clusters.LoadOrStore(name, &clusterStats{name: name})
		}
		cs := v.(*clusterStats)
		cs.lastUsed.Store(time.Now().UnixNano())
		if !cs.dead.Load() {
			return cs
		}
	}
}

func (ss *statsSet) istioFor(c *mesh.Cluster, ep *mesh.Endpoint, flags string) *istioStats {
	const u = "unknown"
	k := istioKey{cluster: c, workload: u, ns: u, app: u, version: u, canonSvc: u, canonRev: "latest", flags: flags}
	if ep != nil {
		k.workload = orUnknown(ep.Workload)
		k.ns = orUnknown(ep.Namespace)
		k.app = labelOr(ep.Labels, "app", u)
		k.version = labelOr(ep.Labels, "version", u)
		k.canonSvc = labelOr(ep.Labels, "service.istio.io/canonical-name", k.app)
		k.canonRev = labelOr(ep.Labels, "service.istio.io/canonical-revision", labelOr(ep.Labels, "version", "latest"))
	}
	for {
		v, ok := ss.istio.Load(k)
		if !ok {
			v, _ = ss.istio.LoadOrStore(k, &istioStats{key: k})
		}
		is := v.(*istioStats)
		is.lastUsed.Store(time.Now().UnixNano())
		if !is.dead.Load() {
			return is
		}
	}
}

// expire drops series that have had no connection open for quiet.
func (ss *statsSet) expire(quiet time.Duration) {
	cutoff := time.Now().Add(-quiet).UnixNano()
	ss.clusters.Range(func(k, v any) bool {
		cs := v.(*clusterStats)
		if cs.active.Load() == 0 && cs.lastUsed.Load() < cutoff {
			cs.dead.Store(true)
			if cs.active.Load() == 0 && cs.lastUsed.Load() < cutoff {
				ss.clusters.CompareAndDelete(k, v)
			} else {
				cs.dead.Store(false)
			}
		}
		return true
	})
	ss.istio.Range(func(k, v any) bool {
		is := v.(*istioStats)
		if is.active.Load() == 0 && is.lastUsed.Load() < cutoff {
			is.dead.Store(true)
			if is.active.Load() == 0 && is.lastUsed.Load() < cutoff {
				ss.istio.CompareAndDelete(k, v)
			} else {
				is.dead.Store(false)
			}
		}
		return true
	})
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func labelOr(m map[string]string, k, def string) string {
	if v, ok := m[k]; ok && v != "" {
		return v
	}
	return def
}

func serviceName(host string) string {
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			return host[:i]
		}
	}
	return host
}

// istioLabels are Istio's standard TCP metric labels (SEMANTICS 6.3).
var istioLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_cluster", "source_canonical_service", "source_canonical_revision",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_cluster", "destination_canonical_service", "destination_canonical_revision",
	"request_protocol", "response_flags", "connection_security_policy",
}

var (
	cl             = []string{"cluster_name"}
	descUpTotal    = prometheus.NewDesc("envoy_cluster_upstream_cx_total", "Upstream connections established.", cl, nil)
	descUpActive   = prometheus.NewDesc("envoy_cluster_upstream_cx_active", "Upstream connections open.", cl, nil)
	descUpFail     = prometheus.NewDesc("envoy_cluster_upstream_cx_connect_fail", "Upstream connect attempts that failed.", cl, nil)
	descUpTimeout  = prometheus.NewDesc("envoy_cluster_upstream_cx_connect_timeout", "Upstream connect attempts that timed out.", cl, nil)
	descUpExceeded = prometheus.NewDesc("envoy_cluster_upstream_cx_connect_attempts_exceeded", "Client connections closed after every connect attempt failed.", cl, nil)
	descUpNone     = prometheus.NewDesc("envoy_cluster_upstream_cx_none_healthy", "Client connections closed because no endpoint was routable.", cl, nil)
	descUpRx       = prometheus.NewDesc("envoy_cluster_upstream_cx_rx_bytes_total", "Bytes received from upstream, counted while connections are open.", cl, nil)
	descUpTx       = prometheus.NewDesc("envoy_cluster_upstream_cx_tx_bytes_total", "Bytes sent to upstream, counted while connections are open.", cl, nil)
	descUpIdle     = prometheus.NewDesc("envoy_cluster_upstream_cx_idle_timeout", "Connections closed by the idle timeout.", cl, nil)
	descUpOverflow = prometheus.NewDesc("envoy_cluster_upstream_cx_overflow", "Client connections refused by the cluster's maxConnections (circuit breaker).", cl, nil)
	descUpMaxDur   = prometheus.NewDesc("envoy_cluster_upstream_cx_max_duration_reached", "Connections closed at maxConnectionDuration.", cl, nil)
	descUpConnMS   = prometheus.NewDesc("envoy_cluster_upstream_cx_connect_ms", "Upstream connect time, milliseconds.", cl, nil)
	descUpLenMS    = prometheus.NewDesc("envoy_cluster_upstream_cx_length_ms", "Upstream connection length, milliseconds.", cl, nil)

	descTCPOpened = prometheus.NewDesc("istio_tcp_connections_opened_total", "Istio: TCP connections opened.", istioLabels, nil)
	descTCPClosed = prometheus.NewDesc("istio_tcp_connections_closed_total", "Istio: TCP connections closed.", istioLabels, nil)
	descTCPSent   = prometheus.NewDesc("istio_tcp_sent_bytes_total", "Istio: bytes sent during response (to the client), counted while connections are open.", istioLabels, nil)
	descTCPRecv   = prometheus.NewDesc("istio_tcp_received_bytes_total", "Istio: bytes received during request (from the client), counted while connections are open.", istioLabels, nil)
)

// Describe sends nothing: the series set changes as clusters come and go,
// which makes this an unchecked collector.
func (ss *statsSet) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (ss *statsSet) Collect(ch chan<- prometheus.Metric) {
	ss.clusters.Range(func(_, v any) bool {
		cs := v.(*clusterStats)
		counter := func(d *prometheus.Desc, a *atomic.Int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(a.Load()), cs.name)
		}
		counter(descUpTotal, &cs.total)
		ch <- prometheus.MustNewConstMetric(descUpActive, prometheus.GaugeValue, float64(cs.active.Load()), cs.name)
		counter(descUpFail, &cs.connectFail)
		counter(descUpTimeout, &cs.timeout)
		counter(descUpExceeded, &cs.exceeded)
		counter(descUpNone, &cs.noneHealthy)
		counter(descUpRx, &cs.rx)
		counter(descUpTx, &cs.tx)
		counter(descUpIdle, &cs.idle)
		counter(descUpMaxDur, &cs.maxDur)
		counter(descUpOverflow, &cs.overflow)
		ch <- cs.connectMS.metric(descUpConnMS, cs.name)
		ch <- cs.lengthMS.metric(descUpLenMS, cs.name)
		return true
	})
	var v [23]string
	ss.istio.Range(func(_, val any) bool {
		is := val.(*istioStats)
		ss.istioValues(&v, &is.key)
		ch <- prometheus.MustNewConstMetric(descTCPOpened, prometheus.CounterValue, float64(is.opened.Load()), v[:]...)
		ch <- prometheus.MustNewConstMetric(descTCPClosed, prometheus.CounterValue, float64(is.closed.Load()), v[:]...)
		ch <- prometheus.MustNewConstMetric(descTCPSent, prometheus.CounterValue, float64(is.sent.Load()), v[:]...)
		ch <- prometheus.MustNewConstMetric(descTCPRecv, prometheus.CounterValue, float64(is.recv.Load()), v[:]...)
		return true
	})
}

// istioValues fills Istio's label values. The gateway sees only opaque mTLS,
// so source_* and principals are "unknown" (MET-2).
func (ss *statsSet) istioValues(v *[23]string, k *istioKey) {
	for i := range v {
		v[i] = "unknown"
	}
	svc := k.cluster.Service
	v[0] = "source"
	v[9], v[10], v[12], v[13] = k.workload, k.ns, k.app, k.version
	v[14], v[15], v[16] = svc.Host, serviceName(svc.Host), orUnknown(svc.Namespace)
	v[17] = orUnknown(ss.clusterID)
	v[18], v[19] = k.canonSvc, k.canonRev
	v[20], v[21] = "tcp", k.flags
}

// ClusterHasTraffic reports whether the named cluster has carried a
// connection recently (its series exist and counted one). Health checks use
// it to slow down to their no-traffic interval.
func (m *Metrics) ClusterHasTraffic(name string) bool {
	v, ok := m.stats.clusters.Load(name)
	return ok && v.(*clusterStats).total.Load() > 0
}
