package sni

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestRewrite(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
		stop  bool
		in    string
		want  string
	}{
		{
			name:  "cluster preset, Istio name (RW-2)",
			rules: []Rule{PresetClusterGlobal},
			in:    "outbound_.9080_.v1_.reviews.default.svc.cluster2.global",
			want:  "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		},
		{
			name:  "cluster preset, v3 subset",
			rules: []Rule{PresetClusterGlobal},
			in:    "outbound_.9080_.v3_.reviews.ns.svc.cluster2.global",
			want:  "outbound_.9080_.v3_.reviews.ns.svc.cluster.local",
		},
		{
			name:  "cluster preset, plain name",
			rules: []Rule{PresetClusterGlobal},
			in:    "reviews.default.svc.cluster2.global",
			want:  "reviews.default.svc.cluster.local",
		},
		{
			name:  "global preset",
			rules: []Rule{PresetGlobal},
			in:    "outbound_.8000_._.httpbin.bar.global",
			want:  "outbound_.8000_._.httpbin.bar.svc.cluster.local",
		},
		{
			name:  "global preset leaves other names",
			rules: []Rule{PresetGlobal},
			in:    "outbound_.8000_._.httpbin.bar.svc.cluster.local",
			want:  "outbound_.8000_._.httpbin.bar.svc.cluster.local",
		},
		{
			name:  "global preset is anchored at the end",
			rules: []Rule{PresetGlobal},
			in:    "outbound_.8000_._.global.bar.local",
			want:  "outbound_.8000_._.global.bar.local",
		},
		{
			name:  "upper case SNI is lower-cased before the rules",
			rules: []Rule{PresetClusterGlobal},
			in:    "OUTBOUND_.9080_.V1_.Reviews.Default.SVC.Cluster2.GLOBAL",
			want:  "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		},
		{
			name:  "rules chain: each sees the previous output",
			rules: []Rule{PresetClusterGlobal, {Pattern: `\.cluster\.local$`, Replacement: ".cluster.remote"}},
			in:    "a.svc.cluster7.global",
			want:  "a.svc.cluster.remote",
		},
		{
			name:  "stop on first match",
			rules: []Rule{PresetClusterGlobal, {Pattern: `\.cluster\.local$`, Replacement: ".cluster.remote"}},
			stop:  true,
			in:    "a.svc.cluster7.global",
			want:  "a.svc.cluster.local",
		},
		{
			name:  "stop on first match skips non-matching rules",
			rules: []Rule{{Pattern: `^nomatch`, Replacement: "x"}, PresetGlobal, {Pattern: `svc`, Replacement: "SVC"}},
			stop:  true,
			in:    "a.b.global",
			want:  "a.b.svc.cluster.local",
		},
		{
			name:  "replace all matches",
			rules: []Rule{{Pattern: `-`, Replacement: ""}},
			in:    "a-b-c.ns",
			want:  "abc.ns",
		},
		{
			name:  "submatch references",
			rules: []Rule{{Pattern: `^outbound_\.(\d+)_\.(\w*)_\.(?P<svc>[^.]+)\.`, Replacement: "outbound_.${1}_.${2}_.${svc}-v2."}},
			in:    "outbound_.80_.v1_.reviews.ns.svc",
			want:  "outbound_.80_.v1_.reviews-v2.ns.svc",
		},
		{
			name:  "$$ is a literal dollar",
			rules: []Rule{{Pattern: `x`, Replacement: "$$"}},
			in:    "axb",
			want:  "a$b",
		},
		{
			name:  "empty pattern does nothing (Envoy)",
			rules: []Rule{{Pattern: "", Replacement: "zzz"}},
			in:    "a.b",
			want:  "a.b",
		},
		{
			name: "no rules only lower-cases",
			in:   "A.B",
			want: "a.b",
		},
		{
			name:  "over-long names are left alone",
			rules: []Rule{{Pattern: `a`, Replacement: "b"}},
			in:    strings.Repeat("a", 256),
			want:  strings.Repeat("a", 256),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{0, -1, 1} {
				rw, err := NewRewriter(tt.rules, tt.stop, size)
				if err != nil {
					t.Fatalf("NewRewriter: %v", err)
				}
				for range 3 { // miss, then hits
					if got := rw.Rewrite(tt.in); got != tt.want {
						t.Fatalf("cache %d: Rewrite(%q) = %q, want %q", size, tt.in, got, tt.want)
					}
				}
			}
		})
	}
}

