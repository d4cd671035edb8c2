package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configure Run. Zero values mean the documented default.
type Options struct {
	// Targets to measure, by name (DefaultTargets); all when empty.
	Targets []string
	// Modes to run, by Mode.Name, in the order of Modes; all when empty.
	Modes []string
	// Rounds: each round runs every target once, in order (A B C A B C).
	// Default 3, smoke 1.
	Rounds int
	// Smoke shrinks every duration and count so a run takes seconds.
	Smoke bool
	// Taskset pins the proxy to CPU 1 and the load tool and sink to CPU 0.
	Taskset bool
	// Duration of each timed mode. Default 4 s, smoke 150 ms.
	Duration time.Duration
	// IdleConns is the idle-scale connection count. Default 9,900 (the
	// open-files hard limit here is 20,000 and a proxy holds two fds per
	// connection), smoke 20.
	IdleConns int
	// Workers for the connection-rate modes. Default 32, smoke 4.
	Workers int
	// Install runs apt-get for HAProxy and nginx when they are missing.
	Install bool
	// EastwestBin is a built gateway; when empty Run builds ./cmd/eastwest
	// of ModuleDir with go build.
	EastwestBin string
	// ModuleDir is the repository root; found from the working directory
	// when empty.
	ModuleDir string
	// ChildExe is the binary started with ChildEnv for the load tool and
	// the sink; os.Executable() when empty.
	ChildExe string
	// Log receives progress lines; io.Discard when nil.
	Log io.Writer
	// Command is the command line recorded in the report.
	Command string
}

func (o *Options) fill() error {
	if o.Rounds <= 0 {
		o.Rounds = 3
		if o.Smoke {
			o.Rounds = 1
		}
	}
	if o.Duration <= 0 {
		o.Duration = 4 * time.Second
		if o.Smoke {
			o.Duration = 150 * time.Millisecond
		}
	}
	if o.IdleConns <= 0 {
		o.IdleConns = 9900
		if o.Smoke {
			o.IdleConns = 20
		}
	}
	if o.Workers <= 0 {
		o.Workers = 32
		if o.Smoke {
			o.Workers = 4
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.ChildExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("child binary: %w", err)
		}
		o.ChildExe = exe
	}
	if len(o.Targets) == 0 {
		for _, t := range DefaultTargets {
			o.Targets = append(o.Targets, t.Name)
		}
	}
	for _, n := range o.Targets {
		if _, ok := LookupTarget(n); !ok {
			return fmt.Errorf("unknown target %q", n)
		}
	}
	for _, n := range o.Modes {
		if !slices.ContainsFunc(Modes, func(m Mode) bool { return m.Name == n }) {
			return fmt.Errorf("unknown mode %q", n)
		}
	}
	if o.Taskset {
		if runtime.NumCPU() < 2 {
			return errors.New("-taskset needs two CPUs")
		}
		if _, err := exec.LookPath("taskset"); err != nil {
			return fmt.Errorf("-taskset: %w", err)
		}
	}
	return nil
}

// Mode is one measurement the runner makes per target and round.
type Mode struct {
	Name string
	Load string // load tool mode
	// Conns for throughput and idle; from Options when 0.
	Conns int
}

// Modes in the order they run against a freshly started target: idle
// first so its memory baseline is the proxy's resting state.
var Modes = []Mode{
	{Name: "idle", Load: ModeIdle},
	{Name: "latency", Load: ModeLatency},
	{Name: "tput1", Load: ModeThroughput, Conns: 1},
	{Name: "tput8", Load: ModeThroughput, Conns: 8},
	{Name: "connrate", Load: ModeConnRate},
	{Name: "connrate-tls", Load: ModeConnRateTLS},
}

// modes are the Modes that o selects, in their order.
func (o *Options) modes() []Mode {
	if len(o.Modes) == 0 {
		return Modes
	}
	var out []Mode
	for _, m := range Modes {
		if slices.Contains(o.Modes, m.Name) {
			out = append(out, m)
		}
	}
	return out
}

// TargetReport is what was measured for one target.
type TargetReport struct {
	Target  Target
	Skipped string                   // why it was not measured; "" when it was
	Notes   []string                 // what the target said about itself
	Runs    map[string][]*LoadResult // by Mode.Name, one per round
	// Exported is what the sink's OTLP receiver got while a Traced target
	// ran, over all rounds.
	Exported OTLPStats
}

