package proxy_test

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/eastwest-gw/eastwest/proxy"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (*net.TCPConn, *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		tb.Fatal("accept failed")
	}
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// BenchmarkSpliceForward measures the splice forwarder alone on loopback:
// writer -> [client conn | forwarder | upstream conn] -> reader.
func BenchmarkSpliceForward(b *testing.B) {
	src, client := tcpPair(b)    // the load writes into src; the forwarder reads client
	upstream, sink := tcpPair(b) // the forwarder writes upstream; the sink reads
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = proxy.SpliceForwarder{}.Forward(context.Background(), client, upstream, nil)
	}()
	drained := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, sink)
		drained <- n
	}()
	chunk := make([]byte, 256<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := src.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	_ = src.CloseWrite()
	if n := <-drained; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*int64(len(chunk)))
	}
	src.Close()
	sink.Close()
	<-done
}
