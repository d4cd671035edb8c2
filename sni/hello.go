package sni

import (
	"errors"
	"fmt"
	"io"
)

// Errors callers branch on. Every error Parse and Read return for bad input
// wraps exactly one of them (or is io.ErrUnexpectedEOF, io.EOF or the
// reader's own error).
var (
	// ErrNotTLS means the first byte is not a TLS handshake record (0x16):
	// an HTTP request from a misplaced L7 load balancer, a health-check
	// probe, an SSLv2 hello, or a first record of another content type.
	ErrNotTLS = errors.New("sni: not a TLS handshake")
	// ErrMalformed means the bytes are TLS records but do not hold exactly
	// one valid ClientHello. The wrapped detail says what was wrong.
	ErrMalformed = errors.New("sni: malformed ClientHello")
	// ErrTooLarge means the ClientHello does not fit the byte cap (Read's
	// buffer) or exceeds crypto/tls's 64 KiB handshake message limit.
	ErrTooLarge = errors.New("sni: ClientHello too large")
)

// TLS wire constants (RFC 8446 section 5.1 and 4, RFC 5246 section 6.2).
const (
	recordHeaderLen     = 5
	recordTypeHandshake = 0x16
	// maxPlaintext is the largest record body a peer may send before
	// encryption starts; crypto/tls and BoringSSL both enforce it.
	maxPlaintext = 1 << 14
	// maxHandshake is crypto/tls's limit on a ClientHello message body.
	maxHandshake        = 1 << 16
	handshakeHeaderLen  = 4
	typeClientHello     = 1
	extServerName       = 0
	extStatusRequest    = 5
	extSupportedGroups  = 10
	extSupportedPoints  = 11
	extSignatureAlgs    = 13
	extALPN             = 16
	extSCT              = 18
	extExtendedMaster   = 23
	extSessionTicket    = 35
	extPreSharedKey     = 41
	extEarlyData        = 42
	extSupportedVersion = 43
	extCookie           = 44
	extPSKModes         = 45
	extSignatureAlgCert = 50
	extKeyShare         = 51
	extQUICParams       = 57
	extECH              = 0xfe0d
	extRenegotiation    = 0xff01
)

// The detailed errors are built once so that rejecting hostile input costs
// no allocation. The ones marked "divergence" reject input crypto/tls would
// accept; doc.go explains why, and the fuzz oracle allows exactly these.
var (
	// Record layer.
	errInterleaved    = malformed("record of another content type inside the ClientHello") // divergence: crypto/tls skips warning alerts
	errRecordVersion  = malformed("record version is not 3.x")                             // divergence: crypto/tls accepts below 0x1000
	errEmptyRecord    = malformed("zero-length handshake record")
	errRecordOverflow = malformed("record longer than 16384 bytes")
	errNotClientHello = malformed("handshake message is not a ClientHello")
	errTrailingHS     = malformed("handshake bytes after the ClientHello in its last record") // divergence: crypto/tls buffers them for later
	errTrailingData   = malformed("bytes after the last ClientHello record")                  // divergence: crypto/tls never reads them
	errHSTooLarge     = fmt.Errorf("%w: handshake message longer than %d bytes", ErrTooLarge, maxHandshake)
	errCapTooSmall    = fmt.Errorf("%w: exceeds the read buffer", ErrTooLarge)

	// ClientHello body (crypto/tls clientHelloMsg.unmarshal).
	errHelloFields    = malformed("truncated version, random, session id, cipher suites or compression methods")
	errExtensionsLen  = malformed("bad extensions length or trailing bytes after extensions")
	errExtensionHdr   = malformed("truncated extension header")
	errDuplicateExt   = malformed("duplicate extension")
	errExtTrailing    = malformed("trailing bytes inside an extension")
	errSNI            = malformed("bad server_name extension")
	errSNIList        = malformed("server_name must hold exactly one host_name entry") // divergence: crypto/tls skips other name types
	errSNIDot         = malformed("server name ends with a dot")
	errALPN           = malformed("bad application_layer_protocol_negotiation extension")
	errStatusRequest  = malformed("bad status_request extension")
	errGroups         = malformed("bad supported_groups extension")
	errPoints         = malformed("bad ec_point_formats extension")
	errSigAlgs        = malformed("bad signature_algorithms extension")
	errRenegotiation  = malformed("bad renegotiation_info extension")
	errVersions       = malformed("bad supported_versions extension")
	errCookie         = malformed("bad cookie extension")
	errKeyShare       = malformed("bad key_share extension")
	errPSKModes       = malformed("bad psk_key_exchange_modes extension")
	errPSK            = malformed("bad pre_shared_key extension")
	errPSKNotLast     = malformed("pre_shared_key is not the last extension")
	errECH            = malformed("bad encrypted_client_hello extension")
	errCipherSuiteLen = malformed("odd cipher suites length")
)

