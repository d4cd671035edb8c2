package istioyaml

import (
	"strings"
)

// fastDecoder reads ServiceEntry and WorkloadEntry documents written in
// the YAML that mesh config is usually written in (block mappings and
// sequences, one-line flow collections, one-line plain and simply quoted
// scalars, comments) straight into their types, about eight times faster
// than yaml.v3, which builds a node per scalar and decodes by reflection.
//
// It is exact or nothing: it gives up on a document as soon as anything is
// not certain to decode exactly as yaml.v3 decodes it (other YAML, other
// kinds, any value yaml.v3 would reject or read otherwise), and yaml.v3
// then decodes that document. FuzzDecodeEquivalent holds the two to the
// same results.
//
// One fastDecoder serves one goroutine; its buffers are reused across
// documents.
type fastDecoder struct {
	lines  []fline
	nodes  []fnode
	depth  int
	bad    bool
	intern map[string]string
	name   string // the header's metadata.name
}

// fline is one line of a document with content: not blank, not a comment.
type fline struct {
	num    int // in the part, from 1
	indent int
	text   string // after the indentation, without a trailing CR
}

const (
	fScalar = iota
	fMap
	fSeq
)

// fnode is a node of the document tree; children (a mapping's keys and
// values alternating) are linked through first and next.
type fnode struct {
	kind   uint8
	null   bool // a plain null: "~", "null", "Null" or "NULL", or nothing
	quoted bool
	val    string
	first  int32
	last   int32
	next   int32
}

// useFastPath is false only in tests and benchmarks that measure yaml.v3.
var useFastPath = true

// fastMaxDepth is well below yaml.v3's limit of 10,000 nesting levels.
const fastMaxDepth = 64

// fastMaxKey is below the 1,024 characters yaml.v3 allows between the start
// of a key and its colon.
const fastMaxKey = 1000

// fastIntern bounds the strings shared among decoded values (kinds,
// versions, namespaces, protocols, label keys...).
const fastIntern = 4096

// decodePart decodes a part of a file: the whole file, or a piece starting
// with a document marker, of a file that splitSafe accepts. lineOff is the
// number of lines before it. Documents the fast path gives up on are
// decoded by yaml.v3 one by one; clean is false when one of them fails to,
// and the caller then decodes the whole file with yaml.v3 for messages in
// sequential order with the file's line numbers.
func (p *fastDecoder) decodePart(data []byte, lineOff int) (pf parsedFile, clean bool) {
	if !useFastPath {
		return decodeOnePass(data, lineOff)
	}
	s := string(data)
	start, line := 0, lineOff
	marked := isMarker(data, "---")
	for {
		end := len(s)
		from := start
		if marked {
			from += 3
		}
		for i := from; i < len(s); {
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				break
			}
			i += j + 1
			if isMarker(data[i:], "---") {
				end = i
				break
			}
		}
		seg := s[start:end]
		doc, n, ok := p.document(seg, line, marked)
		if !ok {
			var d parsedFile
			if d, ok = decodeOnePass(data[start:end], line); !ok || len(d.docs) > 1 || (marked && len(d.docs) != 1) {
				return pf, false
			}
			pf.docs = append(pf.docs, d.docs...)
		} else if n > 0 {
			pf.docs = append(pf.docs, doc)
		}
		if end == len(s) {
			return pf, true
		}
		line += strings.Count(seg, "\n")
		start, marked = end, true
	}
}

