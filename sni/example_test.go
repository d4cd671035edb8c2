package sni_test

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/eastwest-gw/eastwest/sni"
)

// A sidecar's ClientHello read off a connection, as the 15443 listener does.
func ExampleRead() {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		// The handshake never completes: the "gateway" closes after the
		// ClientHello, so no certificate is needed.
		_ = tls.Client(client, &tls.Config{
			ServerName: "outbound_.9080_.v2_.reviews.default.svc.cluster.local",
			NextProtos: []string{"istio-peer-exchange", "istio"},
		}).Handshake()
	}()

	buf := make([]byte, 64<<10) // the byte cap
	raw, hello, err := sni.Read(server, buf)
	server.Close()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(hello.ServerName))
	fmt.Println("istio ALPN:", hello.HasIstioALPN())
	fmt.Println("raw is a prefix of buf:", &raw[0] == &buf[0])
	// Output:
	// outbound_.9080_.v2_.reviews.default.svc.cluster.local
	// istio ALPN: true
	// raw is a prefix of buf: true
}

func ExampleParseName() {
	for _, s := range []string{
		"outbound_.9080_.v2_.reviews.default.svc.cluster.local",
		"OUTBOUND_.80_._.my_svc.ns.svc.cluster.local",
		"outbound|9080||reviews.default.svc.cluster.local",
	} {
		n, err := sni.ParseName(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("port=%d subset=%q host=%s\n", n.Port, n.Subset, n.Host)
	}
	// Output:
	// port=9080 subset="v2" host=reviews.default.svc.cluster.local
	// port=80 subset="" host=my_svc.ns.svc.cluster.local
	// sni: bad server name: character outside a-z, 0-9, '-', '_', '.'
}

// Legacy per-cluster ".global" names, rewritten before the route lookup.
func ExampleRewriter() {
	rw, err := sni.NewRewriter([]sni.Rule{sni.PresetClusterGlobal, sni.PresetGlobal}, true, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rw.Rewrite("outbound_.9080_.v1_.reviews.default.svc.cluster2.global"))
	fmt.Println(rw.Rewrite("outbound_.8000_._.httpbin.bar.global"))

	_, err = sni.NewRewriter([]sni.Rule{{Pattern: `(\w+)\.global$`, Replacement: "$1x"}}, false, 0)
	fmt.Println(err != nil)
	// Output:
	// outbound_.9080_.v1_.reviews.default.svc.cluster.local
	// outbound_.8000_._.httpbin.bar.svc.cluster.local
	// true
}
