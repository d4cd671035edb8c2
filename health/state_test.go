package health

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// HC-1, SEMANTICS 4.2: a new endpoint is pending (not routable) until its
// first check; a single pass then marks it healthy whatever the threshold.
func TestStartupSinglePass(t *testing.T) {
	e := newEnv(t, Options{})
	cfg := exactCfg()
	cfg.SuccessThreshold = 5
	ep := ap("10.0.0.1:9080")
	e.c.Update([]Target{{Endpoint: ep, Cluster: "c1", Config: cfg}})
	if e.sink.state(ep) {
		t.Fatal("new endpoint routable before its first check")
	}
	if e.c.Pending() != 1 {
		t.Fatalf("Pending = %d, want 1", e.c.Pending())
	}
	at := e.runOne(t, pass)
	if !e.sink.state(ep) {
		t.Fatal("one pass at start-up did not mark the endpoint healthy")
	}
	if e.c.Pending() != 0 {
		t.Fatalf("Pending = %d after the first check", e.c.Pending())
	}
	if got := e.next(t).Sub(at); got != time.Second {
		t.Fatalf("next check after %v, want the interval 1s", got)
	}
	if !strings.Contains(e.logs.String(), "from=pending to=healthy") {
		t.Fatalf("no transition log line:\n%s", e.logs)
	}
}

// A first check that fails leaves the endpoint unhealthy, and then it needs
// SuccessThreshold passes like any unhealthy endpoint.
func TestStartupFailureNeedsThreshold(t *testing.T) {
	e := newEnv(t, Options{})
	ep := ap("10.0.0.1:9080")
	e.c.Update([]Target{{Endpoint: ep, Cluster: "c1", Config: exactCfg()}})
	e.runOne(t, netFail)
	if e.sink.state(ep) {
		t.Fatal("healthy after a failed first check")
	}
	e.runOne(t, pass)
	if e.sink.state(ep) {
		t.Fatal("healthy after 1 of 2 passes")
	}
	e.runOne(t, pass)
	if !e.sink.state(ep) {
		t.Fatal("not healthy after 2 of 2 passes")
	}
}

func TestThresholds(t *testing.T) {
	tests := []struct {
		name string
		seq  []result
		want []bool // verdict after each result, after a first pass
	}{
		{"network failures count to 3", []result{netFail, netFail, netFail}, []bool{true, true, false}},
		{"timeouts count like network failures", []result{timeout, timeout, timeout}, []bool{true, true, false}},
		{"a pass resets the count", []result{netFail, netFail, pass, netFail, netFail, netFail}, []bool{true, true, true, true, true, false}},
		{"a bad answer fails at once", []result{bad}, []bool{false}},
		{"a retriable status counts", []result{{outcome: failActive, retriable: true}, {outcome: failActive, retriable: true}, bad}, []bool{true, true, false}},
		{"two passes readmit", []result{bad, pass, pass}, []bool{false, false, true}},
		{"a failure resets the pass count", []result{bad, pass, netFail, pass, pass}, []bool{false, false, false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			ep := ap("10.0.0.1:9080")
			e.c.Update([]Target{{Endpoint: ep, Cluster: "c1", Config: exactCfg()}})
			e.runOne(t, pass)
			for i, r := range tt.seq {
				e.runOne(t, r)
				if got := e.sink.state(ep); got != tt.want[i] {
					t.Fatalf("after result %d (%v): healthy=%v, want %v", i, r.reason, got, tt.want[i])
				}
			}
		})
	}
}

// Envoy's interval(): edge intervals while a threshold is being counted,
// unhealthy_interval for an unhealthy host, interval otherwise.
func TestEdgeIntervals(t *testing.T) {
	e := newEnv(t, Options{})
	cfg := exactCfg()
	cfg.UnhealthyInterval = 5 * time.Second
	cfg.UnhealthyEdgeInterval = 300 * time.Millisecond
	cfg.HealthyEdgeInterval = 200 * time.Millisecond
	e.c.Update([]Target{{Endpoint: ap("10.0.0.1:9080"), Cluster: "c1", Config: cfg}})
	steps := []struct {
		r    result
		want time.Duration
	}{
		{pass, time.Second},               // start-up: healthy, changed
		{pass, time.Second},               // healthy, unchanged
		{netFail, 300 * time.Millisecond}, // 1/3: pending
		{netFail, 300 * time.Millisecond}, // 2/3: pending
		{netFail, 5 * time.Second},        // 3/3: unhealthy, changed
		{netFail, 5 * time.Second},        // still unhealthy
		{pass, 200 * time.Millisecond},    // 1/2: pending
		{pass, time.Second},               // 2/2: healthy, changed
		{bad, 5 * time.Second},            // immediate: changed
	}
	for i, s := range steps {
		at := e.runOne(t, s.r)
		if got := e.next(t).Sub(at); got != s.want {
			t.Fatalf("step %d (%s): next check after %v, want %v", i, s.r.reason, got, s.want)
		}
	}
}

