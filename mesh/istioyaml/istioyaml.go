package istioyaml

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/eastwest-gw/eastwest/mesh"
)

// MaxFileSize caps one input file or LoadBytes document stream, so that a
// wrong path (a log file, a device) fails fast instead of exhausting memory.
const MaxFileSize = 16 << 20

// Resolver resolves host names; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options say who the gateway is. The zero value is a gateway in
// istio-system for an unnamed network.
type Options struct {
	// Network is the gateway's network. Endpoints whose network is set and
	// differs are dropped (SNI-6: never hairpin to another network's
	// gateway); endpoints with an empty network are always local.
	Network string
	// Namespace is the gateway's namespace, against which exportTo is
	// evaluated and the first namespace searched for DestinationRules.
	// Default "istio-system".
	Namespace string
	// ClusterDomain completes short DestinationRule hosts: "reviews" in
	// namespace default means reviews.default.svc.<ClusterDomain>. Default
	// "cluster.local".
	ClusterDomain string
	// Resolver resolves endpoint host names of resolution: DNS
	// ServiceEntries at load time. Nil means net.DefaultResolver.
	Resolver Resolver
}

// RootNamespace is Istio's default meshConfig.rootNamespace: the third and
// last namespace searched for a service's DestinationRule.
const RootNamespace = "istio-system"

// Warning is a problem that does not stop the load: something ignored or
// dropped.
type Warning struct {
	// File is the path (or LoadBytes name) the resource came from.
	File string
	// Resource is "Kind namespace/name", e.g. "DestinationRule default/reviews".
	Resource string
	Message  string
}

// String formats the warning as "file: resource: message".
func (w Warning) String() string { return join3(w.File, w.Resource, w.Message) }

// Error is one problem that makes a load fail. Load returns every Error it
// found, joined with errors.Join.
type Error struct {
	File     string
	Resource string // empty when the problem is not in one resource
	Message  string
	Err      error // the underlying error, when there is one
}

// Error formats the problem as "file: resource: message".
func (e *Error) Error() string { return join3(e.File, e.Resource, e.Message) }

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

func join3(file, res, msg string) string {
	var b strings.Builder
	if file != "" {
		b.WriteString(file)
		b.WriteString(": ")
	}
	if res != "" {
		b.WriteString(res)
		b.WriteString(": ")
	}
	b.WriteString(msg)
	return b.String()
}

// Result is a successful load.
type Result struct {
	// Snapshot holds every service and the SNI-DNAT clusters of the
	// exported mesh-internal ones.
	Snapshot *mesh.Snapshot
	// Warnings lists what was ignored or dropped, in input order.
	Warnings []Warning
	// Files lists the files read, in the order they were read.
	Files []string
	// WorkloadGroups are kept for health checking; they create no endpoints.
	WorkloadGroups []WorkloadGroup
}

// Load reads every path, a file or a folder, and compiles the Istio
// resources in them into a Snapshot. A folder is walked recursively in
// lexical order for *.yaml and *.yml files; hidden entries (a leading dot,
// such as the ..data folders of a mounted ConfigMap) are skipped, and a
// symbolic link is followed only to a file. Each file may hold several
// documents separated by "---". On any error Load returns a nil Result and
// an error joining every problem found, each naming its file and resource.
func Load(ctx context.Context, paths []string, opts Options) (*Result, error) {
	if len(paths) == 0 {
		return nil, errors.New("istioyaml: no mesh config paths given")
	}
	// Expand in order, read in parallel, report in order.
	type entry struct {
		path string
		err  error // of expanding path, else of reading it
		data []byte
		read bool
	}
	var entries []entry
	seen := map[string]bool{}
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			entries = append(entries, entry{path: p, err: err})
			continue
		}
		for _, f := range files {
			// A file named twice (itself and through its folder) is
			// read once, rather than failing on duplicate names.
			if abs, err := filepath.Abs(f); err == nil {
				if seen[abs] {
					continue
				}
				seen[abs] = true
			}
			entries = append(entries, entry{path: f, read: true})
		}
	}
	parallel(len(entries), func() func(int) {
		return func(i int) {
			if e := &entries[i]; e.read {
				e.data, e.err = readFile(e.path)
			}
		}
	})
	var inputs []input
	var problems []error
	for _, e := range entries {
		if e.err != nil {
			problems = append(problems, &Error{File: e.path, Message: e.err.Error(), Err: e.err})
			continue
		}
		inputs = append(inputs, input{name: e.path, data: e.data})
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return compile(ctx, inputs, opts)
}

// LoadBytes is Load for documents in memory (an embedded demo mesh, a test);
// name stands for the file name in messages.
func LoadBytes(ctx context.Context, name string, data []byte, opts Options) (*Result, error) {
	if len(data) > MaxFileSize {
		return nil, &Error{File: name, Message: fmt.Sprintf("larger than %d bytes", MaxFileSize)}
	}
	return compile(ctx, []input{{name: name, data: data}}, opts)
}

type input struct {
	name string
	data []byte
}

// expand returns p itself when it is a file, or the YAML files under it.
func expand(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var out []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != p && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isYAMLName(d.Name()) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			// Follow a link to a file (a ConfigMap key), never to a
			// folder: that could loop.
			st, err := os.Stat(path)
			if err != nil {
				return err
			}
			if !st.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		out = append(out, path)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func isYAMLName(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Sized from the file's length, as io.ReadAll would grow its buffer
	// through doublings: twice the memory and copies of the config.
	size := 0
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = int(min(st.Size(), MaxFileSize+1))
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1)); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	data := buf.Bytes()
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "istio-system"
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	o.ClusterDomain = strings.Trim(strings.ToLower(o.ClusterDomain), ".")
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	return o
}
