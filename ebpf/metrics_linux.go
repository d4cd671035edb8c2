package ebpf

import (
	"github.com/prometheus/client_golang/prometheus"
)

type collector struct {
	f                        *Forwarder
	kernelBytes, userBytes   *prometheus.Desc
	handoffs, active, passed *prometheus.Desc
	refed, lostWakeups       *prometheus.Desc
}

func newCollector(f *Forwarder) *collector {
	return &collector{
		f: f,
		kernelBytes: prometheus.NewDesc("eastwest_forwarder_kernel_bytes_total",
			"Bytes the sockmap verdict redirected, by source side.", []string{"from"}, nil),
		passed: prometheus.NewDesc("eastwest_forwarder_kernel_passed_bytes_total",
			"Bytes the verdict passed to user space after a hand-off, on pairs still open.", nil, nil),
		refed: prometheus.NewDesc("eastwest_forwarder_kernel_refed_bytes_total",
			"Bytes the kernel fed the verdict a second time; user space left them out.", nil, nil),
		lostWakeups: prometheus.NewDesc("eastwest_forwarder_lost_wakeups_total",
			"Waits of a handed-off pair that ran out with bytes received more than 10 ms before and no wakeup.", nil, nil),
		userBytes: prometheus.NewDesc("eastwest_forwarder_user_bytes_total",
			"Bytes copied by user space (splice path and handed-off pairs).", nil, nil),
		handoffs: prometheus.NewDesc("eastwest_forwarder_handoffs_total",
			"Pairs moved from the kernel path to user space, by reason.", []string{"reason"}, nil),
		active: prometheus.NewDesc("eastwest_forwarder_active_pairs",
			"Open pairs by path.", []string{"path"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.kernelBytes, c.passed, c.userBytes, c.handoffs, c.active, c.refed, c.lostWakeups} {
		ch <- d
	}
}

// Collect reads the per-pair counters from the stats map at scrape time.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	f := c.f
	if k := f.k; k != nil {
		from := [2]float64{float64(k.doneRed[0].Load()), float64(k.doneRed[1].Load())}
		var passed float64
		var key uint64
		var st forwardStat
		it := k.objs.Stats.Iterate()
		for it.Next(&key, &st) {
			passed += float64(st.Passed)
			// Only the redirected bytes of open pairs; ended ones are in doneRed.
			if side, ok := k.side(key); ok {
				from[side] += float64(st.Redirected)
			}
		}
		ch <- prometheus.MustNewConstMetric(c.kernelBytes, prometheus.CounterValue, from[0], "client")
		ch <- prometheus.MustNewConstMetric(c.kernelBytes, prometheus.CounterValue, from[1], "upstream")
		ch <- prometheus.MustNewConstMetric(c.passed, prometheus.GaugeValue, passed)
	}
	ch <- prometheus.MustNewConstMetric(c.userBytes, prometheus.CounterValue, float64(f.userBytes.Load()))
	ch <- prometheus.MustNewConstMetric(c.refed, prometheus.CounterValue, float64(f.refedBytes.Load()))
	ch <- prometheus.MustNewConstMetric(c.lostWakeups, prometheus.CounterValue, float64(f.lostWakeups.Load()))
	ch <- prometheus.MustNewConstMetric(c.handoffs, prometheus.CounterValue, float64(f.handoffBulk.Load()), "bulk")
	ch <- prometheus.MustNewConstMetric(c.handoffs, prometheus.CounterValue, float64(f.handoffCap.Load()), "queue_cap")
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(f.activeKernel.Load()), "kernel")
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(f.activeUser.Load()), "user")
}
