// Command ewsink is the benchmark's sink: it reads and discards the
// ClientHello, then discards and counts or echoes; its TLS port terminates
// real TLS 1.3. See bench/README.md.
package main

import (
	"os"

	"github.com/eastwest-gw/eastwest/bench"
)

func main() {
	os.Exit(bench.SinkMain(os.Args[1:], os.Stdout, os.Stderr))
}