func malformed(detail string) error { return fmt.Errorf("%w: %s", ErrMalformed, detail) }

// ClientHello holds what the gateway routes on. Its slices are views into
// the bytes given to Parse (or the buffer given to Read); they are valid as
// long as those bytes are, and must not be modified.
type ClientHello struct {
	// ServerName is the SNI host_name exactly as sent (not lower-cased),
	// nil when the client sent no server_name extension.
	ServerName []byte
	// ALPN is the raw ProtocolNameList body: a sequence of names, each
	// prefixed by its uint8 length. nil when the client sent no ALPN.
	ALPN []byte
	// Version is the legacy_version field (0x0303 for TLS 1.2 and 1.3
	// clients); the negotiated version is not known to a passthrough proxy.
	Version uint16
}

// ALPNContains reports whether the client offered proto. It does not
// allocate.
func (h *ClientHello) ALPNContains(proto string) bool {
	for a := h.ALPN; len(a) > 0; {
		n := int(a[0])
		if 1+n > len(a) {
			return false
		}
		if string(a[1:1+n]) == proto {
			return true
		}
		a = a[1+n:]
	}
	return false
}

// HasIstioALPN reports whether the client offered any of Istio's mTLS ALPN
// values, allIstioMtlsALPNs in istio/istio pilot/pkg/networking/core
// (SNI-4g). Envoy matches the filter chain on any single overlap.
func (h *ClientHello) HasIstioALPN() bool {
	for a := h.ALPN; len(a) > 0; {
		n := int(a[0])
		if 1+n > len(a) {
			return false
		}
		switch string(a[1 : 1+n]) {
		case "istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2":
			return true
		}
		a = a[1+n:]
	}
	return false
}

// Parse parses data, which must be exactly the TLS plaintext records that
// carry one ClientHello handshake message, reassembled across records. It
// returns io.ErrUnexpectedEOF when data is a valid prefix of such records
// (record headers, handshake header and handshake type are checked as soon
// as their bytes are there; the message body is checked once complete).
//
// Parse is as strict as crypto/tls's clientHelloMsg.unmarshal, and checks
// every extension crypto/tls checks, so a hello Parse accepts reaches a
// crypto/tls server's GetConfigForClient with the same ServerName and ALPN.
// doc.go lists the few places where it is stricter. Parse does not allocate
// unless the server name or the ALPN list is itself split across two
// records (no mainstream client does that); then that field is copied.
func Parse(data []byte) (ClientHello, error) {
	var f framer
	off := 0
	for {
		rest := data[off:]
		bodyLen, err := f.header(rest)
		if err != nil {
			return ClientHello{}, err
		}
		if bodyLen < 0 {
			return ClientHello{}, io.ErrUnexpectedEOF
		}
		body := rest[recordHeaderLen:]
		if len(body) < bodyLen {
			// Check what is there so that garbage is reported as
			// such, not as "need more bytes".
			if _, err := f.add(body); err != nil {
				return ClientHello{}, err
			}
			return ClientHello{}, io.ErrUnexpectedEOF
		}
		done, err := f.add(body[:bodyLen])
		if err != nil {
			return ClientHello{}, err
		}
		off += recordHeaderLen + bodyLen
		if done {
			break
		}
	}
	if off != len(data) {
		return ClientHello{}, errTrailingData
	}
	c := cursor{
		data: data,
		pos:  recordHeaderLen,
		end:  recordHeaderLen + recordLen(data),
		n:    handshakeHeaderLen + f.msgLen,
	}
	c.skip(handshakeHeaderLen)
	return parseHello(&c)
}

