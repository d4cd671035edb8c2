package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Issue 9 targets.
const (
	targetFull   = time.Second
	targetUpdate = 10 * time.Millisecond
	targetLookup = 5 * time.Microsecond
)

// fmtDur prints d with three significant digits in a unit that suits it.
func fmtDur(d time.Duration) string {
	// Bounds at 999.5 of a unit: %.3g would print 999.6 ms as "1e+03 ms".
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%.2f us", float64(d)/1e3)
	case d < 999500*time.Nanosecond:
		return fmt.Sprintf("%.3g us", float64(d)/1e3)
	case d < 999500*time.Microsecond:
		return fmt.Sprintf("%.3g ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.3g s", d.Seconds())
	}
}

// verdict compares a measured duration with its target.
func verdict(d, target time.Duration) string {
	if d == 0 {
		return "not measured"
	}
	if d < target {
		return fmt.Sprintf("met (%.0f%% of target)", 100*float64(d)/float64(target))
	}
	return fmt.Sprintf("**MISSED** by %.0f%% (%.1fx the target)", 100*(float64(d)/float64(target)-1), float64(d)/float64(target))
}

// fullGateway is each full run minus the control plane's part.
func (x XDSScale) fullGateway() []time.Duration {
	if len(x.FullCP) != len(x.Full) {
		return nil
	}
	out := make([]time.Duration, len(x.Full))
	for i := range out {
		out[i] = x.Full[i] - x.FullCP[i]
	}
	return out
}

// addTimes returns a[i]+b[i].
func addTimes(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] + b[i]
	}
	return out
}

func durList(d []time.Duration) string {
	s := make([]string, len(d))
	for i, v := range d {
		s[i] = fmtDur(v)
	}
	return strings.Join(s, ", ")
}

// perSP is bytes per service-port.
func (r *ScaleReport) perSP(b int64) string {
	if r.ServicePorts == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(b)/float64(r.ServicePorts))
}

// memTotal is the sum of a source's parts, per service-port.
func (r *ScaleReport) memTotal(source string) (int64, bool) {
	var t int64
	found := false
	for _, m := range r.Memory {
		if m.Source == source {
			t += m.Bytes
			found = true
		}
	}
	return t, found
}

