package sni

import (
	"errors"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	long := "outbound_.80_._." + strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".svc.local"
	tests := []struct {
		in   string
		want Name
		err  bool
	}{
		// SNI-1 vectors.
		{in: "outbound_.9080_.v2_.reviews.default.svc.cluster.local", want: Name{Istio: true, Port: 9080, Subset: "v2", Host: "reviews.default.svc.cluster.local"}},
		{in: "outbound_.9080_._.reviews.default.svc.cluster.local", want: Name{Istio: true, Port: 9080, Host: "reviews.default.svc.cluster.local"}},
		{in: "outbound_.9080_._.x", want: Name{Istio: true, Port: 9080, Host: "x"}},
		{in: "outbound_.80_._.my_svc.ns.svc.cluster.local", want: Name{Istio: true, Port: 80, Host: "my_svc.ns.svc.cluster.local"}},
		{in: "outbound_.8000_._.httpbin.bar.global", want: Name{Istio: true, Port: 8000, Host: "httpbin.bar.global"}},
		{in: "outbound_.65535_.canary-1_.a.b", want: Name{Istio: true, Port: 65535, Subset: "canary-1", Host: "a.b"}},
		{in: "outbound_.1_.v1.x_.h", want: Name{Istio: true, Port: 1, Subset: "v1.x", Host: "h"}},
		{in: "outbound_.80_.a__.h", want: Name{Istio: true, Port: 80, Subset: "a_", Host: "h"}},
		{in: "outbound_.80_._.host_", want: Name{Istio: true, Port: 80, Host: "host_"}},
		{in: long, want: Name{Istio: true, Port: 80, Host: long[len("outbound_.80_._."):]}},
		// SNI-2: case-insensitive, lower-cased once.
		{in: "OUTBOUND_.9080_.V2_.Reviews.Default.SVC.cluster.local", want: Name{Istio: true, Port: 9080, Subset: "v2", Host: "reviews.default.svc.cluster.local"}},
		{in: "Reviews.Default.svc", want: Name{Host: "reviews.default.svc"}},
		// Plain names.
		{in: "istiod.istio-system.svc", want: Name{Host: "istiod.istio-system.svc"}},
		{in: "outbound_x.example", want: Name{Host: "outbound_x.example"}},
		{in: "outbound", want: Name{Host: "outbound"}},
		{in: "1.2.3", want: Name{Host: "1.2.3"}},
		{in: "a_.b", want: Name{Host: "a_.b"}},

		// Refused.
		{in: "", err: true},
		{in: strings.Repeat("a.", 127) + "ab", err: true}, // 256 bytes
		{in: "10.0.0.1", err: true},
		{in: "::1", err: true},
		{in: "[::1]", err: true},
		{in: "outbound_.80_._.10.0.0.1", err: true},
		{in: "inbound_.9080_._.reviews.default.svc.cluster.local", err: true},
		{in: "outbound|9080||reviews.default.svc.cluster.local", err: true},
		{in: "outbound|9080|v1|reviews", err: true},
		{in: "BlackHoleCluster", want: Name{Host: "blackholecluster"}}, // plain: never an exported host (SEC-1 is the proxy's lookup)
		{in: "outbound_.", err: true},
		{in: "outbound_.9080", err: true},
		{in: "outbound_.9080_.v1", err: true},
		{in: "outbound_.9080_.v1_.", err: true},
		{in: "outbound_.9080_._.", err: true},
		{in: "outbound_.0_._.h", err: true},
		{in: "outbound_.080_._.h", err: true},
		{in: "outbound_.+80_._.h", err: true},
		{in: "outbound_.-1_._.h", err: true},
		{in: "outbound_.65536_._.h", err: true},
		{in: "outbound_.123456_._.h", err: true},
		{in: "outbound_.x_._.h", err: true},
		{in: "outbound_._._.h", err: true},
		{in: "outbound_.80_._.a_.b", err: true}, // Istio's ParseSubsetKey yields no host
		{in: "outbound_.80_._." + strings.Repeat("a", 64) + ".b", err: true},
		{in: "a..b", err: true},
		{in: ".a", err: true},
		{in: "a.", err: true},
		{in: "*.example.com", err: true},
		{in: "a b", err: true},
		{in: "a\x00b", err: true},
		{in: "héllo", err: true},
		{in: "a/b", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseName(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("ParseName = %+v, want error", got)
				}
				if !errors.Is(err, ErrBadName) {
					t.Fatalf("error %v does not wrap ErrBadName", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseName: %v", err)
			}
			if got != tt.want {
				t.Fatalf("ParseName = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseNameZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	for _, in := range []string{istioSNI, "reviews.default.svc.cluster.local", "10.0.0.1", "outbound|9080||x"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = ParseName(in) }); n != 0 {
			t.Errorf("ParseName(%q): %v allocs, want 0", in, n)
		}
	}
}
