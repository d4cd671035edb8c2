package kube_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/kube"
	"github.com/eastwest-gw/eastwest/proxy"
	"github.com/eastwest-gw/eastwest/sni"
)

var _ proxy.Picker = (*balancer.Balancer)(nil)

// nameServer answers every connection with its name and closes: the
// gateway never reads past the ClientHello, so it needs no TLS.
type nameServer struct {
	name string
	port int32
	ln   net.Listener
	wg   sync.WaitGroup
}

func startName(t testing.TB, name string) *nameServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &nameServer{name: name, port: int32(ln.Addr().(*net.TCPAddr).Port), ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, s.name+"\n")
			_ = c.(*net.TCPConn).CloseWrite()
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// gateway runs the real proxy and balancer on the snapshots of a kube
// source over cs.
func gateway(t testing.TB, cs kubernetes.Interface, sniName string) (addr string, hello []byte, rec *recorder) {
	t.Helper()
	empty, err := mesh.Build(mesh.Spec{Version: "empty"})
	if err != nil {
		t.Fatal(err)
	}
	store := mesh.NewStore(empty)
	ctx, cancel := context.WithCancel(context.Background())
	b := balancer.New(balancer.Options{Network: "network2", Logger: slog.New(slog.DiscardHandler)})
	store.Subscribe(b.Update)
	var bwg sync.WaitGroup
	bwg.Go(func() { b.Run(ctx) })
	srv, err := proxy.New(proxy.Config{Address: "127.0.0.1:0", Listeners: 1, MaxConnectAttempts: 3, ConnectTimeout: time.Second},
		proxy.Deps{Store: store, Picker: b, Forwarder: proxy.SpliceForwarder{}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var swg sync.WaitGroup
	swg.Go(func() { _ = srv.Serve() })
	t.Cleanup(func() {
		_ = srv.Shutdown(context.Background(), 0)
		swg.Wait()
		cancel()
		bwg.Wait()
	})
	// The store is swapped before the recorder sees a snapshot, so a test
	// that waited for a snapshot knows the gateway routes by it.
	_, rec = start(t, cs, kube.Options{Network: "network2"}, store.Swap)

	// One real ClientHello with Istio's SNI and ALPN, replayed by every client.
	ca := testpki.NewCA(t)
	a, c := net.Pipe()
	cfg := ca.ClientConfig(t, "spiffe://cluster1.local/ns/default/sa/client", sniName, "spiffe://x")
	var hwg sync.WaitGroup
	hwg.Go(func() { _ = tls.Client(a, cfg).Handshake(); a.Close() })
	raw, _, err := sni.Read(c, make([]byte, 64<<10))
	c.Close()
	hwg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return srv.Addr(), append([]byte(nil), raw...), rec
}

// through sends the hello through the gateway and returns who answered.
func through(addr string, hello []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", errors.New("connection closed with no answer")
	}
	return name, nil
}

// TestEndToEndNotReadyEndpointDrains runs a Service whose two pods listen
// on loopback ports. The target port differs per pod (a named targetPort
// resolving to different container ports), so the controller puts them in
// two EndpointSlices. Marking one not-ready through the API must move every
// new connection to the other with none failing, while the not-ready
// server stays up: only the snapshot can have kept traffic off it.
func TestEndToEndNotReadyEndpointDrains(t *testing.T) {
	a, b := startName(t, "pod-a"), startName(t, "pod-b")
	svc := service("default", "reviews", nil, tcpPort("tcp-main", 9080, 0))
	slA := endpointSlice("default", "reviews-a", "reviews", []slicePort{{"tcp-main", a.port, corev1.ProtocolTCP}},
		ep{addr: "127.0.0.1", node: "node-a", ready: yes, pod: "reviews-v1-7b9f8c6d54-aaaaa"})
	slB := endpointSlice("default", "reviews-b", "reviews", []slicePort{{"tcp-main", b.port, corev1.ProtocolTCP}},
		ep{addr: "127.0.0.1", node: "node-b", ready: yes, pod: "reviews-v1-7b9f8c6d54-bbbbb"})
	cs := fake.NewClientset(svc, slA, slB, node("node-a", "region1", "zone-a", ""), node("node-b", "region1", "zone-b", ""))
	addr, hello, rec := gateway(t, cs, "outbound_.9080_._.reviews.default.svc.cluster.local")
	h := host("default", "reviews")
	rec.waitFor(t, "both pods", hasAddrs(h, 9080, "127.0.0.1:"+itoa32(a.port), "127.0.0.1:"+itoa32(b.port)))

	run := func(n int) (map[string]int, []error) {
		counts := map[string]int{}
		var errs []error
		for range n {
			name, err := through(addr, hello)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			counts[name]++
		}
		return counts, errs
	}
	before, errs := run(40)
	if len(errs) > 0 || before["pod-a"] == 0 || before["pod-b"] == 0 {
		t.Fatalf("before: %v, errors %v; want both pods used and no failure", before, errs)
	}

	// Clients keep connecting while pod-a turns not-ready.
	stop := make(chan struct{})
	var during map[string]int
	var duringErrs []error
	var cwg sync.WaitGroup
	cwg.Go(func() {
		during = map[string]int{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, e := run(1)
			duringErrs = append(duringErrs, e...)
			for k, v := range c {
				during[k] += v
			}
		}
	})
	slA.Endpoints[0].Conditions.Ready = no
	_, err := cs.DiscoveryV1().EndpointSlices("default").Update(context.Background(), slA, metav1.UpdateOptions{})
	if err != nil {
		close(stop)
		cwg.Wait()
		t.Fatalf("mark pod-a not ready: %v", err)
	}
	rec.waitFor(t, "pod-a gone", hasAddrs(h, 9080, "127.0.0.1:"+itoa32(b.port)))
	close(stop)
	cwg.Wait()
	if len(duringErrs) > 0 {
		t.Fatalf("%d connections failed while pod-a turned not ready (%v): %v", len(duringErrs), during, duringErrs)
	}

	after, errs := run(40)
	if len(errs) > 0 || after["pod-b"] != 40 {
		t.Fatalf("after pod-a turned not ready: %v, errors %v; want all 40 on pod-b and no failure", after, errs)
	}
	t.Logf("before %v, during %v, after %v", before, during, after)
}

// TestEndToEndSubsetRoutesToItsPods: with a DestinationRule declaring
// subsets v1 and v2, every connection for outbound_.9080_.v1_.reviews
// reaches the v1 pod, though the v2 pod serves the same port of the same
// Service.
func TestEndToEndSubsetRoutesToItsPods(t *testing.T) {
	v1, v2 := startName(t, "pod-v1"), startName(t, "pod-v2")
	svc := service("default", "reviews", nil, tcpPort("tcp-main", 9080, 0))
	sl1 := endpointSlice("default", "reviews-a", "reviews", []slicePort{{"tcp-main", v1.port, corev1.ProtocolTCP}},
		ep{addr: "127.0.0.1", node: "node-a", ready: yes, pod: "reviews-v1-7b9f8c6d54-aaaaa"})
	sl2 := endpointSlice("default", "reviews-b", "reviews", []slicePort{{"tcp-main", v2.port, corev1.ProtocolTCP}},
		ep{addr: "127.0.0.1", node: "node-a", ready: yes, pod: "reviews-v2-5d8f6c9b77-bbbbb"})
	is := newIstio([]runtime.Object{svc, sl1, sl2, node("node-a", "region1", "zone-a", ""),
		pod("default", "reviews-v1-7b9f8c6d54-aaaaa", map[string]string{"app": "reviews", "version": "v1"}),
		pod("default", "reviews-v2-5d8f6c9b77-bbbbb", map[string]string{"app": "reviews", "version": "v2"}),
	}, []string{"v1"}, rule(t, "v1", "default", "reviews", reviewsRule))
	addr, hello, rec := gateway(t, is.client, "outbound_.9080_.v1_.reviews.default.svc.cluster.local")
	h := host("default", "reviews")
	rec.waitFor(t, "both pods", hasAddrs(h, 9080, "127.0.0.1:"+itoa32(v1.port), "127.0.0.1:"+itoa32(v2.port)))
	rec.waitFor(t, "the v1 subset", subsetAddrs(h, 9080, "v1", "127.0.0.1:"+itoa32(v1.port)))

	counts := map[string]int{}
	for range 30 {
		name, err := through(addr, hello)
		if err != nil {
			t.Fatalf("connection through the gateway: %v (so far %v)", err, counts)
		}
		counts[name]++
	}
	if counts["pod-v1"] != 30 {
		t.Fatalf("answers %v, want all 30 from pod-v1", counts)
	}
}

func itoa32(v int32) string { return strconv.Itoa(int(v)) }
