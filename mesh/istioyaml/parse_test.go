package istioyaml

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// merged is what the compiler holds after merging one decoded file: the
// parts of a load that decoding decides.
type merged struct {
	Problems, Warnings []string
	Order              int
	SEs                []*seRes
	WEs                []*weRes
	DRs                []*drRes
	WGs                []*wgRes
}

func mergeOf(pf parsedFile) merged {
	c := &compiler{names: map[metaKey]string{}}
	c.merge("f.yaml", &pf)
	m := merged{Order: c.order, SEs: c.ses, WEs: c.wes, DRs: c.drs, WGs: c.wgs}
	for _, p := range c.problems {
		e := p.(*Error)
		m.Problems = append(m.Problems, fmt.Sprintf("%s [cause %v]", e, e.Err))
	}
	for _, w := range c.warnings {
		m.Warnings = append(m.Warnings, w.String())
	}
	return m
}

// checkDecodeEquivalent checks that the one-pass decode and the parallel
// decode in parts read data exactly as the two-pass decode does.
func checkDecodeEquivalent(t *testing.T, data []byte) {
	t.Helper()
	want := mergeOf(decodeTwoPass(data))
	if got := mergeOf(decodeFile(data)); !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeFile:\n%+v\nwant (two passes):\n%+v", got, want)
	}
	for _, size := range []int{1, 64} {
		pfs := decodeAll(context.Background(), []input{{name: "f.yaml", data: data}}, size)
		if got := mergeOf(pfs[0]); !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeAll in parts of %d bytes:\n%+v\nwant (two passes):\n%+v", size, got, want)
		}
	}
}

// decodeSeeds exercise document boundaries and the ways a document fails.
var decodeSeeds = []string{
	"",
	"---\n",
	"---\n---\n",
	"# only a comment\n---\n" + seReviews,
	seReviews + "---\n" + weReviews("a", "127.0.0.1", "v1", "") + "---\n",
	seReviews + "---\n\n---\n" + weReviews("a", "127.0.0.1", "v1", "") + "---\nnull\n---\n~\n",
	// Errors in a later document: strict-decode errors keep going, a
	// non-type error stops the file, a syntax error discards it.
	seReviews + "---\n" + strings.Replace(seReviews, "hosts:", "hostz:", 1) + "---\n" + weReviews("a", "127.0.0.1", "v1", ""),
	seReviews + "---\n" + seReviews + "status: {[a]: b}\n---\n" + weReviews("a", "127.0.0.1", "v1", ""),
	seReviews + "---\n" + seReviews + "status: {[a]: b}\n---\nkind: [\n",
	seReviews + "---\nkind: [\n---\n" + weReviews("a", "127.0.0.1", "v1", ""),
	// Headers that are problems.
	"- a\n---\nfoo\n---\nkind: ServiceEntry\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n" +
		"apiVersion: networking.istio.io/v1\nkind: Gateway\n---\napiVersion: networking.istio.io/v2\nkind: ServiceEntry\n",
	// Markers the scanner reads in scalars and collections.
	"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: x\n  annotations:\n    a: |\n      text\n---\n" + seReviews,
	"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: x\n  annotations:\n    a: \"text\n---\n\"\n---\n" + seReviews,
	"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: x,\n---\n}\n---\n" + seReviews,
	"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: x\n  annotations:\n    a: plain\n---\n" + seReviews,
	"---\t\n" + seReviews + "--- # c\n" + seReviews + "---x: 1\n",
	// Directives, document ends, tags, anchors, odd line breaks.
	"%YAML 1.1\n---\n" + seReviews + "...\n%YAML 1.1\n---\n" + seReviews,
	seReviews + "...\n---\n" + seReviews + "...\n" + seReviews,
	"--- !!null {a: 1}\n---\n" + seReviews + "--- !<tag:yaml.org,2002:null> x\n",
	"a: &a [1]\n---\n" + seReviews + "  exportTo: *a\n",
	strings.ReplaceAll(seReviews+"---\n"+weReviews("a", "127.0.0.1", "v1", ""), "\n", "\r\n"),
	strings.ReplaceAll(seReviews+"---\n"+weReviews("a", "127.0.0.1", "v1", ""), "\n", "\r"),
	seReviews + "---\n" + strings.ReplaceAll(weReviews("a", "127.0.0.1", "v1", ""), "\n", "\u2028"),
	"\ufeff" + seReviews + "\ufeff---\n" + seReviews,
	// What the fast path reads, and what it must leave to yaml.v3.
	`apiVersion: "networking.istio.io/v1"
kind: 'ServiceEntry'
metadata:
  name: a   # a comment
  namespace: ns-1
  labels: {}
  annotations:
    "x/y": 'it''s'
    k: null
    e:
  creationTimestamp: null
  generation: 0
spec:
  hosts:
  - a.ns-1.svc.cluster.local
  - "b.ns-1.svc.cluster.local"
  addresses: []
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 8080
  -   {number: 443, name: "tls", protocol: TLS}
  endpoints:
  - address: 10.0.0.1
    ports: {http: 8080, tls: ~}
    labels: {app: a, "security.istio.io/tlsMode": istio}
    weight: 3
  -
    address: 10.0.0.2
    locality: r/z
  exportTo: ["*", .]
status: ~
`,
	`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: w, namespace: ns-1}
spec: {address: 10.0.0.3, ports: {}, labels: {app: a}, network: "", weight: -0, serviceAccount: true}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: w2}
spec:
  address: "10.0.0.4"
  weight: 012
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: w3}
spec:
  address: 10.0.0.5
  ports:
    http: 0x50
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s, namespace: ns-1}
spec:
  hosts: [a, ~]
  workloadSelector: {}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: t}
spec:
  hosts:
    - x
  workloadSelector:
    labels:
  ports: [{number: 1, name: a}, {}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: u}
spec:
  hosts: [x]
  hosts: [y]
---
  apiVersion: networking.istio.io/v1
  kind: WorkloadEntry
  metadata: {name: v}
  spec: {address: 1.2.3.4,
    weight: 1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: multi
spec:
  address: 1.2.3.4
  locality: a
    b
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec: {host: a}
`,
}

