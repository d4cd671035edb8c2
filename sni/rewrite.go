package sni

import (
	"fmt"
	"hash/maphash"
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Rule is one rewrite of the SNI-derived cluster name, Istio's
// tcp_cluster_rewrite {cluster_pattern, cluster_replacement} (RW-1).
type Rule struct {
	// Pattern is an RE2 regular expression (Go regexp syntax), matched
	// against the whole lower-case name, unanchored. Empty means the rule
	// does nothing, as in Envoy.
	Pattern string
	// Replacement replaces every match, with $1, ${1} or ${name} standing
	// for submatches as in regexp.Regexp.Expand; $$ is a literal $.
	Replacement string
}

// Compatibility presets (RW-2).
var (
	// PresetGlobal is the Istio chart's tcp_cluster_rewrite default for
	// the legacy ".global" multicluster naming.
	PresetGlobal = Rule{Pattern: `\.global$`, Replacement: ".svc.cluster.local"}
	// PresetClusterGlobal maps per-cluster legacy names such as
	// "reviews.ns.svc.cluster2.global" to "reviews.ns.svc.cluster.local",
	// the case users hit after Istio removed the filter (istio/istio#40624).
	PresetClusterGlobal = Rule{Pattern: `\.cluster[0-9]+\.global$`, Replacement: ".cluster.local"}
)

// DefaultCacheSize is the number of distinct names a Rewriter remembers when
// NewRewriter is given a cache size of 0.
const DefaultCacheSize = 4096

// Rewriter applies an ordered list of rules to server names. It is safe for
// concurrent use. A nil *Rewriter only lower-cases.
type Rewriter struct {
	rules []rule
	stop  bool
	cache *cache // nil when caching is off or there are no rules
}

type rule struct {
	re   *regexp.Regexp
	repl string
}

// NewRewriter compiles rules. With stopOnFirstMatch false every rule is
// applied in turn to the previous rule's output (stacked Envoy filters);
// with it true the first rule that matches ends the rewrite. cacheSize
// bounds the number of remembered results (about that many entries; 0
// means DefaultCacheSize, negative disables the cache). Errors name the rule
// index and pattern; a replacement that refers to a group the pattern does
// not have (often "$1x", which Go reads as the group named "1x") or uses
// ECMAScript's $&, $` or $' is refused too, since Go would silently insert
// nothing or the literal text.
func NewRewriter(rules []Rule, stopOnFirstMatch bool, cacheSize int) (*Rewriter, error) {
	r := &Rewriter{stop: stopOnFirstMatch}
	for i, ru := range rules {
		if ru.Pattern == "" {
			continue // Envoy: an empty cluster_pattern means no rewrite
		}
		re, err := regexp.Compile(ru.Pattern)
		if err != nil {
			return nil, fmt.Errorf("rewrite rule %d pattern %q: %w", i, ru.Pattern, err)
		}
		if err := checkTemplate(re, ru.Replacement); err != nil {
			return nil, fmt.Errorf("rewrite rule %d pattern %q replacement %q: %w", i, ru.Pattern, ru.Replacement, err)
		}
		r.rules = append(r.rules, rule{re: re, repl: ru.Replacement})
	}
	if cacheSize == 0 {
		cacheSize = DefaultCacheSize
	}
	if cacheSize > 0 && len(r.rules) > 0 {
		r.cache = newCache(cacheSize)
	}
	return r, nil
}

// Rewrite returns name lower-cased (ASCII, SNI-2) and rewritten by the
// rules. The rules therefore see lower-case names. Names longer than
// MaxNameLen are returned unchanged without running any rule: they are not
// valid SNI (ParseName refuses them), and this bounds the regexp work per
// connection. Results are cached per distinct input. Rewrite never panics.
func (r *Rewriter) Rewrite(name string) string {
	if len(name) > MaxNameLen {
		return name
	}
	if r == nil || len(r.rules) == 0 {
		return lowerASCII(name)
	}
	if r.cache != nil {
		if v, ok := r.cache.get(name); ok {
			return v
		}
	}
	out := lowerASCII(name)
	for _, ru := range r.rules {
		if r.stop {
			if ru.re.MatchString(out) {
				out = ru.re.ReplaceAllString(out, ru.repl)
				break
			}
			continue
		}
		out = ru.re.ReplaceAllString(out, ru.repl)
	}
	if r.cache != nil {
		r.cache.put(name, out)
	}
	return out
}

// lowerASCII lower-cases ASCII letters only (other bytes, valid UTF-8 or
// not, are kept as they are), allocating only if there are any.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// checkTemplate walks a replacement the way regexp.Regexp.Expand does and
// refuses references that would expand to nothing or to literal text a
// user porting an ECMAScript (std::regex) replacement would not expect.
func checkTemplate(re *regexp.Regexp, t string) error {
	for {
		_, after, ok := strings.Cut(t, "$")
		if !ok {
			return nil
		}
		t = after
		if t == "" {
			return nil // a lone trailing $ is literal in both grammars
		}
		switch t[0] {
		case '$':
			t = t[1:]
			continue
		case '&', '`', '\'':
			return fmt.Errorf("$%c is ECMAScript syntax; Go has ${0} for the whole match and no pre/post-match references", t[0])
		}
		name, num, rest, ok := extractRef(t)
		if !ok {
			continue // Expand writes a malformed reference as text
		}
		t = rest
		if num >= 0 {
			if num > re.NumSubexp() {
				return fmt.Errorf("$%s refers to group %d but the pattern has %d; write ${1}x, not $1x", name, num, re.NumSubexp())
			}
			continue
		}
		if re.SubexpIndex(name) < 0 {
			return fmt.Errorf("$%s names no group of the pattern; write ${1}x, not $1x", name)
		}
	}
}

// extractRef is regexp's extract: it parses "name" or "{name}" at the start
// of s, where name is letters, digits and underscores; num is its value
// when it is a canonical number, else -1.
func extractRef(s string) (name string, num int, rest string, ok bool) {
	brace := false
	if s != "" && s[0] == '{' {
		brace = true
		s = s[1:]
	}
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' {
			break
		}
		i += size
	}
	if i == 0 {
		return "", 0, "", false
	}
	name = s[:i]
	if brace {
		if i >= len(s) || s[i] != '}' {
			return "", 0, "", false
		}
		i++
	}
	num = 0
	for j := 0; j < len(name); j++ {
		if name[j] < '0' || name[j] > '9' || num >= 1e8 {
			num = -1
			break
		}
		num = num*10 + int(name[j]-'0')
	}
	if name[0] == '0' && len(name) > 1 {
		num = -1
	}
	return name, num, s[i:], true
}

