package sni

import (
	"fmt"
	"io"
)

// Read reads exactly one ClientHello from r into buf and parses it. raw is
// the prefix of buf holding the records read, to be forwarded unchanged.
//
// Read reads each record header (5 bytes) and then each record body with
// io.ReadFull and exact lengths, so it never consumes a byte past the last
// record of the ClientHello: whatever the client sent next stays in the
// socket for the forwarder (splice(2) and sockmap depend on this). len(buf)
// is the byte cap: a ClientHello that cannot fit returns an error wrapping
// ErrTooLarge as soon as its length shows it, before the rest is read.
//
// When the first byte is not 0x16 Read returns ErrNotTLS after reading at
// most the 5-byte header. A stream that ends early yields io.EOF (nothing
// read) or io.ErrUnexpectedEOF, wrapped; a reader error is returned wrapped.
// Read allocates only on error paths, and where Parse does (a server name
// or ALPN list cut by a record boundary).
func Read(r io.Reader, buf []byte) (raw []byte, h ClientHello, err error) {
	var f framer
	n := 0
	for {
		// The smallest next read is a header plus the rest of the
		// message in one record: check the cap before waiting for it.
		need := recordHeaderLen + 1
		if rem := f.remaining(); rem > 0 {
			need = recordHeaderLen + rem
		}
		if need > len(buf)-n {
			if n == 0 && len(buf) > 0 {
				// A cap below one header cannot even tell TLS
				// from HTTP; still honour ErrNotTLS if possible.
				k, _ := io.ReadFull(r, buf[:1])
				if k == 1 && buf[0] != recordTypeHandshake {
					return buf[:1], ClientHello{}, ErrNotTLS
				}
				return buf[:k], ClientHello{}, errCapTooSmall
			}
			return buf[:n], ClientHello{}, errCapTooSmall
		}

		k, err := io.ReadFull(r, buf[n:n+recordHeaderLen])
		hdr := buf[n : n+k]
		bodyLen, herr := f.header(hdr)
		n += k
		if herr != nil {
			return buf[:n], ClientHello{}, herr
		}
		if err != nil {
			return buf[:n], ClientHello{}, readErr("record header", n, err)
		}
		if bodyLen > len(buf)-n {
			return buf[:n], ClientHello{}, errCapTooSmall
		}

		k, err = io.ReadFull(r, buf[n:n+bodyLen])
		body := buf[n : n+k]
		n += k
		done, ferr := f.add(body)
		if ferr != nil {
			return buf[:n], ClientHello{}, ferr
		}
		if err != nil {
			return buf[:n], ClientHello{}, readErr("record body", n, err)
		}
		if done {
			h, err := Parse(buf[:n])
			return buf[:n], h, err
		}
	}
}

// readErr wraps a read error; a clean EOF in the middle of the ClientHello
// is unexpected.
func readErr(what string, n int, err error) error {
	if err == io.EOF && n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("sni: read %s: %w", what, err)
}
