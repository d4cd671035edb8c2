// Package sni reads the TLS ClientHello that opens every connection to the
// AUTO_PASSTHROUGH listener, and turns its server name into a route key.
//
// It does three things, each a pure function over bytes or strings:
//
//   - Read and Parse take the ClientHello off the wire (or a byte slice):
//     one or more TLS plaintext records, reassembled, checked as strictly as
//     crypto/tls checks them, with zero allocations. Read never consumes a
//     byte past the ClientHello, so the rest of the stream can be handed to
//     splice(2) or sockmap untouched.
//   - ParseName parses Istio's outbound_.PORT_.SUBSET_.HOST names exactly like
//     Istio's model.ParseSubsetKey (SEMANTICS.md SNI-1..3).
//   - Rewriter applies the legacy tcp_cluster_rewrite rules (RW-1..5) to the
//     name before the route lookup.
//
// What it must not do: know about sockets beyond an io.Reader, deadlines,
// the mesh snapshot or load balancing. It decides what a name is, never
// whether the gateway may route it: the allowlist check (SNI-4) belongs to
// the proxy and runs on the rewritten name (SEC-2). It imports only the
// standard library.
//
// # Typical use
//
//	buf := make([]byte, 64<<10) // the byte cap (UNK-2), pooled by the caller
//	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
//	raw, hello, err := sni.Read(conn, buf)
//	if err != nil { ... } // errors.Is: ErrNotTLS, ErrMalformed, ErrTooLarge, io.ErrUnexpectedEOF
//	name, err := sni.ParseName(rw.Rewrite(string(hello.ServerName)))
//	if err != nil || !name.Istio || !hello.HasIstioALPN() { ... } // unknown SNI
//	// look up mesh.Key{Host: name.Host, Port: name.Port, Subset: name.Subset},
//	// dial, write raw, then splice.
//
// # Strictness and crypto/tls
//
// Parse mirrors crypto/tls's clientHelloMsg.unmarshal (Go 1.26) field by
// field, including the per-extension checks (duplicate extensions, trailing
// bytes, empty lists, pre_shared_key last, the ECH extension header that a
// crypto/tls server parses before GetConfigForClient). So a hello Parse
// accepts reaches a crypto/tls server's GetConfigForClient with the same
// ServerName and ALPN list; the fuzz test FuzzParse checks this both ways.
// Deliberate differences, all rejections of things real clients never send:
//
//   - Only handshake records: crypto/tls skips warning alerts and accepts an
//     alert as the first record; here those are ErrNotTLS or ErrMalformed.
//   - The record version must be 3.x (BoringSSL, the destination sidecar's
//     TLS stack, requires it); crypto/tls accepts anything below 0x1000.
//   - server_name must hold exactly one entry, of type host_name, as
//     BoringSSL requires; crypto/tls skips entries of other name types.
//   - Nothing may follow the ClientHello: not in its last record (crypto/tls
//     keeps such bytes for the next handshake message) and, for Parse, not
//     after its last record (crypto/tls never reads them). Read stops at the
//     last record, so this only concerns callers of Parse.
//
// Like crypto/tls, Parse accepts server names of any length and characters
// except a trailing dot; ParseName applies the DNS rules (SNI-2).
//
// Zero allocations: ClientHello fields are views into the parsed bytes. If a
// client split the server name or the ALPN list itself across two records,
// that one field is copied (crypto/tls and Chrome put the whole ClientHello
// in one record, and TCP segmentation does not matter here).
//
// # Rewrite rules: RE2, not ECMAScript (RW-3)
//
// Envoy's tcp_cluster_rewrite used std::regex_replace, the ECMAScript
// grammar. Go's regexp is RE2, which runs in linear time on hostile input
// but differs:
//
//   - No look-ahead or look-behind ((?=…), (?!…), (?<=…), (?<!…)) and no
//     back-references (\1) in patterns; NewRewriter refuses them.
//   - Replacements use Regexp.Expand syntax: $1 or ${1}, ${name} for (?P<name>…),
//     $$ for a literal $, ${0} for the whole match. ECMAScript's $&, $` and $'
//     do not exist; NewRewriter refuses them instead of inserting them
//     literally.
//   - $1x means the group named "1x" in Go (empty), not group 1 then "x":
//     write ${1}x. NewRewriter refuses references to groups the pattern
//     does not have.
//   - \d, \w and \s are ASCII-only in RE2; ECMAScript's \s also matches
//     Unicode spaces. Names are ASCII, so this rarely matters.
//   - Every rule replaces all non-overlapping matches, like std::regex_replace
//     with default flags; matches are leftmost-first (Perl-like) in both.
//
// Names are lower-cased before the rules run, so write patterns in lower
// case. An empty pattern is a rule that does nothing (Envoy parity).
package sni