func TestDefaultsFollowInterval(t *testing.T) {
	e := newEnv(t, Options{})
	cfg := CheckConfig{Host: "*", PeriodSeconds: 7, InitialJitter: dur(0)}
	e.c.Update([]Target{{Endpoint: ap("10.0.0.1:9080"), Cluster: "c1", Config: cfg}})
	for i, want := range []time.Duration{7 * time.Second, 7 * time.Second, 7 * time.Second} {
		at := e.runOne(t, []result{pass, netFail, bad}[i])
		if got := e.next(t).Sub(at); got != want {
			t.Fatalf("step %d: %v, want %v", i, got, want)
		}
	}
}

func TestNoTrafficInterval(t *testing.T) {
	traffic := map[string]bool{}
	e := newEnv(t, Options{ClusterHasTraffic: func(c string) bool { return traffic[c] }})
	cfg := exactCfg()
	cfg.NoTrafficInterval = 60 * time.Second
	cfg.NoTrafficHealthyInterval = 120 * time.Second
	e.c.Update([]Target{{Endpoint: ap("10.0.0.1:9080"), Cluster: "c1", Config: cfg}})
	at := e.runOne(t, pass)
	if got := e.next(t).Sub(at); got != 120*time.Second {
		t.Fatalf("healthy without traffic: %v, want noTrafficHealthyInterval", got)
	}
	at = e.runOne(t, netFail)
	if got := e.next(t).Sub(at); got != 60*time.Second {
		t.Fatalf("failing without traffic: %v, want noTrafficInterval", got)
	}
	traffic["c1"] = true
	at = e.runOne(t, pass)
	if got := e.next(t).Sub(at); got != time.Second {
		t.Fatalf("with traffic: %v, want interval", got)
	}
}

// HC-1: jitter per host, within Envoy's bounds.
func TestJitter(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*CheckConfig)
		lo, hi time.Duration // bounds of the wait after a steady pass
	}{
		{"intervalJitter", func(c *CheckConfig) { c.IntervalJitter = 500 * time.Millisecond }, time.Second, 1500 * time.Millisecond},
		{"intervalJitterPercent", func(c *CheckConfig) { c.IntervalJitterPercent = 20 }, time.Second, 1200 * time.Millisecond},
		{"both", func(c *CheckConfig) { c.IntervalJitter = 100 * time.Millisecond; c.IntervalJitterPercent = 10 }, time.Second, 1200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			cfg := exactCfg()
			tt.mod(&cfg)
			e.c.Update([]Target{{Endpoint: ap("10.0.0.1:9080"), Cluster: "c1", Config: cfg}})
			seen := map[time.Duration]bool{}
			for range 200 {
				at := e.runOne(t, pass)
				d := e.next(t).Sub(at)
				if d < tt.lo || d >= tt.hi {
					t.Fatalf("wait %v outside [%v, %v)", d, tt.lo, tt.hi)
				}
				seen[d] = true
			}
			if len(seen) < 50 {
				t.Fatalf("only %d distinct waits in 200 checks: no jitter", len(seen))
			}
		})
	}
}

// bucketSpread puts times relative to start into n buckets of width w and
// returns the fullest bucket and how many fell outside.
func bucketSpread(times []time.Time, start time.Time, w time.Duration, n int) (fullest, outside int) {
	counts := make([]int, n)
	for _, at := range times {
		i := int(at.Sub(start) / w)
		if i < 0 || i >= n {
			outside++
			continue
		}
		counts[i]++
	}
	for _, c := range counts {
		fullest = max(fullest, c)
	}
	return fullest, outside
}

func manyTargets(n int, cfg CheckConfig) []Target {
	ts := make([]Target, n)
	for i := range ts {
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		ts[i] = Target{Endpoint: netip.AddrPortFrom(a, 9080), Cluster: "c1", Config: cfg}
	}
	return ts
}

