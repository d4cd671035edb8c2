package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// ChildEnv names the environment variable that turns a binary holding this
// package (ewbench, or the package's test binary) into the load tool or the
// sink: its value is "load" or "sink", the arguments are those of ewload or
// ewsink. The runner starts its children this way so that one binary is
// enough.
const ChildEnv = "EWBENCH_CHILD"

// ChildMain runs the child named by role with args and returns the exit
// code.
func ChildMain(role string, args []string, stdout, stderr io.Writer) int {
	switch role {
	case "load":
		return LoadMain(args, stdout, stderr)
	case "sink":
		return SinkMain(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "%s=%q: want load or sink\n", ChildEnv, role)
	return 2
}

// LoadMain is ewload: it runs one mode and prints a LoadResult as JSON on
// stdout. The exit code is 1 when the run failed (Error set), 2 for bad
// flags.
func LoadMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ewload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c LoadConfig
	fs.StringVar(&c.Mode, "mode", ModeThroughput, "throughput, latency, connrate, connrate-tls or idle")
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:15443", "target address (proxy or sink raw port)")
	fs.StringVar(&c.TLSAddr, "tls-addr", "", "target for connrate-tls (default -addr)")
	fs.StringVar(&c.SNI, "sni", DefaultSNI, "SNI of the raw-mode ClientHello")
	fs.StringVar(&c.TLSSNI, "tls-sni", DefaultTLSSNI, "SNI of the TLS-mode handshake")
	fs.IntVar(&c.Conns, "conns", 1, "throughput streams, or idle connections to hold")
	fs.IntVar(&c.Workers, "workers", 32, "connection-rate workers")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "length of a timed mode")
	fs.IntVar(&c.MsgSize, "msg", 64, "ping size in bytes")
	fs.StringVar(&c.PKIDir, "pki", "", "certificate folder (written by ewsink or EnsurePKI)")
	fs.IntVar(&c.PID, "pid", 0, "proxy process to measure (with its children)")
	fs.StringVar(&c.MetricsURL, "metrics", "", "proxy's Prometheus URL, for go_goroutines")
	fs.DurationVar(&c.Settle, "settle", time.Second, "idle: wait before reading the proxy's memory")
	timeout := fs.Duration("timeout", 0, "abort after this long (default: 3x duration + 60s)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *timeout <= 0 {
		*timeout = 3*c.Duration + 60*time.Second
	}
	if _, err := RaiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, "ewload:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := RunLoad(ctx, c)
	if err != nil {
		fmt.Fprintln(stderr, "ewload:", err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(stderr, "ewload:", err)
		return 1
	}
	if res.Error != "" {
		fmt.Fprintln(stderr, "ewload: FAILED:", res.Error)
		return 1
	}
	return 0
}

// SinkMain is ewsink: it serves until SIGTERM or SIGINT, after printing
// "raw=ADDR tls=ADDR otlp=ADDR pki=DIR" on stdout. Unexpected connection
// errors go to stderr. otlp is an OTLPReceiver for traced targets.
func SinkMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ewsink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawAddr := fs.String("raw", "127.0.0.1:0", "raw listener (hello, then command D or E)")
	tlsAddr := fs.String("tls", "127.0.0.1:0", "TLS 1.3 echo listener")
	otlpAddr := fs.String("otlp", "127.0.0.1:0", "OTLP/HTTP trace receiver (reads, counts and discards spans)")
	pki := fs.String("pki", "", "certificate folder; created with a new CA when it has no ca.pem")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *pki == "" {
		dir, err := os.MkdirTemp("", "ewsink-pki-")
		if err != nil {
			fmt.Fprintln(stderr, "ewsink:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		*pki = dir
	}
	if _, err := RaiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, "ewsink:", err)
	}
	if err := EnsurePKI(*pki); err != nil {
		fmt.Fprintln(stderr, "ewsink:", err)
		return 1
	}
	cfg, err := ServerTLS(*pki)
	if err != nil {
		fmt.Fprintln(stderr, "ewsink:", err)
		return 1
	}
	s, err := NewSink(*rawAddr, *tlsAddr, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ewsink:", err)
		return 1
	}
	defer s.Close()
	otlp, err := NewOTLPReceiver(*otlpAddr)
	if err != nil {
		fmt.Fprintln(stderr, "ewsink:", err)
		return 1
	}
	defer otlp.Close()
	fmt.Fprintf(stdout, "raw=%s tls=%s otlp=%s pki=%s\n", s.RawAddr(), s.TLSAddr(), otlp.Addr(), *pki)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	for {
		select {
		case err := <-s.Errs:
			fmt.Fprintln(stderr, "ewsink:", err)
		case <-ctx.Done():
			return 0
		}
	}
}