// document decodes one document, seg, which starts with a document marker
// when marked; n is the number of documents it holds (0 or 1), ok false
// when the fast path gives up.
func (p *fastDecoder) document(seg string, lineOff int, marked bool) (d parsedDoc, n int, ok bool) {
	if !p.lex(seg, lineOff, marked) {
		return d, 0, false
	}
	if len(p.lines) == 0 {
		if !marked {
			return d, 0, true // only comments before the first marker
		}
		d.h.empty = true
		return d, 1, true
	}
	p.nodes, p.depth, p.bad = p.nodes[:0], 0, false
	root, next := p.block(0, p.lines[0].indent)
	if p.bad || next != len(p.lines) || p.nodes[root].kind != fMap {
		return d, 0, false
	}
	d.h = p.header(root)
	d.h.line = p.lines[0].num
	target := d.target()
	if target == nil {
		return d, 1, true
	}
	switch t := target.(type) {
	case *document[serviceEntrySpec]:
		ok = fastDocument(p, root, t, fastServiceEntry)
	case *document[workloadEntrySpec]:
		ok = fastDocument(p, root, t, fastWorkloadEntry)
	}
	if !ok {
		return d, 0, false
	}
	d.val = target
	return d, 1, true
}

// lex splits seg into its lines with content. It gives up on anything but
// printable ASCII (yaml.v3 rejects control characters and checks UTF-8),
// tabs, and a marker line with content.
func (p *fastDecoder) lex(seg string, lineOff int, marked bool) bool {
	for i := 0; i < len(seg); i++ {
		if c := seg[i]; (c < 0x20 && c != '\n' && c != '\r') || c >= 0x7f {
			return false
		}
	}
	p.lines = p.lines[:0]
	num := lineOff
	for rest := seg; rest != ""; {
		var l string
		l, rest, _ = strings.Cut(rest, "\n")
		num++
		l = strings.TrimSuffix(l, "\r")
		if marked && num == lineOff+1 {
			if !isBlankOrComment(l[3:]) {
				return false
			}
			continue
		}
		t := strings.TrimLeft(l, " ")
		if t == "" || t[0] == '#' {
			continue
		}
		p.lines = append(p.lines, fline{num: num, indent: len(l) - len(t), text: t})
	}
	return true
}

// isBlankOrComment reports whether s, what follows a value on its line, is
// blank or a comment (which needs a space before it).
func isBlankOrComment(s string) bool {
	t := strings.TrimLeft(s, " ")
	return t == "" || (t[0] == '#' && len(t) < len(s))
}

func isSeqEntry(t string) bool { return t == "-" || strings.HasPrefix(t, "- ") }

func (p *fastDecoder) add(kind uint8) int32 {
	p.nodes = append(p.nodes, fnode{kind: kind, first: -1, last: -1, next: -1})
	return int32(len(p.nodes) - 1)
}

func (p *fastDecoder) child(parent, c int32) {
	if c < 0 {
		p.bad = true
		return
	}
	if l := p.nodes[parent].last; l < 0 {
		p.nodes[parent].first = c
	} else {
		p.nodes[l].next = c
	}
	p.nodes[parent].last = c
}

func (p *fastDecoder) scalar(v string, quoted bool) int32 {
	n := p.add(fScalar)
	p.nodes[n].val, p.nodes[n].quoted = v, quoted
	p.nodes[n].null = !quoted && (v == "" || v == "~" || v == "null" || v == "Null" || v == "NULL")
	return n
}

// block parses the block node at line i, indented ind, and returns it and
// the line after it.
func (p *fastDecoder) block(i, ind int) (int32, int) {
	if p.depth++; p.depth > fastMaxDepth {
		p.bad = true
		return -1, i
	}
	defer func() { p.depth-- }()
	if isSeqEntry(p.lines[i].text) {
		return p.seq(i, ind)
	}
	return p.mapping(i, ind)
}

// value parses what follows "key:" or "-" on line i of a node indented
// ind: rest of the line, or the lines below.
func (p *fastDecoder) value(i, ind int, rest string, inSeq bool) (int32, int) {
	if isBlankOrComment(rest) {
		switch {
		case i+1 < len(p.lines) && p.lines[i+1].indent > ind:
			return p.block(i+1, p.lines[i+1].indent)
		case !inSeq && i+1 < len(p.lines) && p.lines[i+1].indent == ind && isSeqEntry(p.lines[i+1].text):
			// A sequence may sit at its key's indentation.
			return p.seq(i+1, ind)
		}
		return p.scalar("", false), i + 1
	}
	v := p.inline(strings.TrimLeft(rest, " "))
	if i+1 < len(p.lines) && p.lines[i+1].indent > ind {
		p.bad = true // a scalar continued on the next line, or an error
	}
	return v, i + 1
}

