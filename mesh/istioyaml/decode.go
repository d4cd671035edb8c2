package istioyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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

// header is what the first pass reads of a document, before its kind is
// known.
type header struct {
	empty                bool
	notMapping           bool
	line                 int
	apiVersion, kind     string
	metaName, metaNSpace string
}

func headerOf(n *yaml.Node) header {
	h := header{line: n.Line}
	if n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
		h.empty = true
		return h
	}
	root := n.Content[0]
	h.line = root.Line
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

// parse reads every document of one input into c's resource lists.
func (c *compiler) parse(in input) {
	// Pass 1 splits the stream into documents and reads each one's kind;
	// pass 2 decodes the same stream again, strictly, into the type the
	// kind calls for. Two passes because yaml.v3 honours KnownFields only
	// when decoding from a Decoder, not from a Node.
	var heads []header
	dec := yaml.NewDecoder(bytes.NewReader(in.data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			c.errf(in.name, "", err, "invalid YAML: %s", cleanYAMLError(err.Error()))
			return
		}
		heads = append(heads, headerOf(&n))
	}
	strict := yaml.NewDecoder(bytes.NewReader(in.data))
	strict.KnownFields(true)
	for i, h := range heads {
		m := meta{file: in.name, kind: h.kind, name: h.metaName, namespace: h.metaNSpace, order: c.order}
		c.order++
		if m.namespace == "" {
			m.namespace = "default"
		}
		res := m.resource()
		if m.name == "" || h.kind == "" {
			res = fmt.Sprintf("document %d (line %d)", i+1, h.line)
			if h.kind != "" {
				res = h.kind + " " + res
			}
		}
		target, add := c.target(&m, h, res)
		if target == nil {
			var skip yaml.Node
			target = &skip
		}
		if err := strict.Decode(target); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				c.errf(in.name, res, err, "invalid YAML: %s", cleanYAMLError(err.Error()))
				return
			}
			for _, e := range te.Errors {
				c.errf(in.name, res, nil, "%s", cleanYAMLError(e))
			}
			continue
		}
		if add != nil && c.checkMeta(&m, res) {
			add()
		}
	}
}

// target picks the type a document decodes into and returns a function
// that records it once decoded; a nil target means "decode and discard".
func (c *compiler) target(m *meta, h header, res string) (any, func()) {
	switch {
	case h.empty:
		return nil, nil
	case h.notMapping:
		c.errf(m.file, res, nil, "line %d: a resource must be a mapping", h.line)
		return nil, nil
	case h.apiVersion == "" || h.kind == "":
		c.errf(m.file, res, nil, "apiVersion and kind are required")
		return nil, nil
	}
	group, version, _ := strings.Cut(h.apiVersion, "/")
	if ignoredKinds[group][h.kind] {
		c.warnf(m.file, res, "%s is not used by the east-west gateway; ignored", h.kind)
		return nil, nil
	}
	if group != istioNetworking {
		c.errf(m.file, res, nil, "unsupported kind %s (apiVersion %q): only %s resources are read", h.kind, h.apiVersion, istioNetworking)
		return nil, nil
	}
	if !networkingVersions[version] {
		c.errf(m.file, res, nil, "unsupported apiVersion %q (want %s/v1, v1beta1 or v1alpha3)", h.apiVersion, istioNetworking)
		return nil, nil
	}
	switch h.kind {
	case "ServiceEntry":
		d := &document[serviceEntrySpec]{}
		return d, func() { c.ses = append(c.ses, &seRes{meta: *m, spec: d.Spec}) }
	case "WorkloadEntry":
		d := &document[workloadEntrySpec]{}
		return d, func() { c.wes = append(c.wes, &weRes{meta: *m, spec: d.Spec}) }
	case "DestinationRule":
		d := &document[destinationRuleSpec]{}
		return d, func() { c.drs = append(c.drs, &drRes{meta: *m, spec: d.Spec}) }
	case "WorkloadGroup":
		d := &document[workloadGroupSpec]{}
		return d, func() { c.wgs = append(c.wgs, &wgRes{meta: *m, spec: d.Spec}) }
	}
	c.errf(m.file, res, nil, "unsupported kind %s in %s", h.kind, istioNetworking)
	return nil, nil
}

// checkMeta validates the name and namespace and reports duplicates.
func (c *compiler) checkMeta(m *meta, res string) bool {
	ok := true
	if m.name == "" {
		c.errf(m.file, res, nil, "metadata.name is required")
		return false
	}
	if !isDNS1123Subdomain(m.name) {
		c.errf(m.file, res, nil, "metadata.name %q is not a valid DNS-1123 subdomain", m.name)
		ok = false
	}
	if !isDNS1123Label(m.namespace) {
		c.errf(m.file, res, nil, "metadata.namespace %q is not a valid DNS-1123 label", m.namespace)
		ok = false
	}
	key := m.kind + "/" + m.namespace + "/" + m.name
	if first, dup := c.names[key]; dup {
		c.errf(m.file, res, nil, "duplicate resource name, first declared in %s", first)
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
	for _, l := range strings.Split(s, ".") {
		if !isDNS1123Label(l) {
			return false
		}
	}
	return true
}