// Report is a whole run.
type Report struct {
	Options Options
	Start   time.Time
	Elapsed time.Duration
	Machine Machine
	Targets []*TargetReport
	Notes   []string
}

// Run measures every target in Options and returns the report. Every
// process it starts is gone when it returns. It returns an error only when
// nothing could be measured (no sink, bad options); per-target problems
// are in the report.
func Run(ctx context.Context, opt Options) (*Report, error) {
	if err := opt.fill(); err != nil {
		return nil, err
	}
	rep := &Report{Options: opt, Start: time.Now()}
	dir, err := os.MkdirTemp("", "ewbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var procs procSet
	defer procs.killAll()

	targets := make([]*TargetReport, 0, len(opt.Targets))
	for _, n := range opt.Targets {
		t, _ := LookupTarget(n)
		targets = append(targets, &TargetReport{Target: t, Runs: map[string][]*LoadResult{}})
	}
	rep.Targets = targets
	bins := prepareBinaries(ctx, &opt, dir, targets)
	rep.Machine = readMachine(ctx, bins)

	pki := filepath.Join(dir, "pki")
	if err := EnsurePKI(pki); err != nil {
		return nil, err
	}
	sink, err := startSink(ctx, &opt, &procs, pki)
	if err != nil {
		return nil, err
	}
	lay := layout{dir: dir, sinkRaw: sink.raw, sinkTL: sink.tls, otlp: sink.otlp, maxConns: opt.IdleConns + 20}
	if lay.proxy, err = freePort(); err != nil {
		return nil, err
	}
	if lay.admin, err = freePort(); err != nil {
		return nil, err
	}
	fmt.Fprintf(opt.Log, "ewbench: sink %s (tls %s), proxies on %s, %d rounds of %d targets\n", sink.raw, sink.tls, lay.proxy, opt.Rounds, len(targets))

	for round := 1; round <= opt.Rounds; round++ {
		for _, tr := range targets {
			if tr.Skipped != "" || ctx.Err() != nil {
				continue
			}
			runTraced(ctx, &opt, &procs, bins, lay, pki, tr, round)
		}
	}
	for _, tr := range targets {
		if tr.Target.Traced && tr.Skipped == "" {
			rep.Notes = append(rep.Notes, exportNote(tr))
		}
	}
	if n, lines := sink.errors(); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the sink logged %d unexpected connection errors, first: %s", n, strings.Join(lines, "; ")))
	}
	rep.Elapsed = time.Since(rep.Start)
	return rep, ctx.Err()
}

// binaries are the peers' executables; empty when missing.
type binaries struct {
	eastwest, haproxy, nginx string
}

func prepareBinaries(ctx context.Context, opt *Options, dir string, targets []*TargetReport) binaries {
	var b binaries
	want := map[string]bool{}
	for _, t := range targets {
		want[t.Target.Kind] = true
	}
	if want[KindEastwest] {
		b.eastwest = opt.EastwestBin
		if b.eastwest == "" {
			b.eastwest = filepath.Join(dir, "eastwest")
			if err := buildEastwest(ctx, opt, b.eastwest); err != nil {
				b.eastwest = ""
				skip(targets, KindEastwest, err.Error())
			}
		}
	}
	if want[KindHAProxy] || want[KindNginx] {
		_, herr := exec.LookPath("haproxy")
		_, nerr := exec.LookPath("nginx")
		_, merr := os.Stat(nginxStreamModule)
		if (herr != nil || nerr != nil || merr != nil) && opt.Install {
			fmt.Fprintln(opt.Log, "ewbench: installing haproxy, nginx and libnginx-mod-stream with apt-get")
			ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			out, err := exec.CommandContext(ictx, "apt-get", "install", "-y", "haproxy", "nginx", "libnginx-mod-stream").CombinedOutput()
			cancel()
			if err != nil {
				fmt.Fprintf(opt.Log, "ewbench: apt-get failed: %v\n%s\n", err, tail(out, 400))
			}
		}
		if p, err := exec.LookPath("haproxy"); err == nil {
			b.haproxy = p
		} else {
			skip(targets, KindHAProxy, "haproxy is not installed (apt-get install -y haproxy)")
		}
		if p, err := exec.LookPath("nginx"); err == nil {
			b.nginx = p
		} else {
			skip(targets, KindNginx, "nginx is not installed (apt-get install -y nginx libnginx-mod-stream)")
		}
	}
	return b
}

