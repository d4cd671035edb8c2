// Package bench measures eastwest against a direct connection, HAProxy and
// nginx on loopback, with the traffic an Istio sidecar sends, and writes the
// figures the README quotes.
//
// It holds four tools that share this package:
//
//   - the load tool (cmd/ewload, RunLoad): opens connections that start
//     with a real crypto/tls ClientHello carrying an Istio SNI
//     (outbound_.9080_._.sink.default.svc.cluster.local) and the Istio ALPN,
//     captured once from a crypto/tls client over a net.Pipe, then sends raw
//     bytes; or runs a full mutual TLS 1.3 session end to end. It verifies
//     everything it receives (the sink's byte counts, every echo) and
//     reports a run with any error as failed, never as a number. Given the
//     proxy's pid it reads the proxy's CPU time, memory and fds from /proc.
//   - the sink (cmd/ewsink, NewSink): reads and discards the ClientHello,
//     then obeys one command byte (CmdDiscard counts and reports, CmdEcho
//     echoes); its second port terminates TLS 1.3 with a SPIFFE
//     certificate from internal/testpki and echoes; its third is an
//     OTLP/HTTP trace receiver (OTLPReceiver) that counts and discards what
//     a traced gateway exports.
//   - the runner (cmd/ewbench, Run): installs HAProxy and nginx when asked,
//     writes their configurations and the gateway's settings and Istio mesh
//     YAML, starts each target in turn on the same ports in front of one
//     sink, runs every Mode a few rounds with targets alternating, and
//     renders a markdown table (Report.Markdown) and an SVG chart.
//   - the scale run (cmd/ewscale, RunScale): no proxy and no traffic; it
//     generates a mesh of issue 9's size (10,000 services x 2 ports x 10
//     endpoints) as mesh values, Istio YAML and xDS resources served by an
//     in-process go-control-plane on 127.0.0.1, and measures full snapshot
//     application, one-cluster EDS updates, route lookup latency, heap per
//     service-port and goroutine counts (ScaleReport.Markdown).
//
// The runner starts the load tool and the sink as child processes of its
// own binary (ChildEnv), so that each has its own file limit and none of
// them shares a Go runtime with another; TestSmoke does the same with the
// test binary.
//
// What it must not do: talk to anything but 127.0.0.1, leave a process
// running (every child is in its own process group, killed at the end, on
// error and on timeout), run unbounded (every phase has a deadline), or
// turn a failed run into a figure. Tests assert that each mode produced a
// number, never a speed.
//
// Example, the smoke run `make bench-smoke` does:
//
//	rep, err := bench.Run(ctx, bench.Options{Smoke: true, Targets: []string{"direct", "eastwest-splice"}})
//	if err != nil {
//		return err
//	}
//	fmt.Print(rep.Table())
package bench