func (p *fastDecoder) mapping(i, ind int) (int32, int) {
	m := p.add(fMap)
	for i < len(p.lines) && p.lines[i].indent == ind && !p.bad {
		t := p.lines[i].text
		key, rest, ok := splitKey(t)
		if !ok {
			p.bad = true
			break
		}
		p.child(m, p.scalarKey(key))
		var v int32
		v, i = p.value(i, ind, rest, false)
		p.child(m, v)
	}
	return m, i
}

func (p *fastDecoder) seq(i, ind int) (int32, int) {
	s := p.add(fSeq)
	for i < len(p.lines) && p.lines[i].indent == ind && isSeqEntry(p.lines[i].text) && !p.bad {
		t := p.lines[i].text
		rest := strings.TrimLeft(t[1:], " ")
		var v int32
		if rest != "" && rest[0] != '#' && (isSeqEntry(rest) || isKeyLine(rest)) {
			// A compact node: the entry's content is a block node
			// indented where it starts.
			p.lines[i].indent += len(t) - len(rest)
			p.lines[i].text = rest
			v, i = p.block(i, p.lines[i].indent)
		} else {
			v, i = p.value(i, ind, t[1:], true)
		}
		p.child(s, v)
	}
	return s, i
}

// scalarKey makes the node of a key splitKey returned.
func (p *fastDecoder) scalarKey(key string) int32 {
	if key[0] == '"' || key[0] == '\'' {
		v, after, ok := quoted(key)
		if !ok || after != "" {
			return -1
		}
		return p.scalar(v, true)
	}
	return p.scalar(key, false)
}

// splitKey splits a block mapping entry "key: rest" or "key:". The key is
// a plain or quoted scalar on one line.
func splitKey(t string) (key, rest string, ok bool) {
	var i int
	if t[0] == '"' || t[0] == '\'' {
		_, after, ok := quoted(t)
		if !ok {
			return "", "", false
		}
		i = len(t) - len(after)
		j := i
		for j < len(t) && t[j] == ' ' {
			j++
		}
		if j == len(t) || t[j] != ':' || (j+1 < len(t) && t[j+1] != ' ') {
			return "", "", false
		}
		key, i = t[:i], j
	} else {
		i = keyColon(t)
		if i < 0 {
			return "", "", false
		}
		key = strings.TrimRight(t[:i], " ")
		if !plainOK(key, false) || key == "<<" || isNullWord(key) {
			return "", "", false
		}
	}
	if i > fastMaxKey {
		return "", "", false
	}
	return key, t[i+1:], true
}

// keyColon returns the index of the colon that ends a plain key: the first
// one followed by a space or the end of the line, before any comment.
func keyColon(t string) int {
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case ':':
			if i+1 == len(t) || t[i+1] == ' ' {
				return i
			}
		case '#':
			if i > 0 && t[i-1] == ' ' {
				return -1
			}
		}
	}
	return -1
}

func isKeyLine(t string) bool {
	_, _, ok := splitKey(t)
	return ok
}

func isNullWord(s string) bool {
	return s == "" || s == "~" || s == "null" || s == "Null" || s == "NULL"
}