func TestRewriteThenParseName(t *testing.T) {
	rw, err := NewRewriter([]Rule{PresetClusterGlobal, PresetGlobal}, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := ParseName(rw.Rewrite("outbound_.9080_.v1_.reviews.default.svc.cluster2.global"))
	if err != nil {
		t.Fatal(err)
	}
	want := Name{Istio: true, Port: 9080, Subset: "v1", Host: "reviews.default.svc.cluster.local"}
	if n != want {
		t.Fatalf("got %+v, want %+v", n, want)
	}
}

func TestNewRewriterErrors(t *testing.T) {
	tests := []struct {
		name string
		rule Rule
		want string // in the error
	}{
		{name: "invalid regex", rule: Rule{Pattern: `(`, Replacement: ""}, want: "rule 1"},
		{name: "look-ahead", rule: Rule{Pattern: `a(?=b)`}, want: `"a(?=b)"`},
		{name: "back-reference", rule: Rule{Pattern: `(a)\1`}, want: "rule 1"},
		{name: "unknown group number", rule: Rule{Pattern: `(a)`, Replacement: "$2"}, want: "group 2"},
		{name: "ambiguous $1x", rule: Rule{Pattern: `(a)`, Replacement: "$1x"}, want: "${1}x"},
		{name: "unknown group name", rule: Rule{Pattern: `(?P<svc>a)`, Replacement: "${name}"}, want: "$name"},
		{name: "ECMAScript $&", rule: Rule{Pattern: `a`, Replacement: "[$&]"}, want: "ECMAScript"},
		{name: "ECMAScript $`", rule: Rule{Pattern: `a`, Replacement: "$`"}, want: "ECMAScript"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRewriter([]Rule{PresetGlobal, tt.rule}, false, 0)
			if err == nil {
				t.Fatal("NewRewriter accepted the rule")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	// Accepted templates.
	for _, repl := range []string{"${1}x", "$1", "${svc}", "$svc.", "$$1", "${0}", "$", "a$-b", "${1"} {
		if _, err := NewRewriter([]Rule{{Pattern: `(?P<svc>a)`, Replacement: repl}}, false, 0); err != nil {
			t.Errorf("replacement %q refused: %v", repl, err)
		}
	}
}

func TestNilRewriter(t *testing.T) {
	var rw *Rewriter
	if got := rw.Rewrite("A.b"); got != "a.b" {
		t.Fatalf("nil Rewriter: %q", got)
	}
}

// TestRewriteCacheBounded: distinct names never grow the cache past its
// bound, and results stay right after evictions.
func TestRewriteCacheBounded(t *testing.T) {
	const size = 64
	rw, err := NewRewriter([]Rule{PresetGlobal}, false, size)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 * size {
		in := fmt.Sprintf("h%d.global", i)
		if got, want := rw.Rewrite(in), fmt.Sprintf("h%d.svc.cluster.local", i); got != want {
			t.Fatalf("Rewrite(%q) = %q, want %q", in, got, want)
		}
	}
	total := 0
	for i := range rw.cache.shards {
		s := &rw.cache.shards[i]
		total += len(s.cur) + len(s.old)
	}
	if total > size {
		t.Fatalf("cache holds %d entries, bound %d", total, size)
	}
	if total == 0 {
		t.Fatal("cache is empty")
	}
}

// TestRewriteConcurrent runs under -race.
func TestRewriteConcurrent(t *testing.T) {
	rw, err := NewRewriter([]Rule{PresetClusterGlobal}, false, 32)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				in := fmt.Sprintf("s%d.ns.svc.cluster%d.global", i%50, g)
				if got, want := rw.Rewrite(in), fmt.Sprintf("s%d.ns.svc.cluster.local", i%50); got != want {
					errs <- fmt.Sprintf("Rewrite(%q) = %q, want %q", in, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestRewriteCachedZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	rw, err := NewRewriter([]Rule{PresetClusterGlobal}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := "outbound_.9080_.v1_.reviews.default.svc.cluster2.global"
	rw.Rewrite(in)
	if n := testing.AllocsPerRun(100, func() { rw.Rewrite(in) }); n != 0 {
		t.Errorf("%v allocs per cached Rewrite, want 0", n)
	}
}
