package bench_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/bench"
)

// TestScaleSmoke runs every phase of ewscale at a tiny size: it asserts
// that each path produced its figures without error, never a speed.
func TestScaleSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench.RunScale(ctx, bench.ScaleOptions{
		Services: 20, Ports: 2, Endpoints: 4,
		Lookups: 2000, FullRuns: 1, Updates: 5, XDSUpdates: 2, Idle: 20 * time.Millisecond,
		Command: "go test ./bench -run TestScaleSmoke",
		Log:     logWriter{t},
	})
	if err != nil {
		t.Fatalf("RunScale: %v", err)
	}
	md := rep.Markdown()
	t.Log("\n" + md)

	positive := func(name string, d ...time.Duration) {
		t.Helper()
		if len(d) == 0 {
			t.Errorf("%s: no figure", name)
		}
		for _, v := range d {
			if v <= 0 {
				t.Errorf("%s: %v", name, v)
			}
		}
	}
	positive("direct build", rep.DirectBuild...)
	positive("direct apply", rep.DirectApply...)
	positive("YAML load", rep.YAMLLoad...)
	positive("YAML apply", rep.YAMLApply...)
	positive("direct update", rep.DirectTotal.P50, rep.DirectSwap.Max)
	positive("lookup", rep.LookupAll.Max, rep.LookupBatchAvg)
	if rep.DirectTotal.N != 5 || rep.LookupAll.N != 2000 || rep.LookupHit.N+rep.LookupMiss.N != 2000 {
		t.Errorf("counts: updates %d, lookups %d = %d + %d", rep.DirectTotal.N, rep.LookupAll.N, rep.LookupHit.N, rep.LookupMiss.N)
	}
	if rep.YAMLFiles == 0 || rep.YAMLBytes == 0 || rep.ServicePorts != 40 || rep.Endpoints != 160 {
		t.Errorf("YAML %d files %d bytes, %d service-ports, %d endpoints", rep.YAMLFiles, rep.YAMLBytes, rep.ServicePorts, rep.Endpoints)
	}
	if len(rep.XDS) != 2 {
		t.Fatalf("%d xDS modes measured, want sotw and delta", len(rep.XDS))
	}
	for _, x := range rep.XDS {
		t.Run(x.Mode, func(t *testing.T) {
			// One timed run plus the one kept for updates.
			if len(x.Full) != 2 || x.Update.N != 2 || x.Publishes < 2 {
				t.Fatalf("full runs %d, updates %d, publishes %d", len(x.Full), x.Update.N, x.Publishes)
			}
			positive("full", x.Full...)
			positive("full apply", x.FullApply...)
			positive("update", x.Update.P50, x.UpdateApply.P50)
		})
	}
	if len(rep.Memory) != 7 || len(rep.IdleCPU) != 2 || len(rep.Goroutines) != 4 {
		t.Errorf("%d memory figures, %d idle figures, %d goroutine counts", len(rep.Memory), len(rep.IdleCPU), len(rep.Goroutines))
	}
	for _, want := range []string{"## Issue 9 targets", "| full snapshot < 1 s | xDS delta", "route lookup p99 < 5 us", "## Heap after GC"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	dir := t.TempDir()
	path, err := rep.WriteFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(path) != dir || !strings.Contains(filepath.Base(path), "-scale-"+bench.MachineName()+".md") {
		t.Errorf("wrote %s", path)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != md {
		t.Errorf("file content differs from Markdown (err %v)", err)
	}
}
