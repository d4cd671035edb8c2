package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Machine describes where a run happened.
type Machine struct {
	Host, Kernel, CPUModel, Go string
	LoadAvg                    string // /proc/loadavg when the run started: other work skews every figure
	Cores                      int
	Versions                   map[string]string // target kind -> version line
}

func readMachine(ctx context.Context, b binaries) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Versions: map[string]string{}}
	m.Host, _ = os.Hostname()
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(l))[:3], " ")
	}
	if k, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(k))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	version := func(kind, bin string, args ...string) {
		if bin == "" {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(cctx, bin, args...).CombinedOutput()
		if l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); l != "" {
			m.Versions[kind] = l
		}
	}
	version(KindEastwest, b.eastwest, "version")
	version(KindHAProxy, b.haproxy, "-v")
	version(KindNginx, b.nginx, "-v")
	return m
}

// Metric is one column of the results table.
type Metric struct {
	Mode, Title string
	Lower       bool // lower is better
	ProxyOnly   bool // meaningless without a proxy process (direct)
	// Delta marks a difference of two readings of the proxy (after minus
	// before holding the connections). It can come out below zero when
	// the rest of the process shrinks meanwhile (Go's scavenger returning
	// pages), which a smoke run's few connections cannot outweigh.
	Delta  bool
	Digits int
	Get    func(*LoadResult) (float64, bool)
}

func rtt(f func(*Latency) float64) func(*LoadResult) (float64, bool) {
	return func(r *LoadResult) (float64, bool) {
		if r.RTT == nil {
			return 0, false
		}
		return f(r.RTT), true
	}
}

func setup(f func(*Latency) float64) func(*LoadResult) (float64, bool) {
	return func(r *LoadResult) (float64, bool) {
		if r.Setup == nil {
			return 0, false
		}
		return f(r.Setup), true
	}
}

// Metrics are the table's columns, in order.
var Metrics = []Metric{
	{Mode: "tput1", Title: "1 conn Gbit/s", Digits: 1, Get: func(r *LoadResult) (float64, bool) { return r.Gbps, true }},
	{Mode: "tput8", Title: "8 conns Gbit/s", Digits: 1, Get: func(r *LoadResult) (float64, bool) { return r.Gbps, true }},
	{Mode: "tput8", Title: "proxy CPU s/GB", Lower: true, ProxyOnly: true, Digits: 2, Get: func(r *LoadResult) (float64, bool) { return r.CPUSecPerGB, true }},
	{Mode: "latency", Title: "RTT p50 us", Lower: true, Get: rtt(func(l *Latency) float64 { return l.P50 })},
	{Mode: "latency", Title: "RTT p99 us", Lower: true, Get: rtt(func(l *Latency) float64 { return l.P99 })},
	{Mode: "connrate", Title: "conn/s", Get: func(r *LoadResult) (float64, bool) { return r.ConnPerSec, true }},
	{Mode: "connrate", Title: "setup p99 us", Lower: true, Get: setup(func(l *Latency) float64 { return l.P99 })},
	{Mode: "connrate", Title: "proxy CPU us/conn", Lower: true, ProxyOnly: true, Get: func(r *LoadResult) (float64, bool) { return r.CPUMicrosPerConn, true }},
	{Mode: "connrate-tls", Title: "TLS 1.3 conn/s", Get: func(r *LoadResult) (float64, bool) { return r.ConnPerSec, true }},
	{Mode: "connrate-tls", Title: "TLS setup p99 us", Lower: true, Get: setup(func(l *Latency) float64 { return l.P99 })},
	{Mode: "idle", Title: "idle KiB/conn", Lower: true, ProxyOnly: true, Delta: true, Digits: 1, Get: func(r *LoadResult) (float64, bool) { return r.PSSKiBPerConn, true }},
	{Mode: "idle", Title: "idle fds/conn", Lower: true, ProxyOnly: true, Delta: true, Digits: 1, Get: func(r *LoadResult) (float64, bool) { return r.FDsPerConn, true }},
	{Mode: "idle", Title: "goroutines/conn", Lower: true, ProxyOnly: true, Delta: true, Digits: 1, Get: func(r *LoadResult) (float64, bool) {
		return r.GoroutinesPerConn, r.Goroutines > 0
	}},
}

// Cell is one target's value of one metric over the rounds.
type Cell struct {
	OK             bool    // every round succeeded
	Failed, Rounds int     // failed rounds, all rounds
	Median         float64 // of the successful rounds
	Min, Max       float64
	Err            string // first failure
	Held           int    // idle connections held by the first failed run
	NA             bool   // the metric does not apply (no proxy, not Go)
}

