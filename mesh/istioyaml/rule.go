package istioyaml

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/eastwest-gw/eastwest/mesh"
)

// This file compiles one DestinationRule at a time for sources that get
// rules from elsewhere than files (mesh/kube reads them from the Kubernetes
// API), with the validation, host completion, exportTo and policy merging
// that Load applies: there is one DestinationRule compiler.

// DestinationRule is a compiled DestinationRule that applies to the
// gateway: valid, exported to the gateway's namespace and without a
// workloadSelector.
type DestinationRule struct {
	// Name and Namespace are the rule's metadata.
	Name, Namespace string
	// Host is spec.host completed as Istio does: a short name is relative
	// to the rule's namespace (NAME.NAMESPACE.svc.DOMAIN); "*" and
	// "*.suffix" are wildcards.
	Host string
	b    *drBuild
}

// Subset is one subset of a DestinationRule.
type Subset struct {
	// Name is the subset's name, the SUBSET of outbound_.PORT_.SUBSET_.HOST.
	Name string
	// Labels select the subset's endpoints: an endpoint carries them all.
	Labels map[string]string
	rule   *DestinationRule
	index  int
}

// CompileDestinationRule compiles the spec of DestinationRule
// namespace/name, given as JSON or YAML (the Kubernetes API serves JSON),
// for the gateway opts describes. Every problem Load would report as an
// error is joined into err. A valid rule that does not apply to the
// gateway (exportTo hides it, or it has a workloadSelector) gives a nil
// rule, a nil error and a warning that says why. Fields unknown to this
// version of the API are warnings, not errors: a rule written for a newer
// Istio still applies with the fields that are known.
func CompileDestinationRule(name, namespace string, spec []byte, opts Options) (*DestinationRule, []string, error) {
	opts = opts.withDefaults()
	var s destinationRuleSpec
	var pr problems
	if err := decodeSpec(spec, &s, &pr); err != nil {
		return nil, nil, fmt.Errorf("DestinationRule %s/%s: %w", namespace, name, err)
	}
	d := compileRule(&pr, &s, namespace, opts.ClusterDomain)
	var warnings []string
	warnings = append(warnings, pr.warns...)
	if len(pr.errs) > 0 {
		errs := make([]error, len(pr.errs))
		for i, e := range pr.errs {
			errs[i] = &Error{Resource: "DestinationRule " + namespace + "/" + name, Message: e}
		}
		return nil, warnings, errors.Join(errs...)
	}
	switch {
	case s.WorkloadSelector != nil:
		return nil, append(warnings, "workloadSelector: the rule applies only to the selected sidecars, never to the gateway; ignored"), nil
	case !visibleTo(s.ExportTo, namespace, opts.Namespace):
		return nil, append(warnings, fmt.Sprintf("not exported to the gateway's namespace %s; ignored", opts.Namespace)), nil
	}
	d.dr = &drRes{meta: meta{kind: "DestinationRule", name: name, namespace: namespace}, spec: s}
	return &DestinationRule{Name: name, Namespace: namespace, Host: d.host, b: d}, warnings, nil
}

var yamlLineRE = regexp.MustCompile(`^line \d+: `)

// decodeSpec decodes a spec strictly: unknown fields become warnings (the
// spec is then decoded again leniently), any other mismatch an error.
func decodeSpec(data []byte, s *destinationRuleSpec, pr *problems) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(s)
	if err == nil {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return errors.New("invalid spec: " + cleanYAMLError(err.Error()))
	}
	var msgs []string
	for _, e := range te.Errors {
		// JSON is one line: its line numbers say nothing.
		m := yamlLineRE.ReplaceAllString(cleanYAMLError(e), "")
		if strings.HasPrefix(m, "unknown field ") {
			pr.warnf("spec", "%s; ignored", m)
			continue
		}
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		return errors.New(strings.Join(msgs, "; "))
	}
	*s = destinationRuleSpec{}
	if err := yaml.Unmarshal(data, s); err != nil {
		return errors.New("invalid spec: " + cleanYAMLError(err.Error()))
	}
	return nil
}

