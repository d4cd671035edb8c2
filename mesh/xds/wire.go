package xds

import (
	"math"
	"net/netip"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/eastwest-gw/eastwest/mesh"
)

// claDecoder reads a serialized ClusterLoadAssignment straight into
// mesh.Endpoints. proto.Unmarshal builds every Envoy message of a CLA, a
// map-backed structpb.Struct per endpoint included, for translateEndpoints
// to read a few fields: on a full push that was most of the client's CPU
// and garbage.
//
// It reads only the fields istiod sends for endpoints (cluster_name;
// locality, priority, weights; socket address; health status; filter
// metadata) with proto's semantics: later scalars win, a repeated singular
// message merges into the earlier one, a map entry replaces an earlier one
// with the same key, strings must be UTF-8. On anything else (another field
// or oneof member, a wire type proto would treat as unknown, malformed
// bytes, deep nesting, or a value translateEndpoints would reject) decode
// returns ok false, and the caller falls back to proto.Unmarshal and
// translateEndpoints, which have the last word. FuzzCLADecoder holds the two
// paths to the same answers.
//
// A decoder is not safe for concurrent use; it keeps the interned strings
// and shared label maps of one response.
type claDecoder struct {
	network string
	eps     []mesh.Endpoint // the CLA being decoded, allocated at its size
	strs    map[string]string
	labels  map[[3]string]map[string]string
}

func newCLADecoder(network string) *claDecoder {
	return &claDecoder{network: network, strs: map[string]string{}, labels: map[[3]string]map[string]string{}}
}

// maxStructDepth bounds recursion into metadata values; deeper ones take
// the slow path, which applies proto's own limit.
const maxStructDepth = 32

// decode returns the CLA's cluster name and its endpoints as
// translateEndpoints would, or ok false.
func (d *claDecoder) decode(b []byte) (name string, eps []mesh.Endpoint, ok bool) {
	// Endpoints are decoded into a slice of the final size: a copy from
	// scratch space would run the GC's write barriers over every one again.
	n, ok := countLbEndpoints(b)
	if !ok {
		return "", nil, false
	}
	d.eps = nil
	if n > 0 {
		d.eps = make([]mesh.Endpoint, 0, n)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return "", nil, false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", nil, false
		}
		b = b[n:]
		switch num {
		case 1: // cluster_name
			if !utf8.Valid(v) {
				return "", nil, false
			}
			name = string(v)
		case 2: // endpoints
			if !d.localityEndpoints(v) {
				return "", nil, false
			}
		default:
			return "", nil, false
		}
	}
	eps, d.eps = d.eps, nil
	return name, eps, true
}

// countLbEndpoints counts a serialized CLA's lb_endpoints (field 2 of each
// field 2), without reading them.
func countLbEndpoints(b []byte) (int, bool) {
	n := 0
	for len(b) > 0 {
		num, typ, tn := protowire.ConsumeTag(b)
		if tn < 0 || typ != protowire.BytesType {
			return 0, false
		}
		v, vn := protowire.ConsumeBytes(b[tn:])
		if vn < 0 {
			return 0, false
		}
		b = b[tn+vn:]
		if num != 2 {
			continue
		}
		for len(v) > 0 {
			num, typ, tn := protowire.ConsumeTag(v)
			if tn < 0 {
				return 0, false
			}
			fn := protowire.ConsumeFieldValue(num, typ, v[tn:])
			if fn < 0 {
				return 0, false
			}
			v = v[tn+fn:]
			if num == 2 {
				n++
			}
		}
	}
	return n, true
}

// localityEndpoints appends one LocalityLbEndpoints' endpoints. Locality
// and priority may follow the endpoints on the wire: they are set on the
// group at the end.
func (d *claDecoder) localityEndpoints(b []byte) bool {
	start := len(d.eps)
	var loc mesh.Locality
	var prio uint32
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType: // locality
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !d.locality(v, &loc) {
				return false
			}
			b = b[n:]
		case num == 2 && typ == protowire.BytesType: // lb_endpoints
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !d.lbEndpoint(v) {
				return false
			}
			b = b[n:]
		case num == 3 && typ == protowire.BytesType: // load_balancing_weight, unused
			v, n := protowire.ConsumeBytes(b)
			var w uint32
			if n < 0 || !uint32Value(v, &w) {
				return false
			}
			b = b[n:]
		case num == 5 && typ == protowire.VarintType: // priority
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			prio = uint32(v)
			b = b[n:]
		default:
			return false
		}
	}
	if prio > 128 {
		return false // translateEndpoints says why
	}
	for i := start; i < len(d.eps); i++ {
		d.eps[i].Locality, d.eps[i].Priority = loc, prio
	}
	return true
}