// cache remembers rewrite results. Each shard keeps two generations: when
// the current map is full it becomes the old one and a new map starts, and
// a hit in the old map is copied forward. Names in use stay; names not seen
// for a generation are dropped together: an O(1), lock-per-shard
// approximation of LRU.
type cache struct {
	seed   maphash.Seed
	shards [cacheShards]shard
}

const cacheShards = 16

type shard struct {
	mu       sync.Mutex
	cur, old map[string]string
	max      int
}

func newCache(size int) *cache {
	c := &cache{seed: maphash.MakeSeed()}
	per := max(1, size/(2*cacheShards))
	for i := range c.shards {
		c.shards[i].max = per
		c.shards[i].cur = make(map[string]string, per)
	}
	return c
}

func (c *cache) shard(k string) *shard {
	return &c.shards[maphash.String(c.seed, k)%cacheShards]
}

func (c *cache) get(k string) (string, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.cur[k]; ok {
		return v, true
	}
	v, ok := s.old[k]
	if ok {
		s.insert(k, v)
	}
	return v, ok
}

func (c *cache) put(k, v string) {
	k = strings.Clone(k) // k may share memory with a larger string
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.insert(k, v)
}

func (s *shard) insert(k, v string) {
	if len(s.cur) >= s.max {
		s.old = s.cur
		s.cur = make(map[string]string, s.max)
	}
	s.cur[k] = v
}