func skip(targets []*TargetReport, kind, why string) {
	for _, t := range targets {
		if t.Target.Kind == kind && t.Skipped == "" {
			t.Skipped = why
		}
	}
}

func buildEastwest(ctx context.Context, opt *Options, out string) error {
	mod := opt.ModuleDir
	if mod == "" {
		b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil || strings.TrimSpace(string(b)) == "" || strings.TrimSpace(string(b)) == os.DevNull {
			return fmt.Errorf("eastwest: cannot find the module root (go env GOMOD): %v", err)
		}
		mod = filepath.Dir(strings.TrimSpace(string(b)))
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	fmt.Fprintln(opt.Log, "ewbench: go build ./cmd/eastwest")
	cmd := exec.CommandContext(bctx, "go", "build", "-trimpath", "-o", out, "./cmd/eastwest")
	cmd.Dir = mod
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("eastwest does not build: %v: %s", err, tail(b, 300))
	}
	return nil
}

// runTraced is runTarget, counting what a traced target exported: the
// receiver's counts before the start and after the stop, which flushes the
// last spans.
func runTraced(ctx context.Context, opt *Options, procs *procSet, bins binaries, lay layout, pki string, tr *TargetReport, round int) {
	if !tr.Target.Traced {
		runTarget(ctx, opt, procs, bins, lay, pki, tr, round)
		return
	}
	before, err := fetchOTLPStats(lay.otlp)
	runTarget(ctx, opt, procs, bins, lay, pki, tr, round)
	after, err2 := fetchOTLPStats(lay.otlp)
	if err = errors.Join(err, err2); err != nil {
		fmt.Fprintf(opt.Log, "ewbench: %s: OTLP receiver: %v\n", tr.Target.Name, err)
		return
	}
	tr.Exported.Requests += after.Requests - before.Requests
	tr.Exported.Spans += after.Spans - before.Spans
	tr.Exported.Bytes += after.Bytes - before.Bytes
	tr.Exported.Bad += after.Bad - before.Bad
}

// exportNote says how many spans a traced target exported against the
// connections its load completed, so a run that dropped spans shows.
func exportNote(tr *TargetReport) string {
	var conns int64
	for _, runs := range tr.Runs {
		for _, r := range runs {
			if r.Connections > 0 {
				conns += r.Connections
			} else {
				conns += int64(r.Conns)
			}
		}
	}
	e := tr.Exported
	return fmt.Sprintf("%s: the OTLP receiver got %d spans in %d export requests (%.1f MB, %d unreadable) for %d connections the load completed",
		tr.Target.Name, e.Spans, e.Requests, float64(e.Bytes)/1e6, e.Bad, conns)
}