// framer follows the record layer: it checks each record header and counts
// handshake bytes until the ClientHello message is complete. Parse and Read
// share it so that they agree on every framing decision.
type framer struct {
	records int
	got     int // handshake bytes seen so far
	hs      [handshakeHeaderLen]byte
	msgLen  int // valid once got >= handshakeHeaderLen
}

// header checks the record header at the start of b, or as much of it as b
// holds. It returns the body length, or -1 when the header is incomplete.
func (f *framer) header(b []byte) (int, error) {
	if len(b) >= 1 && b[0] != recordTypeHandshake {
		if f.records == 0 {
			return 0, ErrNotTLS
		}
		return 0, errInterleaved
	}
	// RFC 8446 5.1: legacy_record_version is 0x0301 or 0x0303 in practice;
	// BoringSSL, the sidecar's TLS stack, insists on major version 3.
	if len(b) >= 2 && b[1] != 3 {
		return 0, errRecordVersion
	}
	if len(b) < recordHeaderLen {
		return -1, nil
	}
	n := recordLen(b)
	switch {
	case n == 0:
		return 0, errEmptyRecord
	case n > maxPlaintext:
		return 0, errRecordOverflow
	case f.got >= handshakeHeaderLen && n > f.remaining():
		// Known from the header alone: the record runs past the end of
		// the message, so no continuation of these bytes can be valid.
		return 0, errTrailingHS
	}
	f.records++
	return n, nil
}

// add accounts for (a prefix of) a record body and reports whether the
// ClientHello message ends exactly with it.
func (f *framer) add(body []byte) (done bool, err error) {
	if f.got < handshakeHeaderLen {
		k := copy(f.hs[f.got:], body)
		if f.got+k >= 1 && f.hs[0] != typeClientHello {
			return false, errNotClientHello
		}
		if f.got+k == handshakeHeaderLen {
			f.msgLen = int(f.hs[1])<<16 | int(f.hs[2])<<8 | int(f.hs[3])
			if f.msgLen > maxHandshake {
				return false, errHSTooLarge
			}
		}
	}
	f.got += len(body)
	if f.got < handshakeHeaderLen {
		return false, nil
	}
	total := handshakeHeaderLen + f.msgLen
	if f.got > total {
		return false, errTrailingHS
	}
	return f.got == total, nil
}

// remaining is the number of handshake bytes still missing, or -1 while
// the handshake header is incomplete.
func (f *framer) remaining() int {
	if f.got < handshakeHeaderLen {
		return -1
	}
	return handshakeHeaderLen + f.msgLen - f.got
}

func recordLen(hdr []byte) int { return int(hdr[3])<<8 | int(hdr[4]) }

// cursor reads a window of the handshake message, which may be spread over
// several records: when it reaches the end of a record body it steps over
// the next record header. Parse has validated the framing before any cursor
// exists, so stepping never leaves data.
type cursor struct {
	data []byte // all records
	pos  int    // next byte
	end  int    // end of the record body holding pos
	n    int    // bytes left in this window
}

// advance moves to the next record body once the current one is used up.
// Callers only call it while c.n > 0, so a next record exists.
func (c *cursor) advance() {
	for c.pos == c.end {
		c.pos = c.end + recordHeaderLen
		c.end = c.pos + recordLen(c.data[c.end:])
	}
}

func (c *cursor) u8() (uint8, bool) {
	if c.n < 1 {
		return 0, false
	}
	c.advance()
	v := c.data[c.pos]
	c.pos++
	c.n--
	return v, true
}

func (c *cursor) u16() (uint16, bool) {
	a, ok1 := c.u8()
	b, ok2 := c.u8()
	return uint16(a)<<8 | uint16(b), ok1 && ok2
}

func (c *cursor) skip(k int) bool {
	if k > c.n {
		return false
	}
	c.n -= k
	for k > 0 {
		c.advance()
		step := min(k, c.end-c.pos)
		c.pos += step
		k -= step
	}
	return true
}

// sub returns the next k bytes as their own window and skips them.
func (c *cursor) sub(k int) (cursor, bool) {
	w := *c
	w.n = k
	return w, c.skip(k)
}