// runAllDue completes every check due up to t with pass, repeatedly, and
// returns the start times.
func runAllDue(e *env, until time.Time) []time.Time {
	var starts []time.Time
	for {
		e.c.mu.Lock()
		if len(e.c.queue) == 0 || e.c.queue[0].due.After(until) {
			e.c.mu.Unlock()
			return starts
		}
		at := e.c.queue[0].due
		e.c.mu.Unlock()
		for _, p := range e.due(at) {
			starts = append(starts, at)
			e.c.complete(p, pass, at)
		}
	}
}

// initialJitter spreads first checks over [0, initialJitter); with it unset
// the first checks run at once and the second round spreads over one
// interval (the gateway's [IMPROVE]).
func TestInitialSpread(t *testing.T) {
	t.Run("initialJitter", func(t *testing.T) {
		e := newEnv(t, Options{})
		cfg := exactCfg()
		cfg.InitialJitter = dur(time.Second)
		start := e.clock.now()
		e.c.Update(manyTargets(1000, cfg))
		starts := runAllDue(e, start.Add(999*time.Millisecond))
		if len(starts) != 1000 {
			t.Fatalf("%d first checks in the jitter window, want 1000", len(starts))
		}
		if fullest, _ := bucketSpread(starts, start, 100*time.Millisecond, 10); fullest > 200 {
			t.Fatalf("%d of 1000 first checks in one 100ms bucket", fullest)
		}
	})
	t.Run("spread", func(t *testing.T) {
		e := newEnv(t, Options{MaxConcurrent: 1000})
		cfg := exactCfg()
		cfg.InitialJitter = nil
		start := e.clock.now()
		e.c.Update(manyTargets(1000, cfg))
		if first := e.due(start); len(first) != 1000 {
			t.Fatalf("%d first checks at once, want 1000", len(first))
		} else {
			for _, p := range first {
				e.c.complete(p, pass, start)
			}
		}
		starts := runAllDue(e, start.Add(time.Second))
		if len(starts) != 1000 {
			t.Fatalf("%d second checks within one interval, want 1000", len(starts))
		}
		if fullest, _ := bucketSpread(starts, start, 100*time.Millisecond, 10); fullest > 200 {
			t.Fatalf("%d of 1000 second checks in one 100ms bucket", fullest)
		}
		// And the phase holds: the third round is one interval later.
		third := runAllDue(e, start.Add(2*time.Second))
		if fullest, _ := bucketSpread(third, start.Add(time.Second), 100*time.Millisecond, 10); fullest > 200 || len(third) != 1000 {
			t.Fatalf("third round: %d checks, fullest bucket %d", len(third), fullest)
		}
	})
	t.Run("initialDelaySeconds", func(t *testing.T) {
		e := newEnv(t, Options{})
		cfg := exactCfg()
		cfg.InitialDelaySeconds = 5
		start := e.clock.now()
		e.c.Update(manyTargets(1, cfg))
		if got := e.next(t).Sub(start); got != 5*time.Second {
			t.Fatalf("first check after %v, want 5s", got)
		}
	})
}

// HC-4: one check per distinct address and spec, stats per cluster.
func TestDedup(t *testing.T) {
	e := newEnv(t, Options{})
	cfg := exactCfg()
	ep := ap("10.0.0.1:9080")
	other := ap("10.0.0.1:9090") // same pod, another service port: same 15021 check
	e.c.Update([]Target{
		{Endpoint: ep, Cluster: "outbound_.9080_._.reviews", Config: cfg},
		{Endpoint: ep, Cluster: "outbound_.9080_.v1_.reviews", Config: cfg},
		{Endpoint: ep, Cluster: "outbound_.9080_.v1_.reviews", Config: cfg}, // duplicate
		{Endpoint: other, Cluster: "outbound_.9090_._.ratings", Config: cfg},
	})
	batch := e.due(e.clock.now())
	if len(batch) != 1 {
		t.Fatalf("%d checks for one pod, want 1", len(batch))
	}
	if got := batch[0].addr; got != ap("10.0.0.1:15021") {
		t.Fatalf("check targets %v, want the sidecar's 15021", got)
	}
	e.c.complete(batch[0], bad, e.clock.now())
	if e.sink.state(ep) || e.sink.state(other) {
		t.Fatal("both endpoints of the pod should be unhealthy")
	}
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	for _, cl := range []string{"outbound_.9080_._.reviews", "outbound_.9080_.v1_.reviews", "outbound_.9090_._.ratings"} {
		if s := e.c.stats[cl]; s == nil || s.attempt != 1 || s.failure != 1 {
			t.Errorf("%s: stats %+v, want 1 attempt, 1 failure", cl, s)
		}
	}
}