// FuzzDecodeEquivalent checks that decoding in one pass and in parallel
// parts reads any input exactly as the plain two-pass decode: the same
// resources, messages, and creation order.
func FuzzDecodeEquivalent(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
		if docs := strings.Split(s, "---\n"); len(docs) > 2 {
			for _, d := range docs {
				f.Add([]byte(d))
			}
		}
	}
	if data, err := os.ReadFile(filepath.Join("testdata", "demo", "mesh.yaml")); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeEquivalent(t, data)
	})
}

// TestDecodeLargeFileInParts checks a file large enough to be decoded in
// parts, whole and with an error in a late part: messages carry the file's
// own line numbers.
func TestDecodeLargeFileInParts(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 5*partSize; i++ {
		fmt.Fprintf(&b, "---\n%s", weReviews(fmt.Sprintf("w-%d", i), "127.0.0.1", "v1", ""))
	}
	data := []byte(b.String())
	if parts := splitParts(data, partSize); len(parts) < 3 {
		t.Fatalf("%d parts, want at least 3", len(parts))
	}
	checkDecodeEquivalent(t, data)
	pf := decodeAll(context.Background(), []input{{name: "f.yaml", data: data}}, partSize)[0]
	if m := mergeOf(pf); len(m.Problems) != 0 || len(m.WEs) == 0 || m.Order != len(m.WEs) {
		t.Fatalf("problems %v, %d WorkloadEntries, order %d", m.Problems, len(m.WEs), m.Order)
	}

	const w900 = "{name: w-900, namespace: default}\nspec:\n"
	bad := strings.Replace(b.String(), w900, w900+"  bogus: 1\n", 1)
	line := strings.Count(bad[:strings.Index(bad, "  bogus: 1")], "\n") + 1
	pf = decodeAll(context.Background(), []input{{name: "f.yaml", data: []byte(bad)}}, partSize)[0]
	m := mergeOf(pf)
	want := fmt.Sprintf(`f.yaml: WorkloadEntry default/w-900: line %d: unknown field "bogus" [cause <nil>]`, line)
	if len(m.Problems) != 1 || m.Problems[0] != want {
		t.Fatalf("problems %q, want [%q]", m.Problems, want)
	}
	checkDecodeEquivalent(t, []byte(bad))
}

