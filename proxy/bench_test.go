package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
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

// BenchmarkConnection is the whole life of one short connection through the
// gateway on loopback, as ewbench's connrate mode makes them: accept, a real
// ClientHello with an Istio SNI, route, pick, dial, replay, a 64-byte echo,
// close. tracing=otlp adds the SDK as cmd/eastwest builds it (batch span
// processor, OTLP/HTTP exporter) exporting to a local receiver that reads
// and discards each body, so marshalling and sending are in the figure.
// cpu-us/op is the whole process's CPU (client, gateway, backend, exporter)
// per connection; the difference between the two is what tracing costs.
func BenchmarkConnection(b *testing.B) {
	b.Run("tracing=off", func(b *testing.B) { benchConnections(b, nil) })
	b.Run("tracing=otlp", func(b *testing.B) {
		tp, exported := otlpDiscardProvider(b)
		benchConnections(b, tp)
		if err := tp.ForceFlush(context.Background()); err != nil {
			b.Fatal(err)
		}
		if exported.Load() == 0 {
			b.Fatal("no span reached the receiver")
		}
	})
}

// otlpDiscardProvider is a tracer provider exporting over OTLP/HTTP to a
// loopback receiver that answers every export with success after reading
// the body; the counter is the number of export requests it received.
func otlpDiscardProvider(b *testing.B) (*sdktrace.TracerProvider, *atomic.Int64) {
	var exports atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		exports.Add(1)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Cleanup(recv.Close)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, &exports
}

func benchConnections(b *testing.B, tp trace.TracerProvider) {
	echo := testnet.TCPEcho(b, "127.0.0.1")
	svc := &mesh.Service{Host: "echo.default.svc.cluster.local", Namespace: "default", Exported: true,
		Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	snap, err := mesh.Build(mesh.Spec{Services: []*mesh.Service{svc}, Clusters: []*mesh.Cluster{{
		Key: mesh.Key{Host: svc.Host, Port: 9080}, Service: svc,
		Endpoints: []mesh.Endpoint{{Addr: echo, Weight: 1, Workload: "echo", Namespace: "default"}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := proxy.New(proxy.Config{Address: "127.0.0.1:0"}, proxy.Deps{
		Store: mesh.NewStore(snap), Picker: firstPicker{}, Forwarder: proxy.SpliceForwarder{}, TracerProvider: tp,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve() }()
	defer func() {
		_ = srv.Shutdown(context.Background(), time.Millisecond)
		<-served
	}()
	hello := testnet.ClientHello(b, testpki.NewCA(b), "outbound_.9080_._.echo.default.svc.cluster.local")
	msg := append(append([]byte(nil), hello...), make([]byte, 64)...)
	addr := srv.Addr()

	// Warm up: the cluster's series, pools and the exporter's connection.
	for range 100 {
		if err := echoOnce(addr, msg, make([]byte, 64)); err != nil {
			b.Fatal(err)
		}
	}
	waitIdle(b, srv)
	cpu0 := processCPU()
	b.ReportAllocs()
	b.ResetTimer()
	// 16 clients on two cores keep the gateway busy, as connrate's 32
	// workers do, so ns/op is the inverse of the connection rate.
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 64)
		for pb.Next() {
			if err := echoOnce(addr, msg, buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
	// The gateway finishes a connection (forwarder end, span end) after the
	// client has its echo: count that work too.
	waitIdle(b, srv)
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
}

// echoOnce connects, sends msg (a ClientHello then 64 bytes), reads the 64
// bytes back and closes.
func echoOnce(addr string, msg, buf []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	return nil
}

func waitIdle(b *testing.B, srv *proxy.Server) {
	deadline := time.Now().Add(10 * time.Second)
	for srv.Active() > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d connections still open", srv.Active())
		}
		time.Sleep(time.Millisecond)
	}
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
