package health

import (
	"regexp"
	"testing"
)

// FuzzMatchInOrder checks Envoy's fuzzy TCP receive match, which reads
// bytes from the network, against a regular expression oracle: the blocks
// appear in order, anything between them.
func FuzzMatchInOrder(f *testing.F) {
	f.Add([]byte("+PONG v2 OK\r\n"), []byte("PONG"), []byte("OK"))
	f.Add([]byte("OK PONG"), []byte("PONG"), []byte("OK"))
	f.Add([]byte("aaa"), []byte("aa"), []byte("a"))
	f.Add([]byte("aa"), []byte("aa"), []byte("a"))
	f.Add([]byte{0, 1, 2, 0xff}, []byte{1}, []byte{0xff})
	f.Fuzz(func(t *testing.T, data, a, b []byte) {
		if len(a) == 0 || len(b) == 0 {
			t.Skip("blocks are non-empty (WithDefaults)")
		}
		got := matchInOrder(data, [][]byte{a, b})
		re := regexp.MustCompile(`(?s)` + regexp.QuoteMeta(latin1(a)) + `.*` + regexp.QuoteMeta(latin1(b)))
		if want := re.MatchString(latin1(data)); got != want {
			t.Fatalf("matchInOrder(%q, %q, %q) = %v, oracle %v", data, a, b, got, want)
		}
	})
}

// latin1 maps each byte to one rune, so that the regexp sees bytes.
func latin1(b []byte) string {
	rs := make([]rune, len(b))
	for i, c := range b {
		rs[i] = rune(c)
	}
	return string(rs)
}
