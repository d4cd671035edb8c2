package istioyaml

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

const istioNetworking = "networking.istio.io"

// versions of networking.istio.io that define the kinds read here with the
// same fields.
var networkingVersions = map[string]bool{"v1": true, "v1beta1": true, "v1alpha3": true}

// ignoredKinds are Istio kinds that may sit in the same folder (a copy of a
// cluster's config) but do not shape SNI-DNAT clusters: they are accepted
// unread, with a warning. The Gateway resource in particular is the
// gateway's own listener config, which eastwest takes from its settings.
var ignoredKinds = map[string]map[string]bool{
	istioNetworking:      {"Gateway": true, "VirtualService": true, "Sidecar": true, "EnvoyFilter": true, "ProxyConfig": true},
	"security.istio.io":  {"AuthorizationPolicy": true, "PeerAuthentication": true, "RequestAuthentication": true},
	"telemetry.istio.io": {"Telemetry": true},
}

// meta locates one resource for messages and ordering.
type meta struct {
	file      string
	kind      string
	name      string
	namespace string
	order     int // position over all inputs: Istio's creation order stand-in
}

func (m *meta) resource() string { return m.kind + " " + m.namespace + "/" + m.name }

type seRes struct {
	meta
	spec serviceEntrySpec
}

type weRes struct {
	meta
	spec workloadEntrySpec
}

type drRes struct {
	meta
	spec destinationRuleSpec
}

type wgRes struct {
	meta
	spec workloadGroupSpec
}

// header is what is read of a document before its kind is known.
type header struct {
	empty                bool
	notMapping           bool
	line                 int
	apiVersion, kind     string
	metaName, metaNSpace string
}

// headerOf reads the header of a document node.
func headerOf(n *yaml.Node) header {
	if n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
		return header{empty: true, line: n.Line}
	}
	return headerOfRoot(n.Content[0])
}

// headerOfRoot reads the header of a document's root node.
func headerOfRoot(root *yaml.Node) header {
	h := header{line: root.Line}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		h.empty = true
		return h
	}
	if root.Kind != yaml.MappingNode {
		h.notMapping = true
		return h
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "apiVersion":
			if v.Kind == yaml.ScalarNode {
				h.apiVersion = v.Value
			}
		case "kind":
			if v.Kind == yaml.ScalarNode {
				h.kind = v.Value
			}
		case "metadata":
			if v.Kind != yaml.MappingNode {
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				mk, mv := v.Content[j], v.Content[j+1]
				if mv.Kind != yaml.ScalarNode {
					continue
				}
				switch mk.Value {
				case "name":
					h.metaName = mv.Value
				case "namespace":
					h.metaNSpace = mv.Value
				}
			}
		}
	}
	return h
}

// note is one message about a document, kept until merge replays it.
type note struct {
	err   bool // else a warning
	msg   string
	cause error
}

// parsedDoc is one document as a decoding worker leaves it: its header,
// its messages in the order found and, when it decoded cleanly into a kind
// that is read, the *document[S] to record.
type parsedDoc struct {
	h     header
	notes []note
	val   any
}

func (d *parsedDoc) errf(format string, args ...any) {
	d.notes = append(d.notes, note{err: true, msg: fmt.Sprintf(format, args...)})
}

func (d *parsedDoc) warnf(format string, args ...any) {
	d.notes = append(d.notes, note{msg: fmt.Sprintf(format, args...)})
}

// parsedFile is every document of one input, or the syntax error that
// makes the whole input unreadable (reported alone, as no document of a
// file that is not YAML can be trusted).
type parsedFile struct {
	docs  []parsedDoc
	fatal error
}

// target picks the type a document decodes into; nil means "decode and
// discard", with the reason among the document's notes when it is a
// problem.
func (d *parsedDoc) target() any {
	h := &d.h
	switch {
	case h.empty:
		return nil
	case h.notMapping:
		d.errf("line %d: a resource must be a mapping", h.line)
		return nil
	case h.apiVersion == "" || h.kind == "":
		d.errf("apiVersion and kind are required")
		return nil
	}
	group, version, _ := strings.Cut(h.apiVersion, "/")
	if ignoredKinds[group][h.kind] {
		d.warnf("%s is not used by the east-west gateway; ignored", h.kind)
		return nil
	}
	if group != istioNetworking {
		d.errf("unsupported kind %s (apiVersion %q): only %s resources are read", h.kind, h.apiVersion, istioNetworking)
		return nil
	}
	if !networkingVersions[version] {
		d.errf("unsupported apiVersion %q (want %s/v1, v1beta1 or v1alpha3)", h.apiVersion, istioNetworking)
		return nil
	}
	switch h.kind {
	case "ServiceEntry":
		return &document[serviceEntrySpec]{}
	case "WorkloadEntry":
		return &document[workloadEntrySpec]{}
	case "DestinationRule":
		return &document[destinationRuleSpec]{}
	case "WorkloadGroup":
		return &document[workloadGroupSpec]{}
	}
	d.errf("unsupported kind %s in %s", h.kind, istioNetworking)
	return nil
}