func (c *cursor) prefixed8() (cursor, bool) {
	k, ok := c.u8()
	if !ok {
		return cursor{}, false
	}
	return c.sub(int(k))
}

func (c *cursor) prefixed16() (cursor, bool) {
	k, ok := c.u16()
	if !ok {
		return cursor{}, false
	}
	return c.sub(int(k))
}

// bytes returns the window's bytes: a view when they sit in one record, a
// copy otherwise. The view's capacity is clipped so that appending to it
// cannot overwrite the records.
func (c cursor) bytes() []byte {
	if c.n == 0 {
		return nil
	}
	c.advance()
	if c.pos+c.n <= c.end {
		return c.data[c.pos : c.pos+c.n : c.pos+c.n]
	}
	out := make([]byte, 0, c.n)
	for c.n > 0 {
		c.advance()
		step := min(c.n, c.end-c.pos)
		out = append(out, c.data[c.pos:c.pos+step]...)
		c.pos += step
		c.n -= step
	}
	return out
}

// evenNonEmpty16 reads a uint16-prefixed, non-empty list of uint16 values,
// the shape of supported_groups and signature_algorithms.
func evenNonEmpty16(c *cursor) bool {
	l, ok := c.prefixed16()
	return ok && l.n > 0 && l.n%2 == 0
}

// parseHello mirrors crypto/tls clientHelloMsg.unmarshal (Go 1.26) on the
// message body, without building anything but the fields we route on.
func parseHello(c *cursor) (ClientHello, error) {
	var h ClientHello
	var ok bool
	if h.Version, ok = c.u16(); !ok || !c.skip(32) {
		return ClientHello{}, errHelloFields
	}
	if _, ok := c.prefixed8(); !ok { // legacy_session_id
		return ClientHello{}, errHelloFields
	}
	suites, ok := c.prefixed16()
	if !ok {
		return ClientHello{}, errHelloFields
	}
	if suites.n%2 != 0 {
		return ClientHello{}, errCipherSuiteLen
	}
	if _, ok := c.prefixed8(); !ok { // legacy_compression_methods
		return ClientHello{}, errHelloFields
	}
	if c.n == 0 {
		return h, nil // extensions are optional
	}
	exts, ok := c.prefixed16()
	if !ok || c.n != 0 {
		return ClientHello{}, errExtensionsLen
	}
	all := exts

	// Duplicate check without a map: real hellos carry fewer than 32
	// extensions; a hostile one with more gets one linear bitmap pass.
	var seen [32]uint16
	nseen, overflow := 0, false
	for exts.n > 0 {
		typ, ok := exts.u16()
		if !ok {
			return ClientHello{}, errExtensionHdr
		}
		d, ok := exts.prefixed16()
		if !ok {
			return ClientHello{}, errExtensionHdr
		}
		if nseen < len(seen) {
			for _, t := range seen[:nseen] {
				if t == typ {
					return ClientHello{}, errDuplicateExt
				}
			}
			seen[nseen] = typ
			nseen++
		} else {
			overflow = true
		}
		if err := parseExtension(&h, typ, &d, exts.n == 0); err != nil {
			return ClientHello{}, err
		}
		if d.n != 0 {
			return ClientHello{}, errExtTrailing
		}
	}
	if overflow && hasDuplicate(all) {
		return ClientHello{}, errDuplicateExt
	}
	return h, nil
}

