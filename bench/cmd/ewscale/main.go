// Command ewscale measures eastwest at mesh scale (issue 9): 10,000
// services x 2 ports x 10 endpoints by default, delivered as mesh values,
// Istio YAML and xDS from an in-process control plane. It prints a markdown
// report and, with -out, writes it to bench/results/. See bench/README.md.
//
//	go run ./bench/cmd/ewscale -out bench/results/
//	go run ./bench/cmd/ewscale -services 100 -lookups 10000 -cpuprofile /tmp/scale.pprof
//	go run ./bench/cmd/ewscale -update-profiles /tmp/update   # /tmp/update-direct.pprof, -xds-sotw, -xds-delta
//	go run ./bench/cmd/ewscale -phases xds -runs 5 -cpuprofile /tmp/xds.pprof   # the xDS client only
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/eastwest-gw/eastwest/bench"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ewscale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.ScaleOptions
	fs.IntVar(&o.Services, "services", 0, "services (default 10000)")
	fs.IntVar(&o.Ports, "ports", 0, "ports per service (default 2)")
	fs.IntVar(&o.Endpoints, "endpoints", 0, "endpoints per service (default 10)")
	fs.IntVar(&o.Lookups, "lookups", 0, "timed route lookups (default 1000000)")
	fs.Float64Var(&o.MissFraction, "miss", 0, "share of lookups for missing names (default 0.5)")
	fs.IntVar(&o.FullRuns, "runs", 0, "full-snapshot runs per path (default 3)")
	fs.IntVar(&o.Updates, "updates", 0, "one-cluster updates on the direct path (default 200)")
	fs.IntVar(&o.XDSUpdates, "xds-updates", 0, "one-cluster updates per xDS mode (default 20)")
	fs.DurationVar(&o.Idle, "idle", 0, "idle window for the CPU figure (default 3s)")
	modes := fs.String("xds", "sotw,delta", `xDS modes to measure, comma-separated; "none" for none`)
	phases := fs.String("phases", "direct,yaml,xds", "phases to run, comma-separated: direct, yaml, xds (the modes of -xds)")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed (default 1)")
	out := fs.String("out", "", "write the report to this file, or to <date>-scale-<machine>.md in this directory")
	fs.StringVar(&o.UpdateProfiles, "update-profiles", "", "profile only the one-cluster update loops, into PREFIX-<phase>.pprof (not with -cpuprofile)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run, labelled by phase and side (go tool pprof -tags)")
	timeout := fs.Duration("timeout", 20*time.Minute, "abort the run after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.XDSModes = []string{}
	if *modes != "none" && *modes != "" {
		o.XDSModes = strings.Split(*modes, ",")
	}
	o.Phases = strings.Split(*phases, ",")
	o.Command = strings.TrimSpace("go run ./bench/cmd/ewscale " + strings.Join(args, " "))
	o.Log = stderr

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if *cpuProfile != "" && o.UpdateProfiles != "" {
		fmt.Fprintln(stderr, "ewscale: -cpuprofile and -update-profiles exclude each other")
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "ewscale:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "ewscale:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.RunScale(ctx, o)
	if rep == nil {
		fmt.Fprintln(stderr, "ewscale:", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "ewscale: run cut short:", err)
	}
	fmt.Fprint(stdout, rep.Markdown())
	if *out != "" {
		path, werr := rep.WriteFile(*out)
		if werr != nil {
			fmt.Fprintln(stderr, "ewscale:", werr)
			return 1
		}
		fmt.Fprintln(stderr, "ewscale: wrote", path)
	}
	if err != nil {
		return 1
	}
	return 0
}