// Markdown renders the report as the results file.
func (r *ScaleReport) Markdown() string {
	var b strings.Builder
	o := r.Options
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# eastwest scale benchmark, %s\n\n", r.Started.Format("2006-01-02"))
	if o.Command != "" {
		w("Command: `%s`\n\n", o.Command)
	}
	w("Mesh: %d services x %d ports x %d endpoints = %d SNI-DNAT clusters (service-ports), %d endpoints, %d namespaces; 127.x addresses, nothing listens.\n\n",
		o.Services, o.Ports, o.Endpoints, r.ServicePorts, r.Endpoints, scaleGen{services: o.Services}.namespaces())
	m := r.Machine
	w("Machine: %d cores, %s, Linux %s, %s; load average at start %s. Run took %s.\n\n",
		m.Cores, orStr(m.CPUModel, "unknown CPU"), orStr(m.Kernel, "?"), m.Go, orStr(m.LoadAvg, "?"), r.Took.Round(time.Second))

	w("## Issue 9 targets\n\n| target | path | measured | verdict |\n|---|---|---|---|\n")
	if len(r.DirectBuild) > 0 {
		w("| full snapshot < 1 s | mesh values: mesh.Build + Store.Swap (balancer.Update), median of %d | %s | %s |\n",
			len(r.DirectBuild), fmtDur(median(addTimes(r.DirectBuild, r.DirectApply))), verdict(median(addTimes(r.DirectBuild, r.DirectApply)), targetFull))
	}
	if len(r.YAMLLoad) > 0 {
		t := median(addTimes(r.YAMLLoad, r.YAMLApply))
		w("| full snapshot < 1 s | Istio YAML: istioyaml.Load of %d files + Store.Swap, median of %d | %s | %s |\n",
			r.YAMLFiles, len(r.YAMLLoad), fmtDur(t), verdict(t, targetFull))
	}
	for _, x := range r.XDS {
		if len(x.Full) > 0 {
			w("| full snapshot < 1 s | xDS %s: SetSnapshot on the control plane -> apply returned, median of %d | %s | %s |\n",
				x.Mode, len(x.Full), fmtDur(median(x.Full)), verdict(median(x.Full), targetFull))
		}
		if gw := x.fullGateway(); len(gw) > 0 {
			w("| full snapshot < 1 s | xDS %s, gateway side: the same minus the control plane's marshalling (gRPC, xds client, apply), median of %d | %s | %s |\n",
				x.Mode, len(gw), fmtDur(median(gw)), verdict(median(gw), targetFull))
		}
	}
	if r.DirectTotal.N > 0 {
		w("| EDS update of one cluster < 10 ms | Snapshot.Update + Store.Swap (balancer.Update), p50 / p99 / max of %d | %s / %s / %s | p99 %s |\n",
			r.DirectTotal.N, fmtDur(r.DirectTotal.P50), fmtDur(r.DirectTotal.P99), fmtDur(r.DirectTotal.Max), verdict(r.DirectTotal.P99, targetUpdate))
	}
	for _, x := range r.XDS {
		if x.Update.N > 0 {
			w("| EDS update of one cluster < 10 ms | xDS %s: SetSnapshot -> apply returned, p50 / max of %d | %s / %s | p50 %s |\n",
				x.Mode, x.Update.N, fmtDur(x.Update.P50), fmtDur(x.Update.Max), verdict(x.Update.P50, targetUpdate))
		}
		if x.UpdateGateway.N > 0 {
			w("| EDS update of one cluster < 10 ms | xDS %s, gateway side: the same minus the control plane's SetSnapshot and marshalling, p50 / max of %d | %s / %s | p50 %s |\n",
				x.Mode, x.UpdateGateway.N, fmtDur(x.UpdateGateway.P50), fmtDur(x.UpdateGateway.Max), verdict(x.UpdateGateway.P50, targetUpdate))
		}
	}
	if r.LookupAll.N > 0 {
		w("| route lookup p99 < 5 us | Rewrite + sni.ParseName + Store.Load + Snapshot.Lookup, %d lookups (%d missing names), p50 / p99 / max | %s / %s / %s | p99 %s |\n",
			r.LookupAll.N, r.LookupMisses, fmtDur(r.LookupAll.P50), fmtDur(r.LookupAll.P99), fmtDur(r.LookupAll.Max), verdict(r.LookupAll.P99, targetLookup))
	}
	if len(r.Goroutines) > 1 {
		var parts []string
		for _, g := range r.Goroutines {
			parts = append(parts, fmt.Sprintf("%s: %.0f", g.When, g.Value))
		}
		w("| no goroutine per idle service | runtime.NumGoroutine | %s | see below |\n", strings.Join(parts, "; "))
	}
	for _, src := range []string{"direct", "yaml", "xds"} {
		if t, ok := r.memTotal(src); ok {
			w("| memory per service-port (README) | %s: HeapAlloc after GC / %d | %s bytes (%.1f KiB) | figure |\n",
				src, r.ServicePorts, r.perSP(t), float64(t)/float64(max(r.ServicePorts, 1))/1024)
		}
	}

	w("\n## Full snapshot\n\nWall times are medians over the runs; process CPU (all threads, GC included) varies less on a shared machine.\n\n")
	w("| path | source -> snapshot | apply: Store.Swap incl. balancer.Update | total | every run (total) | process CPU |\n|---|---|---|---|---|---|\n")
	if len(r.DirectBuild) > 0 {
		tot := addTimes(r.DirectBuild, r.DirectApply)
		w("| mesh values (no source) | mesh.Build %s | %s | %s | %s | %s |\n", fmtDur(median(r.DirectBuild)), fmtDur(median(r.DirectApply)),
			fmtDur(median(tot)), durList(tot), fmtDur(median(r.DirectCPU)))
	}
	if len(r.YAMLLoad) > 0 {
		tot := addTimes(r.YAMLLoad, r.YAMLApply)
		w("| Istio YAML (%d files, %.1f MiB, written in %s) | istioyaml.Load %s | %s | %s | %s | %s |\n",
			r.YAMLFiles, float64(r.YAMLBytes)/(1<<20), fmtDur(r.YAMLWrite), fmtDur(median(r.YAMLLoad)), fmtDur(median(r.YAMLApply)),
			fmtDur(median(tot)), durList(tot), fmtDur(median(r.YAMLCPU)))
	}
	for _, x := range r.XDS {
		if len(x.Full) > 0 {
			pre := make([]time.Duration, len(x.Full))
			for i := range pre {
				pre[i] = x.Full[i] - x.FullApply[i]
			}
			src := "control plane + gRPC + xds client " + fmtDur(median(pre))
			if len(x.FullCP) == len(pre) {
				client := make([]time.Duration, len(pre))
				for i := range pre {
					client[i] = pre[i] - x.FullCP[i]
				}
				src = fmt.Sprintf("control plane %s + gRPC and xds client %s", fmtDur(median(x.FullCP)), fmtDur(median(client)))
			}
			w("| xDS %s (in-process go-control-plane on 127.0.0.1) | %s | %s | %s | %s | %s (control plane included) |\n",
				x.Mode, src, fmtDur(median(x.FullApply)), fmtDur(median(x.Full)), durList(x.Full), fmtDur(median(x.FullCPU)))
		}
	}

	w("\n## EDS update of one cluster\n\nOne random cluster's last endpoint moves to a new port each time.\n\n| path | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
	row := func(name string, d Dist) {
		if d.N > 0 {
			w("| %s | %d | %s | %s | %s | %s |\n", name, d.N, fmtDur(d.P50), fmtDur(d.P90), fmtDur(d.P99), fmtDur(d.Max))
		}
	}
	row("direct: Snapshot.Update", r.DirectUpdate)
	row("direct: Store.Swap (balancer.Update)", r.DirectSwap)
	row("direct: total", r.DirectTotal)
	for _, x := range r.XDS {
		row("xDS "+x.Mode+": SetSnapshot -> apply returned", x.Update)
		row("xDS "+x.Mode+": of which control plane (SetSnapshot -> response marshalled)", x.UpdateCP)
		row("xDS "+x.Mode+": of which gRPC + gateway (the rest)", x.UpdateGateway)
		row("xDS "+x.Mode+": of which apply (Store.Swap incl. balancer.Update)", x.UpdateApply)
	}
	if r.DirectTotal.N > 0 {
		w("\nProcess CPU per update (loop total / n, GC included): direct %s", fmtDur(r.DirectUpdateCPU))
		for _, x := range r.XDS {
			if x.Update.N > 0 {
				w("; xDS %s %s (control plane included)", x.Mode, fmtDur(x.UpdateCPU))
			}
		}
		w(".\n")
	}
	for _, x := range r.XDS {
		if x.Update.N > 0 {
			w("\nxDS %s: %d snapshots applied for %d updates.\n", x.Mode, x.Publishes, x.Update.N)
		}
	}

	if r.LookupAll.N > 0 {
		w("\n## Route lookup\n\nEach call timed alone (two clock reads, about %s, included); names drawn at random from %d, %.0f%% of them missing (unknown host, port or subset in equal parts); every answer checked.\n\n",
			fmtDur(r.TimerCost), 1<<16, 100*o.MissFraction)
		w("| names | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
		row("all", r.LookupAll)
		row("existing", r.LookupHit)
		row("missing", r.LookupMiss)
		w("\nSame loop without per-call clocks: %s per lookup on average.\n", fmtDur(r.LookupBatchAvg))
	}

	if len(r.Memory) > 0 {
		w("\n## Heap after GC\n\nHeapAlloc (live objects) and HeapInuse (their spans) after two runtime.GC calls, before and after each part, divided by %d service-ports (%d endpoints each).\n\n", r.ServicePorts, o.Endpoints)
		w("| source | part | bytes / service-port | HeapInuse bytes / service-port | MiB in all |\n|---|---|---|---|---|\n")
		for _, mf := range r.Memory {
			w("| %s | %s | %s | %s | %.1f |\n", mf.Source, mf.Part, r.perSP(mf.Bytes), r.perSP(mf.Inuse), float64(mf.Bytes)/(1<<20))
		}
	}

	if len(r.Goroutines) > 0 || len(r.IdleCPU) > 0 {
		w("\n## Goroutines and idle cost\n\n| when | goroutines |\n|---|---|\n")
		for _, g := range r.Goroutines {
			w("| %s | %.0f |\n", g.When, g.Value)
		}
		w("\n| idle for %s with the full mesh | CPU ms per second |\n|---|---|\n", o.Idle)
		for _, c := range r.IdleCPU {
			w("| %s | %.1f |\n", c.When, c.Value)
		}
	}
	for i, n := range r.Notes {
		if i == 0 {
			w("\n## Notes\n\n")
		}
		w("- %s\n", n)
	}
	w(`
## How measured

- One process, phases in order: mesh values (direct), Istio YAML, xDS per mode. Each phase
  builds its own store and balancer (balancer.New with an info-level text logger writing to
  io.Discard, so log formatting is paid as in the gateway, not the write) subscribed to the
  store as cmd/eastwest does; apply is Store.Swap, which runs balancer.Update.
- Generated clusters carry what istiod sends for a DestinationRule with consecutive5xxErrors
  (LEAST_REQUEST, outlier detection, panic threshold 0); endpoints are spread over three zones
  with istio.workload metadata. The YAML mesh is one ServiceEntry (MESH_INTERNAL, STATIC,
  workloadSelector) and 10 WorkloadEntries per service, one file per namespace.
- xDS: go-control-plane v0.14 snapshot cache and server in this process on 127.0.0.1, the
  real xds.Client (plaintext). Clusters and endpoints have separate versions, so an EDS change
  does not resend CDS; for delta the control plane's resource hashes are computed before the
  timed SetSnapshot. Figures include the control plane's marshalling and gRPC on loopback,
  both on the same cores: they overstate what the gateway alone spends.
- Control plane vs gateway: the control plane's part is, for each response it handed to
  gRPC (go-control-plane's response callback, after marshalling) within the timed window, the
  time since SetSnapshot or since the request it answers, whichever is later; the gateway side
  is the rest (gRPC both ways, the xDS client, Store.Swap). Both share the same 2 cores, so
  the control plane's work also slows the gateway's and the split is approximate.
- Heap figures: before/after two runtime.GC; for xDS the gateway is stopped and the server's
  streams closed before measuring, so stream buffers are not counted and the client's delta
  per-stream CDS copy is not included.
- Idle CPU: /proc/self/stat utime+stime (10 ms ticks) over the idle window.
`)
	return b.String()
}

// WriteFile writes the markdown report to path; a directory (or a path
// ending in "/") gets the default name <date>-scale-<machine>.md.
func (r *ScaleReport) WriteFile(path string) (string, error) {
	if st, err := os.Stat(path); (err == nil && st.IsDir()) || strings.HasSuffix(path, "/") {
		path = filepath.Join(path, r.Started.Format("2006-01-02")+"-scale-"+MachineName()+".md")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(r.Markdown()), 0o644)
}

// MachineName is "<cores>vcpu-linux<major.minor>", e.g. 2vcpu-linux6.18,
// the suffix of result file names.
func MachineName() string {
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	parts := strings.SplitN(strings.TrimSpace(string(k)), ".", 3)
	ver := strings.Join(parts[:min(2, len(parts))], ".")
	return fmt.Sprintf("%dvcpu-linux%s", runtime.NumCPU(), ver)
}