// compileRule validates a DestinationRule spec and compiles its policies;
// problems go to pr. The caller sets the result's dr.
func compileRule(pr *problems, spec *destinationRuleSpec, namespace, domain string) *drBuild {
	d := &drBuild{}
	host := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(spec.Host), "."))
	switch {
	case host == "":
		pr.errf("host", "is required")
	case host == "*":
		d.wildcard = true
	case !strings.Contains(host, "."):
		// Short names are relative to the rule's namespace, not the
		// service's (destination_rule.proto).
		host = host + "." + namespace + ".svc." + domain
	}
	if host != "" && host != "*" {
		if strings.HasPrefix(host, "*") {
			d.wildcard = true
			if !isWildcardHost(host) {
				pr.errf("host", "%q is not a valid wildcard host", spec.Host)
			}
		} else if !isHostName(host) {
			pr.errf("host", "%q is not a valid host name", spec.Host)
		}
	}
	d.host = host
	checkExportTo(pr, "exportTo", spec.ExportTo)
	d.top = compilePolicy(pr, "trafficPolicy", spec.TrafficPolicy)
	names := map[string]bool{}
	for i, s := range spec.Subsets {
		sp := fmt.Sprintf("subsets[%d]", i)
		switch {
		case s.Name == "":
			pr.errf(sp+".name", "is required")
		case !isDNS1123Label(s.Name):
			pr.errf(sp+".name", "%q is not a valid DNS-1123 label", s.Name)
		case names[s.Name]:
			pr.errf(sp+".name", "subset %q is declared twice", s.Name)
		}
		names[s.Name] = true
		d.subsets = append(d.subsets, subsetBuild{name: s.Name, labels: s.Labels, pol: compilePolicy(pr, sp+".trafficPolicy", s.TrafficPolicy)})
	}
	return d
}

// drTier is the precedence of a rule in namespace ns for a service in
// svcNS seen from the gateway's namespace gw (PushContext.destinationRule):
// 0 the gateway's namespace, 1 the service's, 2 the root namespace; -1
// means Istio never applies it to that service at the gateway.
func drTier(ns, gw, svcNS string) int {
	for i, t := range [...]string{gw, svcNS, RootNamespace} {
		if t == ns {
			return i
		}
	}
	return -1
}

// drBefore reports whether rule a ranks before rule b for one service,
// given their tiers and creation orders: the lower tier, then an exact host
// over a wildcard, then the longer (more specific) wildcard, then the
// older rule.
func drBefore(a, b *drBuild, tierA, tierB, orderA, orderB int) bool {
	if tierA != tierB {
		return tierA < tierB
	}
	if a.wildcard != b.wildcard {
		return !a.wildcard
	}
	if len(a.host) != len(b.host) {
		return len(a.host) > len(b.host)
	}
	return orderA < orderB
}

// Matches reports whether the rule's host covers a service host.
func (r *DestinationRule) Matches(host string) bool { return hostMatches(r.b.host, host) }

// Wildcard reports whether Host is "*" or "*.suffix".
func (r *DestinationRule) Wildcard() bool { return r.b.wildcard }

// Policy is the traffic policy of the cluster outbound_.PORT_._.HOST:
// trafficPolicy with its portLevelSettings entry for port, if any.
func (r *DestinationRule) Policy(port uint16) mesh.TrafficPolicy {
	return mergePolicy(r.b.top, nil, port).trafficPolicy()
}

// Subsets returns the rule's subsets in declaration order.
func (r *DestinationRule) Subsets() []Subset {
	out := make([]Subset, len(r.b.subsets))
	for i, s := range r.b.subsets {
		out[i] = Subset{Name: s.name, Labels: s.labels, rule: r, index: i}
	}
	return out
}

// Policy is the traffic policy of the cluster outbound_.PORT_.SUBSET_.HOST:
// the subset's components replace the rule's, as Istio merges them.
func (s Subset) Policy(port uint16) mesh.TrafficPolicy {
	return mergePolicy(s.rule.b.top, s.rule.b.subsets[s.index].pol, port).trafficPolicy()
}

// LabelsMatch reports whether labels carries every label of the subset.
func (s Subset) LabelsMatch(labels map[string]string) bool { return labelsMatch(s.Labels, labels) }

// PickDestinationRule returns the rule Istio applies at the gateway of
// opts to the service host in namespace svcNS, or nil: among the rules
// that match the host, those in the gateway's namespace first, then the
// service's, then the root namespace (rules elsewhere never apply); within
// one, the exact host, then the most specific wildcard, then the oldest.
// rules must be oldest first (Istio orders by creation time).
func PickDestinationRule(rules []*DestinationRule, host, svcNS string, opts Options) *DestinationRule {
	gw := opts.withDefaults().Namespace
	var best *DestinationRule
	bestTier, bestOrder := -1, -1
	for i, r := range rules {
		if !r.Matches(host) {
			continue
		}
		t := drTier(r.Namespace, gw, svcNS)
		if t < 0 {
			continue
		}
		if best == nil || drBefore(r.b, best.b, t, bestTier, i, bestOrder) {
			best, bestTier, bestOrder = r, t, i
		}
	}
	return best
}
