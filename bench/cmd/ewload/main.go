// Command ewload is the benchmark's load tool: it speaks what an Istio sidecar sends
// (a real TLS ClientHello with an Istio SNI and ALPN, then raw bytes or a
// full TLS 1.3 session) and verifies everything it receives. See bench/README.md.
package main

import (
	"os"

	"github.com/eastwest-gw/eastwest/bench"
)

func main() {
	os.Exit(bench.LoadMain(os.Args[1:], os.Stdout, os.Stderr))
}
