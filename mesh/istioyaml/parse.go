package istioyaml

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"go.yaml.in/yaml/v3"
)

// Decoding is the bulk of a load: yaml.v3 reads about 13 MB/s per core.
// So inputs are decoded on every core (each file, and each part of a large
// file cut at document markers, is a unit of work) and merge replays the
// results in file and document order, so that messages, duplicate
// detection and creation order are those of a sequential read. Within a
// part, fastDecoder reads the usual ServiceEntries and WorkloadEntries
// about eight times faster, and yaml.v3 the other documents.

// partSize is the size above which a file is decoded in parts of about
// this many bytes, cut at document boundaries.
const partSize = 128 << 10

// decodeAll decodes every input on up to GOMAXPROCS goroutines. After ctx
// is done it stops early, leaving the rest of the results empty: the caller
// reports ctx's error instead.
func decodeAll(ctx context.Context, inputs []input, size int) []parsedFile {
	// nil: the file is not split-safe and is decoded whole by yaml.v3.
	plans := make([][]part, len(inputs))
	parallel(len(inputs), func() func(int) {
		return func(i int) {
			if splitSafe(inputs[i].data) {
				plans[i] = splitParts(inputs[i].data, size)
			}
		}
	})
	type unit struct {
		file int
		fast bool
		part part
	}
	var units []unit
	for i, ps := range plans {
		if ps == nil {
			units = append(units, unit{file: i, part: part{data: inputs[i].data}})
		}
		for _, p := range ps {
			units = append(units, unit{file: i, fast: true, part: p})
		}
	}
	decoded := make([]parsedFile, len(units))
	clean := make([]bool, len(units))
	parallel(len(units), func() func(int) {
		var fd fastDecoder
		return func(i int) {
			if ctx.Err() != nil {
				return
			}
			u := units[i]
			if !u.fast {
				decoded[i], clean[i] = decodeFile(u.part.data), true
				return
			}
			decoded[i], clean[i] = fd.decodePart(u.part.data, u.part.line)
		}
	})

	out := make([]parsedFile, len(inputs))
	i := 0
	for f, ps := range plans {
		n := max(1, len(ps))
		us := decoded[i : i+n]
		ok := !slices.Contains(clean[i:i+n], false)
		i += n
		switch {
		case ctx.Err() != nil:
		case !ok:
			// A document failed: decode the file whole, for messages
			// with the file's line numbers and a sequential read's stops.
			out[f] = decodeFile(inputs[f].data)
		case n == 1:
			out[f] = us[0]
		default:
			l := 0
			for _, u := range us {
				l += len(u.docs)
			}
			out[f].docs = make([]parsedDoc, 0, l)
			for _, u := range us {
				out[f].docs = append(out[f].docs, u.docs...)
			}
		}
	}
	return out
}

// parallel calls work(i) for every i in [0, n) on up to GOMAXPROCS
// goroutines, each with the work function newWorker made for it (which may
// hold buffers of its own).
func parallel(n int, newWorker func() func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		work := newWorker()
		for i := range n {
			work(i)
		}
		return
	}
	batch := 1
	if n >= 4096 {
		batch = 256 // few atomic operations for many small items
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			work := newWorker()
			for {
				i := int(next.Add(int64(batch))) - batch
				if i >= n {
					return
				}
				for j := i; j < min(i+batch, n); j++ {
					work(j)
				}
			}
		})
	}
	wg.Wait()
}

// decodeFile decodes one whole input.
func decodeFile(data []byte) parsedFile {
	if bytes.IndexByte(data, '!') >= 0 || bytes.IndexByte(data, '&') >= 0 {
		// Tags can make a document's root null-tagged yet not empty,
		// which a one-pass decode cannot see, and anchors count towards
		// yaml.v3's alias limit differently in one pass; both are rare
		// in mesh config, so such files are read as they always were.
		return decodeTwoPass(data)
	}
	pf, _ := decodeOnePass(data, 0)
	return pf
}

// docDecoder decodes one document in a single parse. yaml.v3 passes an
// old-style unmarshaler a function that decodes the same node with the
// Decoder's settings, KnownFields included: the header is read from the
// node and the target then decoded strictly, where a yaml.Node (whose
// Decode ignores KnownFields) would need a second parse.
type docDecoder struct {
	called  bool
	lineOff int // lines before the part being decoded
	doc     parsedDoc
}

func (d *docDecoder) UnmarshalYAML(unmarshal func(any) error) error {
	d.called = true
	var root nodeOf
	if err := unmarshal(&root); err != nil {
		return err
	}
	d.doc.h = headerOfRoot(root.n)
	d.doc.h.line += d.lineOff
	target := d.doc.target()
	if target == nil {
		return nil
	}
	if err := unmarshal(target); err != nil {
		return err
	}
	d.doc.val = target
	return nil
}

// nodeOf captures the node it is decoded from (the unmarshal function
// passes a *yaml.Node as a struct to fill, not as the node).
type nodeOf struct{ n *yaml.Node }

func (o *nodeOf) UnmarshalYAML(n *yaml.Node) error {
	o.n = n
	return nil
}