// TestFastPathRandomDocs renders random ServiceEntries and WorkloadEntries
// in the many ways YAML allows (block or flow, plain or quoted, comments,
// odd spacing, values yaml.v3 reads as other types or rejects) and checks
// that every one decodes exactly as yaml.v3 decodes it, and that the fast
// path reads most of them.
func TestFastPathRandomDocs(t *testing.T) {
	var fd fastDecoder
	fast, n := 0, 2000
	if testing.Short() {
		n = 200
	}
	if s := os.Getenv("ISTIOYAML_RANDOM_DOCS"); s != "" {
		n, _ = strconv.Atoi(s) // a longer, different search
	}
	r := rand.New(rand.NewPCG(uint64(n), 2))
	for i := range n {
		doc := genDoc(r)
		data := []byte(doc)
		if _, k, ok := fd.document(doc, 0, false); ok && k == 1 {
			fast++
		}
		func() {
			defer func() {
				if t.Failed() {
					t.Logf("document %d:\n%s", i, doc)
				}
			}()
			checkDecodeEquivalent(t, data)
		}()
	}
	if fast < n/10 {
		t.Errorf("the fast path read %d of %d documents, want at least a tenth", fast, n)
	}
}

var genScalars = []string{
	"a", "b-c", "a b", "10.0.0.1", "r/z/s", "1", "-1", "0", "-0", "012", "0x1F", "0o7", "1_000", "1e3", "1.0", "+1",
	"99999999999999999999", "~", "null", "Null", "NULL", "true", "False", "yes", "on", ".inf", "2001-12-14", "<<",
	"a:b", "a: b", "a #b", "a#b", "-a", "- a", "*", "*a", "&a", "!a", "|", ">", "?a", "%a", "@a", "a,b", "[a]", "{a}",
	"it's", `say "hi"`, `back\slash`, "tab\there", "é", "",
}

var genKeys = map[string][]string{
	"":         {"apiVersion", "kind", "metadata", "spec", "status"},
	"metadata": {"name", "namespace", "labels", "annotations", "generation", "creationTimestamp", "uid", "finalizers", "bogus"},
	"se":       {"hosts", "addresses", "ports", "location", "resolution", "endpoints", "workloadSelector", "exportTo", "subjectAltNames", "bogus"},
	"port":     {"number", "protocol", "name", "targetPort", "bogus"},
	"we":       {"address", "ports", "labels", "network", "locality", "weight", "serviceAccount", "bogus"},
}

type genNode struct {
	scalar string
	isSeq  bool
	keys   []string
	kids   []*genNode
}

// genScalar is mostly a value that reads as a string or an integer, else
// any of genScalars.
func genScalar(r *rand.Rand) *genNode {
	switch r.IntN(8) {
	case 0, 1, 2:
		return &genNode{scalar: []string{"a", "b-c", "10.0.0.1", "r/z", "TCP", "x.y.svc", "tcp-1"}[r.IntN(7)]}
	case 3, 4:
		return &genNode{scalar: []string{"1", "80", "65535", "-3", "0"}[r.IntN(5)]}
	}
	return &genNode{scalar: genScalars[r.IntN(len(genScalars))]}
}

func genMap(r *rand.Rand, schema string, depth int) *genNode {
	n := &genNode{}
	keys := genKeys[schema]
	for _, k := range keys {
		if (r.IntN(3) == 0 && k != "kind") || (k == "bogus" && r.IntN(4) != 0) {
			continue
		}
		n.keys = append(n.keys, k)
		n.kids = append(n.kids, genValue(r, schema, k, depth))
		if r.IntN(40) == 0 { // a duplicate key
			n.keys = append(n.keys, k)
			n.kids = append(n.kids, genScalar(r))
		}
	}
	return n
}

func genValue(r *rand.Rand, schema, key string, depth int) *genNode {
	if r.IntN(30) == 0 || depth > 4 {
		return genScalar(r)
	}
	seq := func(item func() *genNode) *genNode {
		n := &genNode{isSeq: true}
		for range r.IntN(4) {
			n.kids = append(n.kids, item())
		}
		return n
	}
	strMap := func() *genNode {
		n := &genNode{}
		for range r.IntN(4) {
			n.keys = append(n.keys, []string{"app", "version", "x/y", "a.b/c", "1", "tcp-0", "http"}[r.IntN(7)])
			n.kids = append(n.kids, genScalar(r))
		}
		return n
	}
	switch schema + "." + key {
	case ".apiVersion":
		return &genNode{scalar: []string{"networking.istio.io/v1", "networking.istio.io/v1beta1", "v1"}[r.IntN(3)]}
	case ".kind":
		return &genNode{scalar: []string{"ServiceEntry", "WorkloadEntry", "WorkloadEntry", "Sidecar"}[r.IntN(4)]}
	case ".metadata":
		return genMap(r, "metadata", depth+1)
	case ".spec":
		if r.IntN(2) == 0 {
			return genMap(r, "se", depth+1)
		}
		return genMap(r, "we", depth+1)
	case "metadata.labels", "metadata.annotations", "we.labels", "we.ports":
		return strMap()
	case "se.workloadSelector":
		return &genNode{keys: []string{"labels"}, kids: []*genNode{strMap()}}
	case "se.ports":
		return seq(func() *genNode { return genMap(r, "port", depth+1) })
	case "se.endpoints":
		return seq(func() *genNode { return genMap(r, "we", depth+1) })
	case "se.hosts", "se.addresses", "se.exportTo", "se.subjectAltNames", "metadata.finalizers":
		return seq(func() *genNode { return genScalar(r) })
	}
	return genScalar(r)
}