// Cell computes target tr's value of metric m.
func (tr *TargetReport) Cell(m Metric) Cell {
	runs := tr.Runs[m.Mode]
	c := Cell{Rounds: len(runs)}
	if m.ProxyOnly && tr.Target.Kind == KindDirect {
		c.NA = true
		return c
	}
	var vals []float64
	for _, r := range runs {
		if r.Error != "" {
			c.Failed++
			if c.Err == "" {
				c.Err, c.Held = r.Error, r.Held
			}
			continue
		}
		v, ok := m.Get(r)
		if !ok {
			c.NA = true
			return c
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return c
	}
	slices.Sort(vals)
	c.OK = c.Failed == 0
	c.Min, c.Max = vals[0], vals[len(vals)-1]
	if n := len(vals); n%2 == 1 {
		c.Median = vals[n/2]
	} else {
		c.Median = (vals[n/2-1] + vals[n/2]) / 2
	}
	return c
}

func fmtNum(v float64, digits int) string {
	if digits == 0 {
		s := fmt.Sprintf("%.0f", v)
		if len(s) > 3 && !strings.HasPrefix(s, "-") {
			return s[:len(s)-3] + "," + s[len(s)-3:]
		}
		return s
	}
	return fmt.Sprintf("%.*f", digits, v)
}

func (c Cell) String(m Metric) string {
	switch {
	case c.NA:
		return "-"
	case c.Rounds == 0:
		return ""
	case c.Failed > 0 && c.Held > 0:
		return fmt.Sprintf("FAIL %d/%d (held %s)", c.Failed, c.Rounds, fmtNum(float64(c.Held), 0))
	case c.Failed > 0:
		return fmt.Sprintf("FAIL %d/%d", c.Failed, c.Rounds)
	case c.Rounds == 1 || c.Min == c.Max:
		return fmtNum(c.Median, m.Digits)
	}
	return fmt.Sprintf("%s (%s-%s)", fmtNum(c.Median, m.Digits), fmtNum(c.Min, m.Digits), fmtNum(c.Max, m.Digits))
}

// Failures lists every failed run as "target mode: error".
func (r *Report) Failures() []string {
	var out []string
	for _, tr := range r.Targets {
		for _, m := range Modes {
			for i, res := range tr.Runs[m.Name] {
				if res.Error != "" {
					out = append(out, fmt.Sprintf("%s %s round %d: %s", tr.Target.Name, m.Name, i+1, res.Error))
				}
			}
		}
	}
	return out
}

func (r *Report) target(name string) *TargetReport {
	for _, tr := range r.Targets {
		if tr.Target.Name == name && tr.Skipped == "" {
			return tr
		}
	}
	return nil
}

// metrics are the Metrics of the modes that ran.
func (r *Report) metrics() []Metric {
	var out []Metric
	for _, m := range Metrics {
		if slices.ContainsFunc(r.Options.modes(), func(md Mode) bool { return md.Name == m.Mode }) {
			out = append(out, m)
		}
	}
	return out
}

// Table is the markdown table of medians (min-max over rounds).
func (r *Report) Table() string {
	var b strings.Builder
	metrics := r.metrics()
	b.WriteString("| target |")
	for _, m := range metrics {
		b.WriteString(" " + m.Title + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(metrics)) + "\n")
	for _, tr := range r.Targets {
		b.WriteString("| " + tr.Target.Name + " |")
		if tr.Skipped != "" {
			b.WriteString(" skipped: " + mdEscape(tr.Skipped) + " |" + strings.Repeat(" |", len(metrics)-1) + "\n")
			continue
		}
		for _, m := range metrics {
			b.WriteString(" " + tr.Cell(m).String(m) + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// RatioTable divides every target's medians by those of base, for the
// metrics base has. Lower-is-better columns are marked.
func (r *Report) RatioTable(base string) string {
	bt := r.target(base)
	if bt == nil {
		return ""
	}
	var cols []Metric
	for _, m := range Metrics {
		if c := bt.Cell(m); c.OK && !c.NA && c.Median != 0 {
			cols = append(cols, m)
		}
	}
	var b strings.Builder
	b.WriteString("| target / " + base + " |")
	for _, m := range cols {
		mark := " (higher better)"
		if m.Lower {
			mark = " (lower better)"
		}
		b.WriteString(" " + m.Title + mark + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(cols)) + "\n")
	for _, tr := range r.Targets {
		if tr.Skipped != "" || tr.Target.Name == base {
			continue
		}
		b.WriteString("| " + tr.Target.Name + " |")
		for _, m := range cols {
			c, bc := tr.Cell(m), bt.Cell(m)
			switch {
			case c.NA:
				b.WriteString(" - |")
			case !c.OK:
				b.WriteString(" FAIL |")
			default:
				b.WriteString(fmt.Sprintf(" %.2fx |", c.Median/bc.Median))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// roundValues is tr's value of m in each round, NaN where that round failed.
func (tr *TargetReport) roundValues(m Metric) []float64 {
	runs := tr.Runs[m.Mode]
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = math.NaN()
		if r.Error == "" {
			if v, ok := m.Get(r); ok {
				out[i] = v
			}
		}
	}
	return out
}

// CostTable compares variant with base metric by metric: the ratio of their
// medians, and the ratio within each round (rounds alternate targets, so
// round i of both ran within a minute of each other and share the
// machine's mood) as median and min-max over rounds. Empty unless both ran.
func (r *Report) CostTable(base, variant string) string {
	bt, vt := r.target(base), r.target(variant)
	if bt == nil || vt == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| metric | %s | %s | ratio of medians | per-round ratio, median (min-max) | rounds |\n|---|---|---|---|---|---|\n", base, variant)
	for _, m := range Metrics {
		bc, vc := bt.Cell(m), vt.Cell(m)
		if bc.NA || vc.NA || !bc.OK || !vc.OK || bc.Median == 0 {
			continue
		}
		bv, vv := bt.roundValues(m), vt.roundValues(m)
		var ratios []float64
		for i := range min(len(bv), len(vv)) {
			if !math.IsNaN(bv[i]) && !math.IsNaN(vv[i]) && bv[i] != 0 {
				ratios = append(ratios, vv[i]/bv[i])
			}
		}
		if len(ratios) == 0 {
			continue
		}
		slices.Sort(ratios)
		med := ratios[len(ratios)/2]
		if len(ratios)%2 == 0 {
			med = (ratios[len(ratios)/2-1] + med) / 2
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.3f | %.3f (%.3f-%.3f) | %d |\n", m.Title, fmtNum(bc.Median, m.Digits), fmtNum(vc.Median, m.Digits),
			vc.Median/bc.Median, med, ratios[0], ratios[len(ratios)-1], len(ratios))
	}
	return b.String()
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// Markdown is the whole results file.
func (r *Report) Markdown(svgName string) string {
	var b strings.Builder
	o := r.Options
	kind := "full"
	if o.Smoke {
		kind = "smoke (numbers are meaningless)"
	}
	fmt.Fprintf(&b, "# eastwest benchmark, %s\n\n", r.Start.Format("2006-01-02"))
	fmt.Fprintf(&b, "Command: `%s`\n\n", orStr(o.Command, "ewbench"))
	modes := "all modes"
	if len(o.Modes) > 0 {
		var names []string
		for _, m := range o.modes() {
			names = append(names, m.Name)
		}
		modes = "modes " + strings.Join(names, ", ")
	}
	fmt.Fprintf(&b, "Run: %s, %d rounds (targets alternating A B C A B C, each restarted per round), %s, %s per timed mode, %d idle connections, %d connection-rate workers, taskset %v, %s in all.\n\n",
		kind, o.Rounds, modes, o.Duration, o.IdleConns, o.Workers, o.Taskset, r.Elapsed.Round(time.Second))
	m := r.Machine
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s, Linux %s, %s, load average %s at the start.\n", m.Host, m.Cores, m.CPUModel, m.Kernel, m.Go, m.LoadAvg)
	for _, k := range slices.Sorted(maps.Keys(m.Versions)) {
		fmt.Fprintf(&b, "- %s: %s\n", k, m.Versions[k])
	}
	b.WriteString("\n## Medians (min-max over rounds)\n\n")
	b.WriteString(r.Table())
	if t := r.RatioTable("haproxy"); t != "" {
		b.WriteString("\n## Ratio to HAProxy (median / median)\n\n" + t)
	}
	if t := r.RatioTable("direct"); t != "" {
		b.WriteString("\n## Ratio to direct (no proxy)\n\n" + t)
	}
	if t := r.CostTable("eastwest-auto", "eastwest-auto-traced"); t != "" {
		b.WriteString("\n## Cost of tracing (eastwest-auto-traced / eastwest-auto)\n\n" + t)
	}
	if svgName != "" {
		fmt.Fprintf(&b, "\n![throughput and p99 latency per target](%s)\n", svgName)
	}
	var notes []string
	for _, tr := range r.Targets {
		for _, n := range tr.Notes {
			notes = append(notes, tr.Target.Name+": "+n)
		}
		if tr.Skipped != "" {
			notes = append(notes, tr.Target.Name+" skipped: "+tr.Skipped)
		}
	}
	notes = append(notes, r.Notes...)
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			b.WriteString("- " + mdEscape(n) + "\n")
		}
	}
	if f := r.Failures(); len(f) > 0 {
		b.WriteString("\n## Failed runs (reported as FAIL, never as a number)\n\n")
		for _, n := range f {
			b.WriteString("- " + mdEscape(n) + "\n")
		}
	}
	b.WriteString(caveats)
	return b.String()
}

const caveats = `
## How to read this

- Load tool, sink and proxy share the machine's cores (with -taskset: proxy on CPU 1, load tool
  and sink on CPU 0). These are whole-system figures on loopback; differences under about 20%
  are noise on a 2-vCPU VM.
- Throughput: raw bytes after a real ClientHello, counted by the sink and checked against what
  was sent; Gbit/s over the time until the last count arrived. proxy CPU s/GB is the proxy's
  utime+stime (all its processes) during the 8-connection run per 10^9 bytes.
- RTT: 64-byte ping-pong on one connection, every echo compared with what was sent.
- conn/s: 32 workers each connect, send ClientHello + one 64-byte message, check the echo, close.
  TLS 1.3: a full mutual-TLS handshake (Istio ALPN, SPIFFE certificates, no resumption) with the
  sink through the proxy, then one echo; bound by the client's and sink's crypto.
- idle: connections held open after one verified echo each, every one checked again after the
  measurement; KiB/conn is the proxy's PSS growth (smaps_rollup, all processes) per connection,
  kernel socket and pipe memory not included.
`

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// WriteFiles writes the markdown report to path and the SVG chart next to
// it (same name, .svg).
func (r *Report) WriteFiles(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	svgPath := strings.TrimSuffix(path, filepath.Ext(path)) + ".svg"
	if err := os.WriteFile(svgPath, r.SVG(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(r.Markdown(filepath.Base(svgPath))), 0o644)
}

// SVG draws two bar charts: throughput (1 and 8 connections) and RTT p50
// and p99 per target. No external dependencies.
func (r *Report) SVG() []byte {
	type bar struct {
		label string
		vals  []float64 // NaN when missing
	}
	var tput, lat []bar
	for _, tr := range r.Targets {
		if tr.Skipped != "" {
			continue
		}
		get := func(m Metric) float64 {
			c := tr.Cell(m)
			if !c.OK || c.NA {
				return math.NaN()
			}
			return c.Median
		}
		tput = append(tput, bar{tr.Target.Name, []float64{get(Metrics[0]), get(Metrics[1])}})
		lat = append(lat, bar{tr.Target.Name, []float64{get(Metrics[3]), get(Metrics[4])}})
	}
	const w, ph, top = 900, 300, 40
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, 2*ph+2*top+20)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	colors := []string{"#4e79a7", "#f28e2b"}
	panel := func(y0 int, title string, series []string, bars []bar, unit string) {
		fmt.Fprintf(&b, `<text x="10" y="%d" font-size="15" font-weight="bold">%s</text>`+"\n", y0+20, title)
		for i, s := range series {
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", w-260+i*130, y0+10, colors[i], w-244+i*130, y0+21, s)
		}
		maxV := 0.0
		for _, br := range bars {
			for _, v := range br.vals {
				if !math.IsNaN(v) && v > maxV {
					maxV = v
				}
			}
		}
		if maxV == 0 || len(bars) == 0 {
			return
		}
		left, base, height := 60, y0+top+ph-60, ph-80
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, base, w-10, base)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-4, base-height, fmtNum(maxV, 1)+" "+unit)
		slot := (w - left - 20) / len(bars)
		bw := min(40, (slot-20)/len(series))
		for i, br := range bars {
			x := left + 10 + i*slot
			for j, v := range br.vals {
				if math.IsNaN(v) {
					fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10">n/a</text>`+"\n", x+j*bw, base-4)
					continue
				}
				h := int(v / maxV * float64(height))
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", x+j*bw, base-h, bw-2, h, colors[j])
				fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" text-anchor="middle">%s</text>`+"\n", x+j*bw+bw/2, base-h-3, fmtNum(v, 1))
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x+len(series)*bw/2, base+16, br.label)
		}
	}
	panel(0, "Throughput, Gbit/s (higher is better)", []string{"1 connection", "8 connections"}, tput, "Gbit/s")
	panel(ph+top, "64-byte ping-pong RTT, microseconds (lower is better)", []string{"p50", "p99"}, lat, "us")
	b.WriteString("</svg>\n")
	return b.Bytes()
}