// runTarget starts tr's proxy, runs every mode once, and stops it.
func runTarget(ctx context.Context, opt *Options, procs *procSet, bins binaries, lay layout, pki string, tr *TargetReport, round int) {
	fmt.Fprintf(opt.Log, "ewbench: round %d/%d: %s\n", round, opt.Rounds, tr.Target.Name)
	px, err := startTarget(ctx, opt, procs, bins, lay, tr.Target)
	if err != nil {
		if round == 1 {
			tr.Skipped = fmt.Sprintf("did not start: %v", err)
			fmt.Fprintf(opt.Log, "ewbench: %s skipped: %v\n", tr.Target.Name, err)
			return
		}
		px = nil
	}
	if px != nil {
		defer px.stop()
		for _, n := range px.notes() {
			if !contains(tr.Notes, n) {
				tr.Notes = append(tr.Notes, n)
			}
		}
	}
	for _, m := range opt.modes() {
		var res *LoadResult
		if px == nil {
			res = &LoadResult{Mode: m.Load, Error: fmt.Sprintf("target did not start: %v", err)}
		} else {
			res = runLoad(ctx, opt, m, px, pki)
			if res.Error == "" && !px.alive() {
				res.Error = "the proxy exited during the run: " + px.stderrTail()
			}
		}
		if res.Error != "" {
			fmt.Fprintf(opt.Log, "ewbench: %s %s round %d FAILED: %s\n", tr.Target.Name, m.Name, round, res.Error)
		}
		tr.Runs[m.Name] = append(tr.Runs[m.Name], res)
		if !opt.Smoke {
			time.Sleep(300 * time.Millisecond) // let TIME_WAIT and timers settle between modes
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// runLoad runs the load tool as a child process for one mode.
func runLoad(ctx context.Context, opt *Options, m Mode, px *proxyProc, pki string) *LoadResult {
	conns := m.Conns
	if m.Load == ModeIdle {
		conns = opt.IdleConns
	}
	args := []string{
		"-mode", m.Load, "-addr", px.addr, "-tls-addr", px.tlsAddr, "-conns", fmt.Sprint(conns),
		"-workers", fmt.Sprint(opt.Workers), "-duration", opt.Duration.String(), "-pki", pki,
	}
	if px.pid > 0 {
		args = append(args, "-pid", fmt.Sprint(px.pid))
	}
	if px.metrics != "" {
		args = append(args, "-metrics", px.metrics)
	}
	if opt.Smoke {
		args = append(args, "-settle", "50ms")
	}
	timeout := 3*opt.Duration + 90*time.Second
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := childCmd(lctx, opt, "load", 0, args)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &capped{b: &stderr, max: 4096}
	runErr := cmd.Run()
	var res LoadResult
	if err := json.Unmarshal(lastLine(stdout.Bytes()), &res); err != nil {
		return &LoadResult{Mode: m.Load, Error: fmt.Sprintf("load tool: %v (%v): %s", runErr, err, tail(stderr.Bytes(), 300))}
	}
	if runErr != nil && res.Error == "" {
		res.Error = fmt.Sprintf("load tool: %v", runErr)
	}
	return &res
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

// childCmd is the load tool or the sink: this binary with ChildEnv set,
// pinned to cpu when opt.Taskset.
func childCmd(ctx context.Context, opt *Options, role string, cpu int, args []string) *exec.Cmd {
	cmd := pinned(ctx, opt, cpu, opt.ChildExe, args)
	cmd.Env = append(os.Environ(), ChildEnv+"="+role)
	return cmd
}

// pinned builds a command in its own process group (so stopping it stops
// its children), killed with the group when ctx ends or the runner dies.
func pinned(ctx context.Context, opt *Options, cpu int, name string, args []string) *exec.Cmd {
	if opt.Taskset {
		args = append([]string{"-c", fmt.Sprint(cpu), name}, args...)
		name = "taskset"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// sinkProc is the one sink every target forwards to.
type sinkProc struct {
	raw, tls string
	otlp     string
	mu       sync.Mutex
	nerr     int
	first    []string
}

func (s *sinkProc) errors() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nerr, s.first
}

func startSink(ctx context.Context, opt *Options, procs *procSet, pki string) (*sinkProc, error) {
	cmd := childCmd(context.WithoutCancel(ctx), opt, "sink", 0, []string{"-pki", pki})
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	procs.add(cmd)
	s := &sinkProc{}
	go func() {
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			s.mu.Lock()
			s.nerr++
			if len(s.first) < 3 {
				s.first = append(s.first, sc.Text())
			}
			s.mu.Unlock()
		}
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case l, ok := <-lines:
		if !ok {
			return nil, errors.New("sink exited before listening")
		}
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "raw="); ok {
				s.raw = v
			}
			if v, ok := strings.CutPrefix(f, "tls="); ok {
				s.tls = v
			}
			if v, ok := strings.CutPrefix(f, "otlp="); ok {
				s.otlp = v
			}
		}
		if s.raw == "" || s.tls == "" || s.otlp == "" {
			return nil, fmt.Errorf("sink said %q", l)
		}
		return s, nil
	case <-time.After(15 * time.Second):
		return nil, errors.New("sink did not start within 15 s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// proxyProc is a started target; pid 0 for direct.
type proxyProc struct {
	addr, tlsAddr string
	pid           int
	metrics       string
	cmd           *exec.Cmd
	procs         *procSet
	stderr        *capped
	done          chan struct{}
}

func (p *proxyProc) alive() bool {
	if p.cmd == nil {
		return true
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proxyProc) stderrTail() string {
	if p.stderr == nil {
		return ""
	}
	return tail(p.stderr.bytes(), 300)
}

// notes are the lines a proxy printed about its forwarder.
func (p *proxyProc) notes() []string {
	if p.stderr == nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(p.stderr.bytes()), "\n") {
		if strings.Contains(l, "msg=forwarder") || strings.Contains(l, "WARNING") || strings.Contains(l, "[warn]") {
			if i := strings.Index(l, "msg="); i >= 0 {
				l = l[i:]
			}
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// stop ends the proxy: SIGTERM to its group, SIGKILL after 5 s.
func (p *proxyProc) stop() {
	if p.cmd == nil {
		return
	}
	p.procs.stop(p.cmd, p.done)
}

func startTarget(ctx context.Context, opt *Options, procs *procSet, bins binaries, lay layout, t Target) (*proxyProc, error) {
	if t.Kind == KindDirect {
		return &proxyProc{addr: lay.sinkRaw, tlsAddr: lay.sinkTL}, nil
	}
	dir := filepath.Join(lay.dir, t.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	write := func(name, content string) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, []byte(content), 0o600)
	}
	var name string
	var args []string
	px := &proxyProc{addr: lay.proxy, tlsAddr: lay.proxy, procs: procs}
	switch t.Kind {
	case KindEastwest:
		meshFile, err := write("mesh.yaml", lay.meshYAML())
		if err != nil {
			return nil, err
		}
		settings, err := write("settings.yaml", lay.eastwestSettings(t, meshFile))
		if err != nil {
			return nil, err
		}
		name, args = bins.eastwest, []string{"run", "-c", settings}
		px.metrics = "http://" + lay.admin + "/metrics"
	case KindHAProxy:
		mapFile, err := write("sni.map", lay.haproxyMap())
		if err != nil {
			return nil, err
		}
		cfg, err := write("haproxy.cfg", lay.haproxyConfig(mapFile))
		if err != nil {
			return nil, err
		}
		name, args = bins.haproxy, []string{"-db", "-f", cfg}
	case KindNginx:
		l := lay
		l.dir = dir
		cfg, err := write("nginx.conf", l.nginxConfig())
		if err != nil {
			return nil, err
		}
		name, args = bins.nginx, []string{"-p", dir, "-e", filepath.Join(dir, "nginx-error.log"), "-c", cfg}
	default:
		return nil, fmt.Errorf("target %s: unknown kind %q", t.Name, t.Kind)
	}
	cmd := pinned(context.WithoutCancel(ctx), opt, 1, name, args)
	px.stderr = &capped{b: &bytes.Buffer{}, max: 64 << 10}
	cmd.Stdout = io.Discard
	cmd.Stderr = px.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	px.cmd, px.pid = cmd, cmd.Process.Pid
	px.done = procs.add(cmd)
	if err := waitReady(ctx, px); err != nil {
		px.stop()
		if t.Kind == KindNginx {
			if b, rerr := os.ReadFile(filepath.Join(dir, "nginx-error.log")); rerr == nil {
				err = fmt.Errorf("%w: %s", err, tail(b, 300))
			}
		}
		return nil, err
	}
	return px, nil
}

// waitReady waits until the proxy accepts connections (and, for eastwest,
// says ready), for at most 20 s.
func waitReady(ctx context.Context, px *proxyProc) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if !px.alive() {
			return fmt.Errorf("exited: %s", px.stderrTail())
		}
		if ok := probe(ctx, px); ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 20 s: %s", px.stderrTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, px *proxyProc) bool {
	if px.metrics != "" {
		url := strings.TrimSuffix(px.metrics, "/metrics") + "/ready"
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	c, err := net.DialTimeout("tcp", px.addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// procSet tracks every process Run started so that none outlives it.
type procSet struct {
	mu   sync.Mutex
	cmds map[*exec.Cmd]chan struct{}
}

// add starts waiting for cmd and returns a channel closed when it exits.
func (s *procSet) add(cmd *exec.Cmd) chan struct{} {
	done := make(chan struct{})
	s.mu.Lock()
	if s.cmds == nil {
		s.cmds = map[*exec.Cmd]chan struct{}{}
	}
	s.cmds[cmd] = done
	s.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return done
}

// stop sends SIGTERM to cmd's process group, then SIGKILL after 5 s, and
// waits for it.
func (s *procSet) stop(cmd *exec.Cmd, done chan struct{}) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers in the group (nginx workers)
	s.mu.Lock()
	delete(s.cmds, cmd)
	s.mu.Unlock()
}

func (s *procSet) killAll() {
	s.mu.Lock()
	cmds := make(map[*exec.Cmd]chan struct{}, len(s.cmds))
	for c, d := range s.cmds {
		cmds[c] = d
	}
	s.mu.Unlock()
	for c, d := range cmds {
		s.stop(c, d)
	}
}

// capped is a goroutine-safe writer that keeps the first max bytes.
type capped struct {
	mu  sync.Mutex
	b   *bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.b.Bytes())
}

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.ReplaceAll(string(b), "\n", " | ")
}