// genDoc renders a random document.
func genDoc(r *rand.Rand) string {
	var b strings.Builder
	if r.IntN(4) == 0 {
		b.WriteString("# a comment\n")
	}
	genBlock(r, &b, genMap(r, "", 0), 0)
	s := b.String()
	if r.IntN(20) == 0 {
		s = strings.ReplaceAll(s, "\n", "\r\n")
	}
	return s
}

func genRenderScalar(r *rand.Rand, s string) string {
	switch r.IntN(6) {
	case 0:
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	case 1:
		return `"` + s + `"`
	}
	return s
}

func genComment(r *rand.Rand) string {
	switch r.IntN(16) {
	case 0, 1:
		return " # c"
	case 2:
		return "   "
	case 3:
		return "#c"
	}
	return ""
}

func genFlow(r *rand.Rand, n *genNode) string {
	sp := []string{"", " ", "  "}[r.IntN(3)]
	switch {
	case n.kids == nil && !n.isSeq && n.keys == nil:
		return genRenderScalar(r, n.scalar)
	case n.isSeq:
		var parts []string
		for _, k := range n.kids {
			parts = append(parts, genFlow(r, k))
		}
		return "[" + sp + strings.Join(parts, ","+sp) + sp + "]"
	}
	var parts []string
	for i, k := range n.keys {
		parts = append(parts, genRenderScalar(r, k)+":"+sp+" "+genFlow(r, n.kids[i]))
	}
	return "{" + sp + strings.Join(parts, ", ") + "}"
}

func genBlock(r *rand.Rand, b *strings.Builder, n *genNode, ind int) {
	pad := strings.Repeat(" ", ind)
	step := []int{2, 2, 4, 1}[r.IntN(4)]
	if n.isSeq {
		for _, k := range n.kids {
			b.WriteString(pad + "-")
			genEntry(r, b, k, ind, step, true)
		}
		return
	}
	for i, key := range n.keys {
		b.WriteString(pad + genRenderScalar(r, key) + ":")
		genEntry(r, b, n.kids[i], ind, step, false)
	}
}

// genEntry writes a key's or a sequence entry's value, after its "key:" or
// "-".
func genEntry(r *rand.Rand, b *strings.Builder, v *genNode, ind, step int, inSeq bool) {
	scalar := v.kids == nil && !v.isSeq && v.keys == nil
	switch {
	case scalar && v.scalar == "" && r.IntN(2) == 0:
		b.WriteString(genComment(r) + "\n")
	case scalar || r.IntN(3) == 0:
		b.WriteString(" " + genFlow(r, v) + genComment(r) + "\n")
	case inSeq && !v.isSeq && len(v.keys) > 0 && r.IntN(2) == 0:
		// compact: "- key: value" and the other keys below it
		var sub strings.Builder
		genBlock(r, &sub, v, ind+step)
		b.WriteString(strings.Repeat(" ", step-1) + strings.TrimLeft(sub.String(), " "))
	case v.isSeq && !inSeq && r.IntN(2) == 0:
		b.WriteString(genComment(r) + "\n")
		genBlock(r, b, v, ind) // a sequence at its key's indentation
	default:
		b.WriteString(genComment(r) + "\n")
		if len(v.kids) == 0 {
			b.WriteString(strings.Repeat(" ", ind+step) + "{}\n")
			return
		}
		genBlock(r, b, v, ind+step)
	}
}

