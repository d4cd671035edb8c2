package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/eastwest-gw/eastwest/balancer"
)

// balancerCollector exports the balancer's Envoy-named cluster stats
// (lb_healthy_panic, membership_*, outlier_detection.*) at scrape time.
// upstream_cx_none_healthy is the proxy's, which counts refused clients.
type balancerCollector struct {
	b *balancer.Balancer
}

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("envoy_cluster_"+name, help, []string{"cluster_name"}, nil)
}

var (
	descPanic     = desc("lb_healthy_panic", "Picks made from a priority in panic mode.")
	descMemHealth = desc("membership_healthy", "Endpoints routable (healthy and not ejected).")
	descMemDegr   = desc("membership_degraded", "Endpoints degraded.")
	descMemTotal  = desc("membership_total", "Endpoints in the cluster.")
	descODActive  = desc("outlier_detection_ejections_active", "Endpoints ejected now.")
	descODEnf     = desc("outlier_detection_ejections_enforced_total", "Ejections enforced.")
	descODOver    = desc("outlier_detection_ejections_overflow", "Ejections refused by maxEjectionPercent.")
	descODTotal   = desc("outlier_detection_ejections_total", "Detections that passed the max-percent check (deprecated Envoy stat).")
	descOD5xxE    = desc("outlier_detection_ejections_enforced_consecutive_5xx", "Enforced consecutive-error ejections.")
	descOD5xxD    = desc("outlier_detection_ejections_detected_consecutive_5xx", "Detected consecutive-error ejections.")
	descODGwE     = desc("outlier_detection_ejections_enforced_consecutive_gateway_failure", "Enforced consecutive gateway-failure ejections.")
	descODGwD     = desc("outlier_detection_ejections_detected_consecutive_gateway_failure", "Detected consecutive gateway-failure ejections.")
	descODLoE     = desc("outlier_detection_ejections_enforced_consecutive_local_origin_failure", "Enforced consecutive local-origin ejections.")
	descODLoD     = desc("outlier_detection_ejections_detected_consecutive_local_origin_failure", "Detected consecutive local-origin ejections.")
)

func (c balancerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPanic, descMemHealth, descMemDegr, descMemTotal, descODActive, descODEnf, descODOver,
		descODTotal, descOD5xxE, descOD5xxD, descODGwE, descODGwD, descODLoE, descODLoD} {
		ch <- d
	}
}

func (c balancerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.b.Stats() {
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), s.Name)
		}
		gauge := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), s.Name)
		}
		counter(descPanic, s.LBHealthyPanic)
		gauge(descMemHealth, s.MembershipHealthy)
		gauge(descMemDegr, s.MembershipDegraded)
		gauge(descMemTotal, s.MembershipTotal)
		o := s.Outlier
		gauge(descODActive, o.EjectionsActive)
		counter(descODEnf, o.EjectionsEnforcedTotal)
		counter(descODOver, o.EjectionsOverflow)
		counter(descODTotal, o.EjectionsTotal)
		counter(descOD5xxE, o.EjectionsEnforcedConsecutive5xx)
		counter(descOD5xxD, o.EjectionsDetectedConsecutive5xx)
		counter(descODGwE, o.EjectionsEnforcedConsecutiveGatewayFailure)
		counter(descODGwD, o.EjectionsDetectedConsecutiveGatewayFailure)
		counter(descODLoE, o.EjectionsEnforcedConsecutiveLocalOrigin)
		counter(descODLoD, o.EjectionsDetectedConsecutiveLocalOrigin)
	}
}