// Two different checks of one endpoint: it is routable only if both pass.
func TestCombineChecks(t *testing.T) {
	e := newEnv(t, Options{})
	ep := ap("10.0.0.1:9080")
	a, b := exactCfg(), exactCfg()
	b.HTTPGet = &HTTPGetAction{Path: "/app", Port: 9080}
	e.c.Update([]Target{{Endpoint: ep, Cluster: "c1", Config: a}, {Endpoint: ep, Cluster: "c2", Config: b}})
	batch := e.due(e.clock.now())
	if len(batch) != 2 {
		t.Fatalf("%d checks, want 2", len(batch))
	}
	e.c.complete(batch[0], pass, e.clock.now())
	if e.sink.state(ep) {
		t.Fatal("healthy while the second check is pending")
	}
	e.c.complete(batch[1], pass, e.clock.now())
	if !e.sink.state(ep) {
		t.Fatal("not healthy after both passed")
	}
	batch = e.due(e.next(t))
	e.c.complete(batch[0], bad, e.clock.now())
	e.c.complete(batch[1], pass, e.clock.now())
	if e.sink.state(ep) {
		t.Fatal("healthy while one check fails")
	}
}

func TestUpdateKeepsStateAndForgets(t *testing.T) {
	e := newEnv(t, Options{})
	ep1, ep2 := ap("10.0.0.1:9080"), ap("10.0.0.2:9080")
	cfg := exactCfg()
	e.c.Update([]Target{{Endpoint: ep1, Cluster: "c1", Config: cfg}, {Endpoint: ep2, Cluster: "c1", Config: cfg}})
	for _, p := range e.due(e.clock.now()) {
		r := pass
		if p.addr.Addr() == ep2.Addr() {
			r = bad
		}
		e.c.complete(p, r, e.clock.now())
	}
	due := e.next(t)
	// Same targets again (a new snapshot): no state reset, no new check.
	e.c.Update([]Target{{Endpoint: ep1, Cluster: "c1", Config: cfg}, {Endpoint: ep2, Cluster: "c1", Config: cfg}})
	if !e.sink.state(ep1) || e.sink.state(ep2) || e.next(t) != due || e.c.Pending() != 0 {
		t.Fatal("Update of the same targets changed state")
	}
	// ep2 leaves: the Sink is told it is no longer failed by a check.
	e.c.Update([]Target{{Endpoint: ep1, Cluster: "c1", Config: cfg}})
	if !e.sink.state(ep2) {
		t.Fatal("a removed endpoint stays failed in the Sink")
	}
	// A check removed while running is discarded when it completes.
	batch := e.due(due)
	if len(batch) != 1 {
		t.Fatalf("%d checks due", len(batch))
	}
	e.c.Update(nil)
	e.c.complete(batch[0], bad, due)
	if !e.sink.state(ep1) {
		t.Fatal("a removed check's result reached the Sink")
	}
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	if len(e.c.queue) != 0 || len(e.c.probes) != 0 || len(e.c.stats) != 0 || len(e.c.pub) != 0 {
		t.Fatalf("state left after Update(nil): queue %d probes %d stats %d pub %d", len(e.c.queue), len(e.c.probes), len(e.c.stats), len(e.c.pub))
	}
}

// HC-3: every pass is published so the balancer can uneject an
// outlier-ejected endpoint.
func TestPassIsAlwaysPublished(t *testing.T) {
	e := newEnv(t, Options{})
	ep := ap("10.0.0.1:9080")
	e.c.Update([]Target{{Endpoint: ep, Cluster: "c1", Config: exactCfg()}})
	for range 3 {
		e.runOne(t, pass)
	}
	if n := e.sink.count(ep, true); n != 3 {
		t.Fatalf("SetHealthy(true) %d times for 3 passes, want 3", n)
	}
	e.runOne(t, netFail) // 1 of 3: nothing to say
	if n := e.sink.count(ep, false); n != 1 {
		t.Fatalf("SetHealthy(false) %d times, want only the pending one", n)
	}
}