func (d *claDecoder) locality(b []byte, loc *mesh.Locality) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || !utf8.Valid(v) {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			loc.Region = d.intern(v)
		case 2:
			loc.Zone = d.intern(v)
		case 3:
			loc.Subzone = d.intern(v)
		default:
			return false
		}
	}
	return true
}

// lbEndpoint is what one LbEndpoint contributes, merged over repeated
// fields as proto.Unmarshal merges them.
type lbEndpoint struct {
	socket   bool // endpoint.address.socket_address present
	protocol int32
	addr     []byte
	port     uint32
	health   int32
	weight   uint32
	workload string
}

func (d *claDecoder) lbEndpoint(b []byte) bool {
	var e lbEndpoint
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType: // endpoint
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !e.endpoint(v) {
				return false
			}
			b = b[n:]
		case num == 2 && typ == protowire.VarintType: // health_status
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			e.health = int32(v)
			b = b[n:]
		case num == 3 && typ == protowire.BytesType: // metadata
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !e.metadata(v) {
				return false
			}
			b = b[n:]
		case num == 4 && typ == protowire.BytesType: // load_balancing_weight
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !uint32Value(v, &e.weight) {
				return false
			}
			b = b[n:]
		default:
			return false
		}
	}
	if !e.socket || e.protocol != int32(corev3.SocketAddress_TCP) {
		return true // skipped, as translateEndpoints does
	}
	ip, err := netip.ParseAddr(string(e.addr))
	if err != nil || e.port == 0 || e.port > math.MaxUint16 {
		return false
	}
	ep := mesh.Endpoint{
		Addr:    netip.AddrPortFrom(ip.Unmap(), uint16(e.port)),
		Weight:  e.weight,
		Health:  health(corev3.HealthStatus(e.health)),
		Network: d.network,
	}
	setWorkload(&ep, e.workload, d.sharedLabels)
	d.eps = append(d.eps, ep)
	return true
}

// endpoint reads Endpoint{address: Address{socket_address}}.
func (e *lbEndpoint) endpoint(b []byte) bool {
	return onlyField(b, 1, func(v []byte) bool { // address
		return onlyField(v, 1, func(v []byte) bool { // socket_address
			e.socket = true
			return e.socketAddress(v)
		})
	})
}

func (e *lbEndpoint) socketAddress(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType: // protocol
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			e.protocol = int32(v)
			b = b[n:]
		case num == 2 && typ == protowire.BytesType: // address
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) {
				return false
			}
			e.addr = v
			b = b[n:]
		case num == 3 && typ == protowire.VarintType: // port_value
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			e.port = uint32(v)
			b = b[n:]
		default:
			return false
		}
	}
	return true
}

// metadata reads Metadata.filter_metadata and keeps istio.workload when it
// is a string; every other entry is only checked.
func (e *lbEndpoint) metadata(b []byte) bool {
	return onlyField(b, 1, func(entry []byte) bool {
		var key []byte
		var w structWorkload
		ok := mapEntry(entry, func(k []byte) { key = k }, func(v []byte) bool { return w.read(v, 0) })
		if !ok {
			return false
		}
		if string(key) == "istio" {
			// A later entry for the same key replaces the earlier one.
			e.workload = w.string()
		}
		return true
	})
}

// structWorkload reads a google.protobuf.Struct, keeping the value of its
// "workload" field.
type structWorkload struct {
	found bool
	val   value
}

func (s *structWorkload) string() string {
	if !s.found || s.val.kind != 3 {
		return ""
	}
	return string(s.val.str)
}

func (s *structWorkload) read(b []byte, depth int) bool {
	if depth > maxStructDepth {
		return false
	}
	return onlyField(b, 1, func(entry []byte) bool { // fields
		var key []byte
		var v value
		if !mapEntry(entry, func(k []byte) { key = k }, func(b []byte) bool { return v.read(b, depth+1) }) {
			return false
		}
		if depth == 0 && string(key) == "workload" {
			s.found, s.val = true, v
		}
		return true
	})
}

// value is a google.protobuf.Value: the kind set last and, for a string,
// the string.
type value struct {
	kind protowire.Number
	str  []byte
}