// decodeOnePass decodes every document of data, each parsed once; lineOff
// is the number of lines before data in its file. clean reports that no
// document failed to decode: only then are data's line numbers in no
// message but the headers'.
func decodeOnePass(data []byte, lineOff int) (pf parsedFile, clean bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	clean = true
	stopped := false
	for {
		if stopped {
			// A sequential read stops at the first document that is not
			// even wrongly typed, but a syntax error further on still
			// makes the whole file unreadable.
			var skip yaml.Node
			err := dec.Decode(&skip)
			if errors.Is(err, io.EOF) {
				return pf, false
			}
			if err != nil {
				return parsedFile{fatal: err}, false
			}
			continue
		}
		d := docDecoder{lineOff: lineOff}
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return pf, clean
		}
		if err != nil && !d.called {
			// Unmarshaling never began: the parse failed.
			return parsedFile{fatal: err}, false
		}
		if !d.called {
			d.doc.h = header{empty: true}
		}
		if err != nil {
			clean = false
			stopped = !d.doc.decodeErr(err)
		}
		pf.docs = append(pf.docs, d.doc)
	}
}

// decodeTwoPass splits the stream into documents and reads each one's
// header, then decodes the stream again, strictly, into the type each
// header calls for.
func decodeTwoPass(data []byte) parsedFile {
	var heads []header
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return parsedFile{fatal: err}
		}
		heads = append(heads, headerOf(&n))
	}
	var pf parsedFile
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	for _, h := range heads {
		d := parsedDoc{h: h}
		target := d.target()
		if target == nil {
			target = &yaml.Node{}
		} else {
			d.val = target
		}
		err := strict.Decode(target)
		if err != nil && !d.decodeErr(err) {
			pf.docs = append(pf.docs, d)
			return pf
		}
		pf.docs = append(pf.docs, d)
	}
	return pf
}

// part is a piece of a file: the whole file, or a piece that starts with
// a document marker.
type part struct {
	data []byte
	line int // lines before it
}

// splitSafe reports whether data can be cut at its document markers
// ("---" at the start of a line, followed by a blank or a line end) into
// pieces that decode, each alone, to exactly the documents the whole file
// has there. The scanner reads such a marker as one wherever it is: it
// ends a plain or block scalar, and is an error inside a quoted scalar or
// a flow collection (which makes the caller decode the file whole). Not
// safe: anything that changes where a line starts or what precedes a
// document (line breaks other than LF and CRLF, NUL, a UTF-16 byte order
// mark, "%" directives, "..." document ends), tags and anchors.
func splitSafe(data []byte) bool {
	if len(data) == 0 {
		return true
	}
	return bytes.IndexByte(data, 0) < 0 &&
		!bytes.HasPrefix(data, []byte{0xfe, 0xff}) && !bytes.HasPrefix(data, []byte{0xff, 0xfe}) &&
		bytes.IndexByte(data, '!') < 0 && bytes.IndexByte(data, '&') < 0 &&
		data[0] != '%' && !bytes.Contains(data, []byte("\n%")) &&
		!bytes.Contains(data, []byte("\xc2\x85")) && !bytes.Contains(data, []byte("\xe2\x80\xa8")) && !bytes.Contains(data, []byte("\xe2\x80\xa9")) &&
		!isMarker(data, "...") && !hasDocEnd(data) && !hasLoneCR(data)
}

// hasDocEnd reports whether a line of data after the first is a "..."
// document end marker.
func hasDocEnd(data []byte) bool {
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte("\n..."))
		if j < 0 {
			return false
		}
		i += j + 1
		if isMarker(data[i:], "...") {
			return true
		}
	}
}

// splitParts cuts data, which splitSafe accepts, at document markers into
// parts of at least size bytes; a file under twice that is one part.
func splitParts(data []byte, size int) []part {
	if len(data) < 2*size {
		return []part{{data: data}}
	}
	var parts []part
	start, line := 0, 0
	for pos := 0; pos < len(data); {
		nl := bytes.IndexByte(data[pos:], '\n')
		if nl < 0 {
			break
		}
		pos += nl + 1
		if pos-start >= size && len(data)-pos >= size && isMarker(data[pos:], "---") {
			p := part{data: data[start:pos], line: line}
			parts = append(parts, p)
			line += bytes.Count(p.data, []byte("\n"))
			start = pos
		}
	}
	return append(parts, part{data: data[start:], line: line})
}

// isMarker reports whether b starts with the document marker m ("---" or
// "...") followed by a blank, a line end or the end of input.
func isMarker(b []byte, m string) bool {
	if !bytes.HasPrefix(b, []byte(m)) {
		return false
	}
	if len(b) == len(m) {
		return true
	}
	switch b[len(m)] {
	case ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// hasLoneCR reports whether data has a CR not followed by LF (a line
// break for YAML, not for splitParts).
func hasLoneCR(data []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '\r')
		if j < 0 {
			return false
		}
		i += j + 1
		if i == len(data) || data[i] != '\n' {
			return true
		}
	}
}