func TestDegraded(t *testing.T) {
	e := newEnv(t, Options{})
	ep := ap("10.0.0.1:9080")
	e.c.Update([]Target{{Endpoint: ep, Cluster: "c1", Config: exactCfg()}})
	e.runOne(t, result{outcome: passed, degraded: true, reason: "status 200"})
	e.sink.mu.Lock()
	deg := e.sink.degraded[ep]
	e.sink.mu.Unlock()
	if !deg || !e.sink.state(ep) {
		t.Fatal("x-envoy-degraded pass: want healthy and degraded")
	}
	e.runOne(t, pass)
	e.sink.mu.Lock()
	deg = e.sink.degraded[ep]
	e.sink.mu.Unlock()
	if deg {
		t.Fatal("still degraded after a plain pass")
	}
	if !strings.Contains(e.logs.String(), "from=degraded to=healthy") {
		t.Fatalf("no degraded transition logged:\n%s", e.logs)
	}
}

// HC-6: OnUnhealthy on a healthy→unhealthy edge only, with the window.
func TestOnUnhealthy(t *testing.T) {
	type call struct {
		ep netip.AddrPort
		w  time.Duration
	}
	var calls []call
	e := newEnv(t, Options{OnUnhealthy: func(ep netip.AddrPort, w time.Duration) { calls = append(calls, call{ep, w}) }})
	closing := exactCfg()
	closing.CloseConnectionsOnHostHealthFailure = true
	closing.CloseConnectionsWindow = 30 * time.Second
	ep1, ep2 := ap("10.0.0.1:9080"), ap("10.0.0.2:9080")
	e.c.Update([]Target{{Endpoint: ep1, Cluster: "c1", Config: closing}, {Endpoint: ep2, Cluster: "c2", Config: exactCfg()}})
	for _, p := range e.due(e.clock.now()) {
		e.c.complete(p, netFail, e.clock.now()) // first check fails: never routable, nothing to close
	}
	if len(calls) != 0 {
		t.Fatalf("OnUnhealthy for endpoints that were never healthy: %v", calls)
	}
	for range 2 {
		for _, p := range e.due(e.next(t)) {
			e.c.complete(p, pass, e.clock.now())
		}
	}
	for _, p := range e.due(e.next(t)) {
		e.c.complete(p, bad, e.clock.now())
	}
	if len(calls) != 1 || calls[0] != (call{ep1, 30 * time.Second}) {
		t.Fatalf("OnUnhealthy calls %v, want only ep1 with 30s", calls)
	}
}

// HC-4: the token bucket caps checks per second, in due order.
func TestRateLimit(t *testing.T) {
	e := newEnv(t, Options{MaxChecksPerSecond: 100}) // bursts of 10
	start := e.clock.now()
	cfg := exactCfg()
	cfg.Interval = time.Hour
	e.c.Update(manyTargets(50, cfg))
	if n := len(e.due(start)); n != 10 {
		t.Fatalf("%d checks in the first burst, want 10", n)
	}
	_, wait := e.c.dispatch(start)
	if wait != 10*time.Millisecond {
		t.Fatalf("wait %v for the next token, want 10ms", wait)
	}
	if n := len(e.due(start.Add(100 * time.Millisecond))); n != 10 {
		t.Fatalf("%d checks after 100ms, want 10", n)
	}
	if n := len(e.due(start.Add(400 * time.Millisecond))); n != 10 {
		t.Fatalf("%d checks after a long pause, want the burst of 10", n)
	}
}

func TestMaxConcurrent(t *testing.T) {
	e := newEnv(t, Options{MaxConcurrent: 3})
	e.c.Update(manyTargets(5, exactCfg()))
	batch := e.due(e.clock.now())
	if len(batch) != 3 {
		t.Fatalf("%d checks in flight, want 3", len(batch))
	}
	e.c.complete(batch[0], pass, e.clock.now())
	if more := e.due(e.clock.now()); len(more) != 1 {
		t.Fatalf("%d checks after one completed, want 1", len(more))
	}
}

func TestInvalidConfigSkipped(t *testing.T) {
	e := newEnv(t, Options{})
	cfg := exactCfg()
	cfg.Exec = &ExecAction{Command: []string{"true"}}
	e.c.Update([]Target{{Endpoint: ap("10.0.0.1:9080"), Cluster: "c1", Config: cfg}})
	if e.c.Pending() != 0 || !strings.Contains(e.logs.String(), "exec probes cannot run") {
		t.Fatalf("invalid config not rejected with a log line:\n%s", e.logs)
	}
}

func TestRandomSeedDiffers(t *testing.T) {
	// Two checkers without a Rand draw different jitter.
	a := New(Options{MaxChecksPerSecond: -1})
	b := New(Options{MaxChecksPerSecond: -1})
	same := 0
	for range 10 {
		if a.randN(time.Hour) == b.randN(time.Hour) {
			same++
		}
	}
	if same == 10 {
		t.Fatal("default random sources are identical")
	}
}