// decodeErr records the error of a strict decode; it reports whether the
// rest of the input may still be decoded (type errors: yes).
func (d *parsedDoc) decodeErr(err error) bool {
	d.val = nil
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		d.notes = append(d.notes, note{err: true, msg: "invalid YAML: " + cleanYAMLError(err.Error()), cause: err})
		return false
	}
	for _, e := range te.Errors {
		d.notes = append(d.notes, note{err: true, msg: cleanYAMLError(e)})
	}
	return true
}

// merge records one input's documents in c, in document order: the
// resources in Istio's creation-order stand-in, the messages as if the
// documents had been read one after the other.
func (c *compiler) merge(file string, pf *parsedFile) {
	if pf.fatal != nil {
		c.errf(file, "", pf.fatal, "invalid YAML: %s", cleanYAMLError(pf.fatal.Error()))
		return
	}
	for i := range pf.docs {
		d := &pf.docs[i]
		h := &d.h
		m := meta{file: file, kind: h.kind, name: h.metaName, namespace: h.metaNSpace, order: c.order}
		c.order++
		if m.namespace == "" {
			m.namespace = "default"
		}
		// Most documents have nothing to report: their resource string
		// is made only when needed.
		res := func() string {
			if m.name == "" || h.kind == "" {
				r := fmt.Sprintf("document %d (line %d)", i+1, h.line)
				if h.kind != "" {
					r = h.kind + " " + r
				}
				return r
			}
			return m.resource()
		}
		if len(d.notes) > 0 {
			r := res()
			for _, n := range d.notes {
				if n.err {
					c.problems = append(c.problems, &Error{File: file, Resource: r, Message: n.msg, Err: n.cause})
				} else {
					c.warnings = append(c.warnings, Warning{File: file, Resource: r, Message: n.msg})
				}
			}
		}
		if d.val == nil || !c.checkMeta(&m, res) {
			continue
		}
		switch v := d.val.(type) {
		case *document[serviceEntrySpec]:
			c.ses = append(c.ses, &seRes{meta: m, spec: v.Spec})
		case *document[workloadEntrySpec]:
			c.wes = append(c.wes, &weRes{meta: m, spec: v.Spec})
		case *document[destinationRuleSpec]:
			c.drs = append(c.drs, &drRes{meta: m, spec: v.Spec})
		case *document[workloadGroupSpec]:
			c.wgs = append(c.wgs, &wgRes{meta: m, spec: v.Spec})
		}
	}
}

// metaKey names a resource: kind, namespace, name.
type metaKey struct{ kind, namespace, name string }

// checkMeta validates the name and namespace and reports duplicates.
func (c *compiler) checkMeta(m *meta, res func() string) bool {
	ok := true
	if m.name == "" {
		c.errf(m.file, res(), nil, "metadata.name is required")
		return false
	}
	if !isDNS1123Subdomain(m.name) {
		c.errf(m.file, res(), nil, "metadata.name %q is not a valid DNS-1123 subdomain", m.name)
		ok = false
	}
	if !isDNS1123Label(m.namespace) {
		c.errf(m.file, res(), nil, "metadata.namespace %q is not a valid DNS-1123 label", m.namespace)
		ok = false
	}
	key := metaKey{m.kind, m.namespace, m.name}
	if first, dup := c.names[key]; dup {
		c.errf(m.file, res(), nil, "duplicate resource name, first declared in %s", first)
		return false
	}
	c.names[key] = m.file
	return ok
}

var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type \S+`)

// cleanYAMLError drops yaml.v3's prefix and Go type names.
func cleanYAMLError(s string) string {
	s = strings.TrimPrefix(s, "yaml: ")
	s = unknownFieldRE.ReplaceAllString(s, `unknown field "$1"`)
	s = strings.ReplaceAll(s, "istioyaml.", "")
	return s
}

// isDNS1123Label reports whether s is a lower-case RFC 1123 label.
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9':
		case ch == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isDNS1123Subdomain reports whether s is dot-separated DNS-1123 labels.
func isDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for {
		l, rest, more := strings.Cut(s, ".")
		if !isDNS1123Label(l) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}