// scaleYAML is a mesh shaped like bench/scalegen.go's: per service a
// ServiceEntry selecting ten WorkloadEntries, in files of 100 services.
func scaleYAML(services int) map[string]string {
	files := map[string]string{}
	var b strings.Builder
	for i := range services {
		ns := fmt.Sprintf("ns-%d", i/100)
		fmt.Fprintf(&b, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc-%d, namespace: %s}\nspec:\n"+
			"  hosts: [svc-%d.%s.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n"+
			"  - {number: 9080, name: tcp-0, protocol: TCP}\n  - {number: 9081, name: tcp-1, protocol: TCP}\n"+
			"  workloadSelector:\n    labels: {app: svc-%d}\n", i, ns, i, ns, i)
		for j := range 10 {
			idx := i*10 + j + 1
			fmt.Fprintf(&b, "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: svc-%d-%d, namespace: %s}\nspec:\n"+
				"  address: 127.%d.%d.%d\n  ports: {tcp-0: 8080, tcp-1: 8081}\n  labels: {app: svc-%d, version: v1}\n"+
				"  locality: us-east1/us-east1-%c\n  network: network1\n  serviceAccount: svc-%d\n",
				i, j, ns, byte(idx>>16), byte(idx>>8), byte(idx), i, 'a'+j%3, i)
		}
		b.WriteString("---\n")
		if (i+1)%100 == 0 || i == services-1 {
			files[ns+".yaml"] = b.String()
			b.Reset()
		}
	}
	return files
}

// BenchmarkLoad loads 1,000 services x 2 ports x 10 WorkloadEntries (3 MiB
// in 10 files); "yaml.v3" without the fast path.
func BenchmarkLoad(b *testing.B) {
	dir := writeTree(b, scaleYAML(1000))
	opts := Options{Network: "network1"}
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			mustLoad(b, []string{dir}, opts)
		}
	})
	b.Run("yaml.v3", func(b *testing.B) {
		useFastPath = false
		defer func() { useFastPath = true }()
		for b.Loop() {
			mustLoad(b, []string{dir}, opts)
		}
	})
}

// TestFastDecoderKnowsEveryField checks that the fast path reads every
// field of the types it decodes, under its yaml tag, as yaml.v3 does: a
// field renamed or added in types.go must be handled in fast.go too, or
// documents using it silently lose the fast path (or worse, are read under
// the old name).
func TestFastDecoderKnowsEveryField(t *testing.T) {
	value := func(ft reflect.Type) string {
		switch {
		case ft.Kind() == reflect.String:
			return "x7"
		case ft.Kind() == reflect.Int64:
			return "7"
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
			return "[x7]"
		case ft.Kind() == reflect.Slice:
			return "[{}]"
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.String:
			return "{k: x7}"
		case ft.Kind() == reflect.Map:
			return "{k: 7}"
		case ft.Kind() == reflect.Pointer, ft.Kind() == reflect.Struct:
			return "{}"
		}
		return "null" // fields typed any
	}
	we := "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
	se := "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\n"
	types := []struct {
		typ           reflect.Type
		base          string // fields every document needs
		before, after string
	}{
		{reflect.TypeFor[objectMeta](), "name: w", we + "spec: {address: 1.2.3.4}\nmetadata: {", "}\n"},
		{reflect.TypeFor[workloadEntrySpec](), "address: 1.2.3.4", we + "metadata: {name: w}\nspec: {", "}\n"},
		{reflect.TypeFor[serviceEntrySpec](), "hosts: [a.b]", se + "spec: {", "}\n"},
		{reflect.TypeFor[servicePort](), "number: 1", se + "spec: {hosts: [a.b], ports: [{", "}]}\n"},
		{reflect.TypeFor[workloadSelector](), "", se + "spec: {hosts: [a.b], workloadSelector: {", "}}\n"},
	}
	var fd fastDecoder
	for _, tt := range types {
		for i := range tt.typ.NumField() {
			f := tt.typ.Field(i)
			tag := f.Tag.Get("yaml")
			fields := tag + ": " + value(f.Type)
			if base, _, _ := strings.Cut(tt.base, ":"); tt.base != "" && base != tag {
				fields = tt.base + ", " + fields
			}
			doc := tt.before + fields + tt.after
			if _, n, ok := fd.document(doc, 0, false); !ok || n != 1 {
				t.Errorf("%s.%s: the fast path gives up on\n%s", tt.typ.Name(), f.Name, doc)
				continue
			}
			checkDecodeEquivalent(t, []byte(doc))
		}
	}
}