func (v *value) read(b []byte, depth int) bool {
	if depth > maxStructDepth {
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 4) && typ == protowire.VarintType: // null_value, bool_value
			n = protowire.ConsumeFieldValue(num, typ, b)
		case num == 2 && typ == protowire.Fixed64Type: // number_value
			n = protowire.ConsumeFieldValue(num, typ, b)
		case num == 3 && typ == protowire.BytesType: // string_value
			var s []byte
			s, n = protowire.ConsumeBytes(b)
			if n >= 0 && !utf8.Valid(s) {
				return false
			}
			v.str = s
		case num == 5 && typ == protowire.BytesType: // struct_value
			var s []byte
			s, n = protowire.ConsumeBytes(b)
			var inner structWorkload
			if n >= 0 && !inner.read(s, depth+1) {
				return false
			}
		case num == 6 && typ == protowire.BytesType: // list_value
			var s []byte
			s, n = protowire.ConsumeBytes(b)
			if n >= 0 && !onlyField(s, 1, func(e []byte) bool { var ev value; return ev.read(e, depth+1) }) {
				return false
			}
		default:
			return false
		}
		if n < 0 {
			return false
		}
		v.kind = num
		b = b[n:]
	}
	return true
}

// mapEntry reads a map<string, message> entry: key is called with the
// last key seen (UTF-8 checked), val with each value occurrence in order.
func mapEntry(b []byte, key func([]byte), val func([]byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			if !utf8.Valid(v) {
				return false
			}
			key(v)
		case 2:
			if !val(v) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// onlyField calls f with each occurrence of the length-delimited field num,
// the only field b may hold.
func onlyField(b []byte, num protowire.Number, f func([]byte) bool) bool {
	for len(b) > 0 {
		got, typ, n := protowire.ConsumeTag(b)
		if n < 0 || got != num || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || !f(v) {
			return false
		}
		b = b[n:]
	}
	return true
}

// uint32Value reads a google.protobuf.UInt32Value into *out; an absent
// value leaves *out as it was, as a merge does.
func uint32Value(b []byte, out *uint32) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.VarintType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		*out = uint32(v)
		b = b[n:]
	}
	return true
}

// intern returns b as a string shared by the decoder's endpoints: a full
// push names the same few regions and zones 200,000 times.
func (d *claDecoder) intern(b []byte) string {
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	d.strs[s] = s
	return s
}

// sharedLabels returns one label map per (app, version, cluster) for the
// decoder's endpoints: endpoints of a service share them, and nothing
// writes an endpoint's labels once built.
func (d *claDecoder) sharedLabels(app, version, cluster string) map[string]string {
	k := [3]string{app, version, cluster}
	if m, ok := d.labels[k]; ok {
		return m
	}
	m := newLabels(app, version, cluster)
	d.labels[k] = m
	return m
}

// Cluster fields scanCluster reads.
const (
	clusterName       = 1  // string
	clusterType       = 2  // DiscoveryType, in the cluster_discovery_type oneof
	clusterEDSConfig  = 3  // EdsClusterConfig{service_name = 2}
	clusterCustomType = 38 // CustomClusterType, in the same oneof
	clusterTypeEDS    = 3
	edsConfigSvcName  = 2
)

// scanCluster reads a serialized Cluster's name and, when its discovery
// type is EDS, its EDS service name (the name when unset), skipping every
// other field. It checks nothing else: it serves a guess (edsNamesAhead).
func scanCluster(b []byte) (name, edsName string, ok bool) {
	var eds bool
	var svc []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", false
		}
		b = b[n:]
		switch {
		case num == clusterName && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", "", false
			}
			name, b = string(v), b[n:]
			continue
		case num == clusterType && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", "", false
			}
			eds, b = int32(v) == clusterTypeEDS, b[n:]
			continue
		case num == clusterCustomType && typ == protowire.BytesType:
			eds = false
		case num == clusterEDSConfig && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", "", false
			}
			for len(v) > 0 {
				fnum, ftyp, fn := protowire.ConsumeTag(v)
				if fn < 0 {
					return "", "", false
				}
				v = v[fn:]
				if fnum == edsConfigSvcName && ftyp == protowire.BytesType {
					s, sn := protowire.ConsumeBytes(v)
					if sn < 0 {
						return "", "", false
					}
					svc, v = s, v[sn:]
					continue
				}
				if fn = protowire.ConsumeFieldValue(fnum, ftyp, v); fn < 0 {
					return "", "", false
				}
				v = v[fn:]
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", "", false
		}
		b = b[n:]
	}
	if !eds {
		return name, "", true
	}
	if len(svc) == 0 {
		return name, name, true
	}
	return name, string(svc), true
}
