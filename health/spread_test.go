package health

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// 1,000 endpoints on 1,000 distinct loopback addresses, checked every
// second: the checks spread over the period instead of coming in a burst.
// The CPU the process used (checker and the 1,000 servers together) is
// logged for the record; nothing asserts on it.
func TestThousandEndpointsSpread(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s of real checks")
	}
	checkGoroutines(t)
	const n = 1000
	var mu sync.Mutex
	var arrivals []time.Time
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	var wg sync.WaitGroup
	targets := make([]Target, 0, n)
	for i := range n {
		// 127.0.1.1 .. 127.0.4.250: all loopback, each its own address.
		host := fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
		ln, err := net.Listen("tcp", host+":0")
		if err != nil {
			t.Skipf("cannot listen on %s: %v", host, err)
		}
		addr := netip.MustParseAddrPort(ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = srv.Serve(ln)
		}()
		targets = append(targets, Target{
			Endpoint: netip.AddrPortFrom(addr.Addr(), 9080),
			Cluster:  "outbound_.9080_._.svc" + fmt.Sprint(i%10),
			// A long timeout: on a starved machine checks are slow, not failing.
			Config: CheckConfig{Host: "*", Interval: time.Second, Timeout: 5 * time.Second, HTTPGet: &HTTPGetAction{Path: "/healthz/ready", Port: addr.Port()}},
		})
	}
	t.Cleanup(func() {
		_ = srv.Close()
		wg.Wait()
	})

	sink := newRecordSink()
	logger, logs := testLogger()
	c := New(Options{Sink: sink, Logger: logger})
	before := rusage(t)
	start := time.Now()
	c.Update(targets)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	// Wait for the first round (rate-limited to 1000/s), then measure two
	// periods of steady state.
	deadline := time.Now().Add(15 * time.Second)
	for healthyCount(sink, targets) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	steadyFrom := time.Now()
	firstRound := steadyFrom.Sub(start)
	time.Sleep(2 * time.Second)
	cancel()
	<-done
	elapsed := time.Since(start)
	after := rusage(t)

	if h := healthyCount(sink, targets); h != n {
		reasons := map[string]int{}
		for _, line := range strings.Split(logs.String(), "\n") {
			if i := strings.Index(line, "reason="); i >= 0 && !strings.Contains(line, "to=healthy") {
				reasons[line[i:]]++
			}
		}
		t.Fatalf("%d of %d endpoints healthy after %v; failure reasons: %v", h, n, firstRound, reasons)
	}
	mu.Lock()
	got := append([]time.Time(nil), arrivals...)
	mu.Unlock()
	var steady []time.Time
	for _, at := range got {
		if d := at.Sub(steadyFrom); d >= 0 && d < 2*time.Second {
			steady = append(steady, at)
		}
	}
	fullest, _ := bucketSpread(steady, steadyFrom, 100*time.Millisecond, 20)
	t.Logf("all %d healthy after %v; steady state: %d checks in 2 s, fullest 100 ms bucket %d (even: %d)",
		n, firstRound.Round(time.Millisecond), len(steady), fullest, len(steady)/20)
	if fullest > n/2 {
		t.Errorf("burst: %d of %d checks in one 100 ms bucket", fullest, len(steady))
	}
	// A starved machine (other jobs on the cores) delays checks and they
	// bunch up on catching up; judge evenness only when they kept pace.
	if len(steady) >= 18*n/10 && fullest > 3*len(steady)/20 {
		t.Errorf("uneven: %d of %d checks in one 100 ms bucket", fullest, len(steady))
	}
	cpu := (after.user - before.user) + (after.sys - before.sys)
	t.Logf("CPU (process: checker + 1000 loopback servers): user %v sys %v over %v wall = %.1f%% of one core, %.0f µs per check",
		(after.user - before.user).Round(time.Millisecond), (after.sys - before.sys).Round(time.Millisecond),
		elapsed.Round(time.Millisecond), 100*cpu.Seconds()/elapsed.Seconds(), float64(cpu.Microseconds())/float64(len(got)))
}

func healthyCount(s *recordSink, ts []Target) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, tg := range ts {
		if h, ok := s.healthy[tg.Endpoint]; ok && h {
			n++
		}
	}
	return n
}

type cpuTimes struct{ user, sys time.Duration }

func rusage(tb testing.TB) cpuTimes {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return cpuTimes{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}
