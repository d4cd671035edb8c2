package sni

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrBadName is wrapped by every error ParseName returns.
var ErrBadName = errors.New("sni: bad server name")

// MaxNameLen is the longest server name accepted, in bytes (RFC 6066 and
// BoringSSL's TLSEXT_MAXLEN_host_name; SNI-2).
const MaxNameLen = 255

const (
	outboundPrefix = "outbound_."
	inboundPrefix  = "inbound_."
	istioSep       = "_."
	maxLabelLen    = 63
)

var (
	errNameEmpty    = badName("empty")
	errNameLong     = badName("longer than 255 bytes")
	errNameChar     = badName("character outside a-z, 0-9, '-', '_', '.'")
	errNameLabel    = badName("empty label (leading, trailing or double dot)")
	errNameLabelLen = badName("label longer than 63 bytes")
	errNameIP       = badName("IP literal")
	errNameInbound  = badName("inbound_ names are not routable")
	errNameNoPort   = badName("outbound_ name without port")
	errNamePort     = badName("port is not a canonical decimal in 1..65535")
	errNameNoSubset = badName("outbound_ name without subset separator")
	errNameNoHost   = badName("outbound_ name without host")
	errNameHostSep  = badName(`host contains "_."`)
)

func badName(detail string) error { return fmt.Errorf("%w: %s", ErrBadName, detail) }

// Name is a server name as the gateway routes it.
type Name struct {
	// Istio is true for Istio's DNS-SRV style cluster names,
	// outbound_.PORT_.SUBSET_.HOST (SNI-1).
	Istio bool
	// Port is the service port of an Istio name; 0 otherwise.
	Port uint16
	// Subset is the DestinationRule subset of an Istio name; "" for the
	// whole service and for plain names.
	Subset string
	// Host is the service host name of an Istio name, or the whole name
	// otherwise; always lower case.
	Host string
}

// ParseName lower-cases s once (SNI-2) and parses it. Names starting with
// "outbound_." are parsed exactly like Istio's model.ParseSubsetKey: the
// port ends at the first "_.", the subset at the next "_.", the rest is the
// host, which may contain underscores but not "_." (Istio returns no host
// then). The port must be canonical decimal (no sign, no leading zero):
// Envoy matches server_names by exact string, so "outbound_.080_..." never
// reached a cluster. Names starting with "inbound_." are refused (SNI-3);
// pipe forms ("outbound|9080||host") fail the character check. Any other
// name made of DNS labels (letters, digits, '-', '_') is a plain host with
// Istio false. Empty names, names over 255 bytes and IP literals are
// refused. Errors wrap ErrBadName. ParseName allocates only when s has
// upper-case letters.
func ParseName(s string) (Name, error) {
	if s == "" {
		return Name{}, errNameEmpty
	}
	if len(s) > MaxNameLen {
		return Name{}, errNameLong
	}
	s, err := lowerName(s)
	if err != nil {
		return Name{}, err
	}
	if rest, ok := strings.CutPrefix(s, outboundPrefix); ok {
		return parseIstio(rest)
	}
	if strings.HasPrefix(s, inboundPrefix) {
		return Name{}, errNameInbound
	}
	if err := checkHost(s); err != nil {
		return Name{}, err
	}
	return Name{Host: s}, nil
}

func parseIstio(s string) (Name, error) {
	p, s, ok := strings.Cut(s, istioSep)
	if !ok {
		return Name{}, errNameNoPort
	}
	port, ok := parsePort(p)
	if !ok {
		return Name{}, errNamePort
	}
	subset, host, ok := strings.Cut(s, istioSep)
	if !ok {
		return Name{}, errNameNoSubset
	}
	if host == "" {
		return Name{}, errNameNoHost
	}
	if strings.Contains(host, istioSep) {
		return Name{}, errNameHostSep
	}
	if err := checkHost(host); err != nil {
		return Name{}, err
	}
	return Name{Istio: true, Port: port, Subset: subset, Host: host}, nil
}

func parsePort(p string) (uint16, bool) {
	if p == "" || len(p) > 5 || p[0] == '0' {
		return 0, false
	}
	v := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return 0, false
		}
		v = v*10 + int(p[i]-'0')
	}
	if v > 65535 {
		return 0, false
	}
	return uint16(v), true
}

// lowerName checks the character set and label structure of the whole name
// and returns it in lower case, allocating only if it had upper case.
func lowerName(s string) (string, error) {
	upper := false
	prev := byte('.')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '.':
			if prev == '.' {
				return "", errNameLabel
			}
		default:
			return "", errNameChar
		}
		prev = c
	}
	if prev == '.' {
		return "", errNameLabel
	}
	if !upper {
		return s, nil
	}
	b := make([]byte, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return string(b), nil
}

// checkHost applies the rules for a host part: labels of at most 63 bytes
// (RFC 1035) and no IP literal (RFC 6066 forbids them in SNI). Characters
// and empty labels were checked by lowerName.
func checkHost(h string) error {
	label, ipv4ish := 0, true
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c == '.' {
			label = 0
			continue
		}
		if label++; label > maxLabelLen {
			return errNameLabelLen
		}
		if c < '0' || c > '9' {
			ipv4ish = false
		}
	}
	// Only digits and dots can spell an IPv4 literal here (':' for IPv6
	// was refused already); skipping the parse keeps the common path free
	// of the error allocation netip would make.
	if ipv4ish {
		if _, err := netip.ParseAddr(h); err == nil {
			return errNameIP
		}
	}
	return nil
}