// parseExtension checks one extension body the way crypto/tls does and
// consumes it; the caller rejects any bytes left over. last reports whether
// no extension follows.
func parseExtension(h *ClientHello, typ uint16, d *cursor, last bool) error {
	switch typ {
	case extServerName:
		// RFC 6066 section 3. crypto/tls skips entries of other name
		// types; BoringSSL (the destination sidecar) accepts exactly one
		// host_name entry, and so do we.
		list, ok := d.prefixed16()
		if !ok || list.n == 0 {
			return errSNI
		}
		nameType, ok := list.u8()
		if !ok {
			return errSNI
		}
		name, ok := list.prefixed16()
		if !ok || name.n == 0 {
			return errSNI
		}
		if nameType != 0 || list.n != 0 {
			return errSNIList
		}
		h.ServerName = name.bytes()
		if h.ServerName[len(h.ServerName)-1] == '.' {
			return errSNIDot
		}
	case extStatusRequest:
		if _, ok := d.u8(); !ok {
			return errStatusRequest
		}
		if _, ok := d.prefixed16(); !ok {
			return errStatusRequest
		}
		if _, ok := d.prefixed16(); !ok {
			return errStatusRequest
		}
	case extSupportedGroups:
		if !evenNonEmpty16(d) {
			return errGroups
		}
	case extSupportedPoints:
		if l, ok := d.prefixed8(); !ok || l.n == 0 {
			return errPoints
		}
	case extSessionTicket, extQUICParams, extECH:
		w, _ := d.sub(d.n)
		if typ == extECH && w.n > 0 && !validECH(w) {
			return errECH
		}
	case extSignatureAlgs, extSignatureAlgCert:
		if !evenNonEmpty16(d) {
			return errSigAlgs
		}
	case extRenegotiation:
		if _, ok := d.prefixed8(); !ok {
			return errRenegotiation
		}
	case extExtendedMaster, extSCT, extEarlyData:
		// Empty bodies; the caller rejects anything else.
	case extALPN:
		// RFC 7301 section 3.1.
		list, ok := d.prefixed16()
		if !ok || list.n == 0 {
			return errALPN
		}
		raw := list
		for list.n > 0 {
			p, ok := list.prefixed8()
			if !ok || p.n == 0 {
				return errALPN
			}
		}
		h.ALPN = raw.bytes()
	case extSupportedVersion:
		l, ok := d.prefixed8()
		if !ok || l.n == 0 || l.n%2 != 0 {
			return errVersions
		}
	case extCookie:
		if l, ok := d.prefixed16(); !ok || l.n == 0 {
			return errCookie
		}
	case extKeyShare:
		shares, ok := d.prefixed16()
		if !ok {
			return errKeyShare
		}
		for shares.n > 0 {
			if _, ok := shares.u16(); !ok {
				return errKeyShare
			}
			if k, ok := shares.prefixed16(); !ok || k.n == 0 {
				return errKeyShare
			}
		}
	case extPSKModes:
		if _, ok := d.prefixed8(); !ok {
			return errPSKModes
		}
	case extPreSharedKey:
		if !last {
			return errPSKNotLast
		}
		ids, ok := d.prefixed16()
		if !ok || ids.n == 0 {
			return errPSK
		}
		for ids.n > 0 {
			if l, ok := ids.prefixed16(); !ok || l.n == 0 || !ids.skip(4) {
				return errPSK
			}
		}
		binders, ok := d.prefixed16()
		if !ok || binders.n == 0 {
			return errPSK
		}
		for binders.n > 0 {
			if b, ok := binders.prefixed8(); !ok || b.n == 0 {
				return errPSK
			}
		}
	default:
		d.skip(d.n) // unknown extensions are ignored, as RFC 8446 requires
	}
	return nil
}

// validECH mirrors crypto/tls parseECHExt, which a crypto/tls server runs
// on a non-empty encrypted_client_hello extension before GetConfigForClient
// even when it has no ECH keys.
func validECH(w cursor) bool {
	typ, _ := w.u8()
	switch typ {
	case 1: // inner
		return w.n == 0
	case 0: // outer: cipher suite, config id, enc, payload
		if !w.skip(5) {
			return false
		}
		if _, ok := w.prefixed16(); !ok {
			return false
		}
		_, ok := w.prefixed16()
		return ok // crypto/tls ignores bytes after the payload
	default:
		return false
	}
}

// hasDuplicate walks all extension headers with a 65536-bit set. It is only
// used for hellos with more extensions than parseHello tracks inline, so its
// 8 KiB of stack is not paid on the common path.
//
//go:noinline
func hasDuplicate(exts cursor) bool {
	var set [1 << 16 / 64]uint64
	for exts.n > 0 {
		typ, _ := exts.u16()
		if set[typ/64]&(1<<(typ%64)) != 0 {
			return true
		}
		set[typ/64] |= 1 << (typ % 64)
		if _, ok := exts.prefixed16(); !ok {
			return false // already validated by parseHello
		}
	}
	return false
}
