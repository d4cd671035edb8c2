// Command ewbench measures eastwest against direct connections, HAProxy and
// nginx with one command, and writes bench/results/<date>-<machine>.md and
// an SVG chart next to it. See bench/README.md.
//
//	go run ./bench/cmd/ewbench -taskset
//	go run ./bench/cmd/ewbench -smoke -targets direct,eastwest-splice
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/eastwest-gw/eastwest/bench"
)

func main() {
	// The runner starts this same binary as its load tool and sink.
	if role := os.Getenv(bench.ChildEnv); role != "" {
		os.Exit(bench.ChildMain(role, os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ewbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	targets := fs.String("targets", "", "comma-separated targets (default all: direct,eastwest-splice,eastwest-sockmap,eastwest-auto,eastwest-auto-traced,haproxy,nginx)")
	modes := fs.String("modes", "", "comma-separated modes (default all: idle,latency,tput1,tput8,connrate,connrate-tls)")
	fs.IntVar(&o.Rounds, "rounds", 0, "rounds, targets alternating within each (default 3, smoke 1)")
	fs.BoolVar(&o.Smoke, "smoke", false, "tiny durations and counts: checks that everything runs, measures nothing")
	fs.BoolVar(&o.Taskset, "taskset", false, "pin the proxy to CPU 1, the load tool and sink to CPU 0")
	fs.DurationVar(&o.Duration, "duration", 0, "length of each timed mode (default 4s, smoke 150ms)")
	fs.IntVar(&o.IdleConns, "idle", 0, "idle connections to hold (default 9900, smoke 20)")
	fs.IntVar(&o.Workers, "workers", 0, "connection-rate workers (default 32, smoke 4)")
	fs.BoolVar(&o.Install, "install", true, "apt-get install haproxy, nginx and libnginx-mod-stream when missing")
	fs.StringVar(&o.EastwestBin, "eastwest", "", "gateway binary (default: go build ./cmd/eastwest)")
	out := fs.String("out", "", `results file (default bench/results/<date>-<machine>.md; "-" for none; smoke: none)`)
	timeout := fs.Duration("timeout", 45*time.Minute, "abort the whole run after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *targets != "" {
		o.Targets = strings.Split(*targets, ",")
	}
	if *modes != "" {
		o.Modes = strings.Split(*modes, ",")
	}
	o.Command = "go run ./bench/cmd/ewbench " + strings.Join(args, " ")
	o.Log = stderr
	if *out == "" && !o.Smoke {
		*out = filepath.Join("bench", "results", time.Now().Format("2006-01-02")+"-"+machineName()+".md")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, o)
	if rep == nil {
		fmt.Fprintln(stderr, "ewbench:", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "ewbench: run cut short:", err)
	}
	fmt.Fprint(stdout, rep.Markdown(""))
	if *out != "" && *out != "-" {
		if werr := rep.WriteFiles(*out); werr != nil {
			fmt.Fprintln(stderr, "ewbench:", werr)
			return 1
		}
		fmt.Fprintln(stderr, "ewbench: wrote", *out)
	}
	if err != nil || len(rep.Failures()) > 0 {
		return 1
	}
	return 0
}

// machineName is "<cores>vcpu-linux<major.minor>", e.g. 2vcpu-linux6.18.
func machineName() string {
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	parts := strings.SplitN(strings.TrimSpace(string(k)), ".", 3)
	ver := strings.Join(parts[:min(2, len(parts))], ".")
	return fmt.Sprintf("%dvcpu-linux%s", runtime.NumCPU(), ver)
}
