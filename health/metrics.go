package health

import "github.com/prometheus/client_golang/prometheus"

// collector exports Envoy's cluster.<name>.health_check.* stats under the
// names Istio's Prometheus scrape gives them, read at scrape time so that
// clusters that disappear take their series with them.
type collector struct {
	c                                                                      *Checker
	attempt, success, failure, passive, network, verify, healthy, degraded *prometheus.Desc
}

func newCollector(c *Checker) *collector {
	l := []string{"cluster_name"}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("envoy_cluster_health_check_"+name, help, l, nil)
	}
	return &collector{
		c:        c,
		attempt:  d("attempt", "Active health checks started."),
		success:  d("success", "Active health checks that passed."),
		failure:  d("failure", "Active health checks that failed, for any reason."),
		passive:  d("passive_failure", "Health check failures from passive events; always 0 here (Envoy parity)."),
		network:  d("network_failure", "Active health checks that failed on a network error or timeout."),
		verify:   d("verify_cluster", "Cluster name verifications; always 0 here (Envoy parity)."),
		healthy:  d("healthy", "Endpoints of the cluster that pass their active health check."),
		degraded: d("degraded", "Endpoints of the cluster that pass their active health check as degraded."),
	}
}

// Describe implements prometheus.Collector.
func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.attempt, m.success, m.failure, m.passive, m.network, m.verify, m.healthy, m.degraded} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *collector) Collect(ch chan<- prometheus.Metric) {
	type gauges struct{ healthy, degraded int }
	c := m.c
	c.mu.Lock()
	stats := make(map[string]clusterStats, len(c.stats))
	for name, s := range c.stats {
		stats[name] = *s
	}
	g := make(map[string]*gauges)
	for _, p := range c.probes {
		for _, mb := range p.members {
			x := g[mb.cluster]
			if x == nil {
				x = &gauges{}
				g[mb.cluster] = x
			}
			if p.healthy {
				x.healthy++
				if p.degraded {
					x.degraded++
				}
			}
		}
	}
	c.mu.Unlock()
	for name, x := range g {
		s := stats[name]
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), name)
		}
		counter(m.attempt, s.attempt)
		counter(m.success, s.success)
		counter(m.failure, s.failure)
		counter(m.passive, 0)
		counter(m.network, s.networkFailure)
		counter(m.verify, 0)
		ch <- prometheus.MustNewConstMetric(m.healthy, prometheus.GaugeValue, float64(x.healthy), name)
		ch <- prometheus.MustNewConstMetric(m.degraded, prometheus.GaugeValue, float64(x.degraded), name)
	}
}
