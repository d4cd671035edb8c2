package main

import (
	"maps"

	"github.com/eastwest-gw/eastwest/health"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
)

// groupsFrom turns the WorkloadGroups of the mesh files into health check
// groups: a WorkloadGroup's readiness probe applies to the entries it selects.
func groupsFrom(wgs []istioyaml.WorkloadGroup) []health.Group {
	var out []health.Group
	for _, wg := range wgs {
		p := wg.Probe
		if p == nil {
			continue
		}
		labels := maps.Clone(wg.Metadata.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, wg.Template.Labels)
		cfg := health.CheckConfig{InitialDelaySeconds: p.InitialDelaySeconds, TimeoutSeconds: p.TimeoutSeconds,
			PeriodSeconds: p.PeriodSeconds, SuccessThreshold: p.SuccessThreshold, FailureThreshold: p.FailureThreshold}
		switch {
		case p.HTTPGet != nil:
			h := &health.HTTPGetAction{Path: p.HTTPGet.Path, Port: uint16(p.HTTPGet.Port), Host: p.HTTPGet.Host, Scheme: p.HTTPGet.Scheme}
			for _, hd := range p.HTTPGet.HTTPHeaders {
				h.HTTPHeaders = append(h.HTTPHeaders, health.HTTPHeader{Name: hd.Name, Value: hd.Value})
			}
			cfg.HTTPGet = h
		case p.TCPSocket != nil:
			cfg.TCPSocket = &health.TCPSocketAction{Port: uint16(p.TCPSocket.Port)}
		case p.GRPC != nil:
			cfg.GRPC = &health.GRPCAction{Port: uint16(p.GRPC.Port), Service: p.GRPC.Service}
		case p.Exec != nil:
			cfg.Exec = &health.ExecAction{Command: p.Exec.Command}
		}
		out = append(out, health.Group{Name: wg.Name, Namespace: wg.Namespace, Labels: labels, Probe: cfg})
	}
	return out
}
