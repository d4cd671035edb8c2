package health

import (
	"strings"

	"github.com/eastwest-gw/eastwest/mesh"
)

// Group is an Istio WorkloadGroup reduced to what health checking needs:
// its probe applies to the endpoints it selects. mesh/istioyaml keeps
// WorkloadGroups in its Result; cmd/eastwest converts them (the probe's
// fields are Kubernetes', like CheckConfig's).
type Group struct {
	// Name and Namespace identify the WorkloadGroup in logs.
	Name, Namespace string
	// Labels are the group's metadata labels and template labels: a
	// WorkloadEntry created from the group carries all of them. An
	// endpoint is selected when it is in Namespace and has every label. A
	// group without labels selects nothing.
	Labels map[string]string
	// Probe is the group's readiness probe; its Host and Port are ignored.
	Probe CheckConfig
}

// selects reports whether g's probe applies to ep.
func (g *Group) selects(ep *mesh.Endpoint) bool {
	if len(g.Labels) == 0 || ep.Namespace != g.Namespace {
		return false
	}
	for k, v := range g.Labels {
		if got, ok := ep.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// TargetsFor returns what to check in snap: for each endpoint of each
// cluster, the config that applies to it, by precedence
//
//  1. a config for the cluster's exact service host (one naming the port
//     beats one that does not);
//  2. the probe of the first group that selects the endpoint;
//  3. the config with the longest matching "*.suffix" host, then "*".
//
// Endpoints that nothing applies to are not checked. cfgs should have been
// validated (Validate) when the settings were loaded; Update skips targets
// with invalid configs. Pass the result to Checker.Update.
func TargetsFor(snap *mesh.Snapshot, cfgs []CheckConfig, groups ...Group) []Target {
	if snap == nil {
		return nil
	}
	var out []Target
	for _, cl := range snap.Clusters() {
		exact, wild := match(cfgs, cl.Key.Host, cl.Key.Port)
		for i := range cl.Endpoints {
			ep := &cl.Endpoints[i]
			cfg := exact
			if cfg == nil {
				for gi := range groups {
					if groups[gi].selects(ep) {
						cfg = &groups[gi].Probe
						break
					}
				}
			}
			if cfg == nil {
				cfg = wild
			}
			if cfg == nil {
				continue
			}
			out = append(out, Target{Endpoint: ep.Addr, Cluster: cl.Name, Config: *cfg})
		}
	}
	return out
}

// match returns the best exact-host config and the best wildcard config for
// a service host and port; either may be nil.
func match(cfgs []CheckConfig, host string, port uint16) (exact, wild *CheckConfig) {
	bestExact, bestWild := -1, -1
	for i := range cfgs {
		c := &cfgs[i]
		if c.Port != 0 && c.Port != port {
			continue
		}
		portBonus := 0
		if c.Port != 0 {
			portBonus = 1
		}
		switch {
		case c.Host == host:
			if portBonus > bestExact {
				exact, bestExact = c, portBonus
			}
		case c.Host == "*":
			if portBonus > bestWild {
				wild, bestWild = c, portBonus
			}
		case strings.HasPrefix(c.Host, "*.") && strings.HasSuffix(host, c.Host[1:]):
			if score := 2*len(c.Host) + portBonus; score > bestWild {
				wild, bestWild = c, score
			}
		}
	}
	return exact, wild
}