// plainOK reports whether s, trimmed, is a one-line plain scalar that
// yaml.v3 reads as written: it does not start with an indicator (but for
// a "-" before a letter or digit), has no ": " or " #", and, in a flow
// collection, no flow indicators, colon, hash or question mark at all.
func plainOK(s string, flow bool) bool {
	if s == "" || s == "<<" {
		return false
	}
	switch c := s[0]; c {
	case '-':
		if len(s) == 1 || !isAlnum(s[1]) {
			return false
		}
	case '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', ' ':
		return false
	}
	if s[len(s)-1] == ' ' || s[len(s)-1] == ':' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '[', ']', '{', '}', '?':
			if flow {
				return false
			}
		case ':':
			if flow || s[i+1] == ' ' { // not the last byte, checked above
				return false
			}
		case '#':
			if flow || s[i-1] == ' ' { // not the first byte, checked above
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// quoted reads a one-line quoted scalar at the start of t: single-quoted,
// or double-quoted without escapes.
func quoted(t string) (v, after string, ok bool) {
	if t[0] == '"' {
		j := strings.IndexAny(t[1:], "\"\\")
		if j < 0 || t[1+j] != '"' {
			return "", "", false
		}
		return t[1 : 1+j], t[2+j:], true
	}
	escaped := false
	for i := 1; i < len(t); i++ {
		if t[i] != '\'' {
			continue
		}
		if i+1 < len(t) && t[i+1] == '\'' {
			escaped = true
			i++
			continue
		}
		v = t[1:i]
		if escaped {
			v = strings.ReplaceAll(v, "''", "'")
		}
		return v, t[i+1:], true
	}
	return "", "", false
}

// inline parses a value that starts on its key's or entry's line and must
// end there.
func (p *fastDecoder) inline(t string) int32 {
	var n int32
	var after string
	switch t[0] {
	case '[', '{':
		n, after = p.flow(t)
	case '"', '\'':
		v, a, ok := quoted(t)
		if !ok {
			p.bad = true
			return -1
		}
		n, after = p.scalar(v, true), a
	default:
		v := t
		if i := strings.Index(t, " #"); i >= 0 {
			v = t[:i]
		}
		v = strings.TrimRight(v, " ")
		if !plainOK(v, false) {
			p.bad = true
			return -1
		}
		return p.scalar(v, false)
	}
	if p.bad || !isBlankOrComment(after) {
		p.bad = true
		return -1
	}
	return n
}

// flow parses a flow collection that closes on its line, and returns it
// and what follows it.
func (p *fastDecoder) flow(t string) (int32, string) {
	if p.depth++; p.depth > fastMaxDepth {
		p.bad = true
		return -1, ""
	}
	defer func() { p.depth-- }()
	closer := byte(']')
	n := p.add(fSeq)
	if t[0] == '{' {
		closer = '}'
		p.nodes[n].kind = fMap
	}
	t = strings.TrimLeft(t[1:], " ")
	if t != "" && t[0] == closer {
		return n, t[1:]
	}
	for !p.bad {
		if closer == '}' {
			var k int32
			k, t = p.flowScalar(t, true)
			if p.bad || len(t) < 2 || t[0] != ':' || t[1] != ' ' {
				p.bad = true
				break
			}
			p.child(n, k)
			t = strings.TrimLeft(t[2:], " ")
		}
		var v int32
		if t != "" && (t[0] == '[' || t[0] == '{') {
			v, t = p.flow(t)
		} else {
			v, t = p.flowScalar(t, false)
		}
		p.child(n, v)
		t = strings.TrimLeft(t, " ")
		switch {
		case p.bad || t == "":
			p.bad = true
		case t[0] == ',':
			t = strings.TrimLeft(t[1:], " ")
			if t == "" || t[0] == closer {
				p.bad = true // a trailing comma
			}
		case t[0] == closer:
			return n, t[1:]
		default:
			p.bad = true
		}
	}
	return -1, ""
}

// flowScalar parses a scalar in a flow collection: quoted, or plain up to
// a comma, a closing bracket or (for a key) a colon.
func (p *fastDecoder) flowScalar(t string, key bool) (int32, string) {
	if t == "" {
		p.bad = true
		return -1, ""
	}
	if t[0] == '"' || t[0] == '\'' {
		v, after, ok := quoted(t)
		if !ok || len(t)-len(after) > fastMaxKey {
			p.bad = true
			return -1, ""
		}
		return p.scalar(v, true), strings.TrimLeft(after, " ")
	}
	i := 0
	for ; i < len(t); i++ {
		if c := t[i]; c == ',' || c == ']' || c == '}' || (c == ':' && key) {
			break
		}
	}
	if i == len(t) {
		p.bad = true
		return -1, ""
	}
	v := strings.TrimRight(t[:i], " ")
	if !plainOK(v, true) || (key && (isNullWord(v) || len(v) > fastMaxKey)) {
		p.bad = true
		return -1, ""
	}
	return p.scalar(v, false), t[i:]
}

// header reads a document's header as headerOfRoot does.
func (p *fastDecoder) header(root int32) header {
	var h header
	for k := p.nodes[root].first; k >= 0; k = p.nodes[p.nodes[k].next].next {
		v := p.nodes[k].next
		vn := &p.nodes[v]
		switch p.nodes[k].val {
		case "apiVersion":
			if vn.kind == fScalar {
				h.apiVersion = vn.val
			}
		case "kind":
			if vn.kind == fScalar {
				h.kind = vn.val
			}
		case "metadata":
			if vn.kind != fMap {
				continue
			}
			for mk := vn.first; mk >= 0; mk = p.nodes[p.nodes[mk].next].next {
				mv := &p.nodes[p.nodes[mk].next]
				if mv.kind != fScalar {
					continue
				}
				switch p.nodes[mk].val {
				case "name":
					h.metaName = mv.val
				case "namespace":
					h.metaNSpace = mv.val
				}
			}
		}
	}
	h.apiVersion, h.kind = p.str(h.apiVersion), p.str(h.kind)
	h.metaName, h.metaNSpace = strings.Clone(h.metaName), p.str(h.metaNSpace)
	p.name = h.metaName
	return h
}

// str returns a copy of s that does not keep the input alive, shared with
// earlier equal values while there are few.
func (p *fastDecoder) str(s string) string {
	if v, ok := p.intern[s]; ok {
		return v
	}
	v := strings.Clone(s)
	if p.intern == nil {
		p.intern = map[string]string{}
	}
	if len(p.intern) < fastIntern {
		p.intern[v] = v
	}
	return v
}

// The typed decoders below follow yaml.v3's rules for what decodes without
// error (a plain null leaves a field zero; any scalar but a null is a
// string, as written; an empty flow collection is an empty, non-nil slice
// or map) and fail wherever yaml.v3 would fail, or might read the value
// otherwise: duplicate or unknown keys, wrongly typed values, null
// sequence items, integers in any but the plain decimal form, values of
// fields typed any.

func (p *fastDecoder) isNull(n int32) bool { return p.nodes[n].kind == fScalar && p.nodes[n].null }

// pairs returns mapping n's first key, or false if n is not a mapping or
// has a key twice. The next key after k is p.nodes[p.nodes[k].next].next.
func (p *fastDecoder) pairs(n int32) (int32, bool) {
	if p.nodes[n].kind != fMap {
		return -1, false
	}
	first := p.nodes[n].first
	for k := first; k >= 0; k = p.nodes[p.nodes[k].next].next {
		for j := p.nodes[p.nodes[k].next].next; j >= 0; j = p.nodes[p.nodes[j].next].next {
			if p.nodes[j].val == p.nodes[k].val {
				return -1, false
			}
		}
	}
	return first, true
}

func (p *fastDecoder) nextKey(k int32) int32 { return p.nodes[p.nodes[k].next].next }

func (p *fastDecoder) setString(n int32, out *string) bool {
	nd := &p.nodes[n]
	if nd.kind != fScalar {
		return false
	}
	if !nd.null {
		*out = p.str(nd.val)
	}
	return true
}

// setUnique is setString for values seldom repeated (names, addresses),
// which are not worth sharing.
func (p *fastDecoder) setUnique(n int32, out *string) bool {
	nd := &p.nodes[n]
	if nd.kind != fScalar {
		return false
	}
	if !nd.null {
		*out = strings.Clone(nd.val)
	}
	return true
}

func (p *fastDecoder) setInt(n int32, out *int64) bool {
	nd := &p.nodes[n]
	if nd.kind != fScalar || nd.quoted {
		return false
	}
	if nd.null {
		return true
	}
	v, ok := decimal(nd.val)
	if ok {
		*out = v
	}
	return ok
}

// decimal parses an integer written -?[0-9]+ without a leading zero, in
// int64 range with room to spare.
func decimal(s string) (int64, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	if s == "" || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + int64(s[i]-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

func (p *fastDecoder) setStrings(n int32, out *[]string) bool {
	nd := &p.nodes[n]
	if nd.kind == fScalar && nd.null {
		return true
	}
	if nd.kind != fSeq {
		return false
	}
	l := 0
	for c := nd.first; c >= 0; c = p.nodes[c].next {
		l++
	}
	s := make([]string, 0, l)
	for c := nd.first; c >= 0; c = p.nodes[c].next {
		cn := &p.nodes[c]
		if cn.kind != fScalar || cn.null {
			return false
		}
		s = append(s, p.str(cn.val))
	}
	*out = s
	return true
}

func (p *fastDecoder) setStringMap(n int32, out *map[string]string) bool {
	if p.isNull(n) {
		return true
	}
	first, ok := p.pairs(n)
	if !ok {
		return false
	}
	m := map[string]string{}
	for k := first; k >= 0; k = p.nextKey(k) {
		v := &p.nodes[p.nodes[k].next]
		if v.kind != fScalar {
			return false
		}
		val := ""
		if !v.null {
			val = p.str(v.val)
		}
		m[p.str(p.nodes[k].val)] = val
	}
	*out = m
	return true
}

func (p *fastDecoder) setIntMap(n int32, out *map[string]int64) bool {
	if p.isNull(n) {
		return true
	}
	first, ok := p.pairs(n)
	if !ok {
		return false
	}
	m := map[string]int64{}
	for k := first; k >= 0; k = p.nextKey(k) {
		var v int64
		if !p.setInt(p.nodes[k].next, &v) {
			return false
		}
		m[p.str(p.nodes[k].val)] = v
	}
	*out = m
	return true
}

// setSlice decodes a sequence of mappings with item.
func setSlice[T any](p *fastDecoder, n int32, out *[]T, item func(*fastDecoder, int32, *T) bool) bool {
	nd := &p.nodes[n]
	if nd.kind == fScalar && nd.null {
		return true
	}
	if nd.kind != fSeq {
		return false
	}
	l := 0
	for c := nd.first; c >= 0; c = p.nodes[c].next {
		if p.isNull(c) {
			return false // yaml.v3 drops it
		}
		l++
	}
	s := make([]T, l)
	i := 0
	for c := nd.first; c >= 0; c = p.nodes[c].next {
		if !item(p, c, &s[i]) {
			return false
		}
		i++
	}
	*out = s
	return true
}

func fastDocument[S any](p *fastDecoder, n int32, d *document[S], spec func(*fastDecoder, int32, *S) bool) bool {
	first, ok := p.pairs(n)
	if !ok {
		return false
	}
	for k := first; k >= 0 && ok; k = p.nextKey(k) {
		v := p.nodes[k].next
		switch p.nodes[k].val {
		case "apiVersion":
			ok = p.setString(v, &d.APIVersion)
		case "kind":
			ok = p.setString(v, &d.Kind)
		case "metadata":
			ok = fastObjectMeta(p, v, &d.Metadata)
		case "spec":
			ok = p.isNull(v) || spec(p, v, &d.Spec)
		case "status":
			ok = p.isNull(v)
		default:
			ok = false
		}
	}
	return ok
}

func fastObjectMeta(p *fastDecoder, n int32, m *objectMeta) bool {
	if p.isNull(n) {
		return true
	}
	first, ok := p.pairs(n)
	for k := first; k >= 0 && ok; k = p.nextKey(k) {
		v := p.nodes[k].next
		switch p.nodes[k].val {
		case "name":
			if nd := &p.nodes[v]; nd.kind == fScalar && !nd.null && nd.val == p.name {
				m.Name = p.name // one copy for the header and the field
			} else {
				ok = p.setUnique(v, &m.Name)
			}
		case "generateName":
			ok = p.setString(v, &m.GenerateName)
		case "namespace":
			ok = p.setString(v, &m.Namespace)
		case "selfLink":
			ok = p.setString(v, &m.SelfLink)
		case "uid":
			ok = p.setUnique(v, &m.UID)
		case "resourceVersion":
			ok = p.setUnique(v, &m.ResourceVersion)
		case "generation":
			ok = p.setInt(v, &m.Generation)
		case "labels":
			ok = p.setStringMap(v, &m.Labels)
		case "annotations":
			ok = p.setStringMap(v, &m.Annotations)
		case "finalizers":
			ok = p.setStrings(v, &m.Finalizers)
		case "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "managedFields":
			ok = p.isNull(v)
		default:
			ok = false
		}
	}
	return ok
}

func fastServiceEntry(p *fastDecoder, n int32, s *serviceEntrySpec) bool {
	first, ok := p.pairs(n)
	for k := first; k >= 0 && ok; k = p.nextKey(k) {
		v := p.nodes[k].next
		switch p.nodes[k].val {
		case "hosts":
			ok = p.setStrings(v, &s.Hosts)
		case "addresses":
			ok = p.setStrings(v, &s.Addresses)
		case "ports":
			ok = setSlice(p, v, &s.Ports, fastServicePort)
		case "location":
			ok = p.setString(v, &s.Location)
		case "resolution":
			ok = p.setString(v, &s.Resolution)
		case "endpoints":
			ok = setSlice(p, v, &s.Endpoints, fastWorkloadEntry)
		case "workloadSelector":
			if !p.isNull(v) {
				s.WorkloadSelector = &workloadSelector{}
				ok = fastWorkloadSelector(p, v, s.WorkloadSelector)
			}
		case "exportTo":
			ok = p.setStrings(v, &s.ExportTo)
		case "subjectAltNames":
			ok = p.setStrings(v, &s.SubjectAltNames)
		default:
			ok = false
		}
	}
	return ok
}

func fastServicePort(p *fastDecoder, n int32, sp *servicePort) bool {
	first, ok := p.pairs(n)
	for k := first; k >= 0 && ok; k = p.nextKey(k) {
		v := p.nodes[k].next
		switch p.nodes[k].val {
		case "number":
			ok = p.setInt(v, &sp.Number)
		case "protocol":
			ok = p.setString(v, &sp.Protocol)
		case "name":
			ok = p.setString(v, &sp.Name)
		case "targetPort":
			ok = p.setInt(v, &sp.TargetPort)
		default:
			ok = false
		}
	}
	return ok
}

func fastWorkloadSelector(p *fastDecoder, n int32, ws *workloadSelector) bool {
	first, ok := p.pairs(n)
	for k := first; k >= 0 && ok; k = p.nextKey(k) {
		if p.nodes[k].val != "labels" {
			return false
		}
		ok = p.setStringMap(p.nodes[k].next, &ws.Labels)
	}
	return ok
}

func fastWorkloadEntry(p *fastDecoder, n int32, w *workloadEntrySpec) bool {
	first, ok := p.pairs(n)
	for k := first; k >= 0 && ok; k = p.nextKey(k) {
		v := p.nodes[k].next
		switch p.nodes[k].val {
		case "address":
			ok = p.setUnique(v, &w.Address)
		case "ports":
			ok = p.setIntMap(v, &w.Ports)
		case "labels":
			ok = p.setStringMap(v, &w.Labels)
		case "network":
			ok = p.setString(v, &w.Network)
		case "locality":
			ok = p.setString(v, &w.Locality)
		case "weight":
			ok = p.setInt(v, &w.Weight)
		case "serviceAccount":
			ok = p.setString(v, &w.ServiceAccount)
		default:
			ok = false
		}
	}
	return ok
}
