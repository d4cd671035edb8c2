package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Refusal reasons, the values of the reason label (UNK-3). mesh.Reason
// values are used as they are.
const (
	reasonParse    = "parse_error"
	reasonNotTLS   = "not_tls"
	reasonTimeout  = "hello_timeout"
	reasonTooLarge = "hello_too_large"
	reasonALPN     = "alpn_mismatch"
	reasonBadName  = "bad_name"
	reasonOverflow = "overflow"
	reasonNoHealth = "no_healthy"
	reasonCircuit  = "circuit_open"
)

// Metrics are the proxy's Prometheus series, shared by every listener of a
// process. Names follow Istio (istio_tcp_*) and Envoy's stats with the
// envoy_ prefix Istio exports them under (MET-1, MET-2); eastwest_* are ours.
type Metrics struct {
	cxTotal    *prometheus.CounterVec // envoy_listener_downstream_cx_total{listener_address}
	cxActive   *prometheus.GaugeVec
	cxOverflow *prometheus.CounterVec
	noChain    *prometheus.CounterVec // envoy_listener_no_filter_chain_match
	refused    *prometheus.CounterVec // eastwest_refused_connections_total{listener,reason}

	handshakeSec *prometheus.HistogramVec // eastwest_connection_setup_seconds: hello received to upstream connected
	stats        *statsSet
}

// listenerMetrics are bound once the listener address is known, so that
// accepting a connection does no label lookup.
type listenerMetrics struct {
	accepted, overflow prometheus.Counter
	openGauge          prometheus.Gauge
	setup              prometheus.Observer
}

// NewMetrics registers the proxy's series on reg. clusterID is this
// gateway's cluster, the destination_cluster label.
func NewMetrics(reg prometheus.Registerer, clusterID string) (*Metrics, error) {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gv := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		cxTotal:    cv("envoy_listener_downstream_cx_total", "Client connections accepted.", "listener_address"),
		cxActive:   gv("envoy_listener_downstream_cx_active", "Client connections open.", "listener_address"),
		cxOverflow: cv("envoy_listener_downstream_cx_overflow", "Client connections closed at once because the listener was at maxConnections.", "listener_address"),
		noChain:    cv("envoy_listener_no_filter_chain_match", "Connections whose ClientHello matched no routable cluster.", "listener_address"),
		refused:    cv("eastwest_refused_connections_total", "Client connections closed without forwarding, by reason.", "listener", "reason"),

		handshakeSec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "eastwest_connection_setup_seconds", Help: "From a complete ClientHello to a connected upstream.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"listener"}),
		stats: &statsSet{clusterID: clusterID},
	}
	for _, c := range []prometheus.Collector{
		m.cxTotal, m.cxActive, m.cxOverflow, m.noChain, m.refused,
		m.handshakeSec, m.stats,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// bind pre-resolves a listener's series.
func (m *Metrics) bind(name, addr string) listenerMetrics {
	return listenerMetrics{
		accepted:  m.cxTotal.WithLabelValues(addr),
		openGauge: m.cxActive.WithLabelValues(addr),
		overflow:  m.cxOverflow.WithLabelValues(addr),
		setup:     m.handshakeSec.WithLabelValues(name),
	}
}
