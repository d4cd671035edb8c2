package ebpf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
)

// ErrNotSupported is wrapped by every error that says the kernel path is
// unavailable here. The Forwarder still works in Splice mode.
var ErrNotSupported = errors.New("ebpf: sockmap forwarding not supported")

// ErrClosed is returned for pairs submitted after, or cut short by, Close.
var ErrClosed = errors.New("ebpf: forwarder closed")

// Mode selects the path bytes take between a client and its upstream.
type Mode int

const (
	// Auto starts every pair in the kernel (sockmap) path and hands it to
	// user space when it turns into a bulk flow or passes its queue cap.
	Auto Mode = iota
	// Sockmap keeps pairs in the kernel path; only the queue cap hands a
	// pair to user space.
	Sockmap
	// Splice never uses the kernel path: user space copies with read/write
	// for small reads and splice(2) for large ones.
	Splice
)

// String returns the mode's name as used in config and metrics.
func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case Sockmap:
		return "sockmap"
	case Splice:
		return "splice"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode is the inverse of String.
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{Auto, Sockmap, Splice} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("ebpf: unknown forwarder mode %q (want auto, sockmap or splice)", s)
}

// EnvForce names the environment variable that forces a mode: setting it
// to "splice" makes New skip the kernel path whatever Options.Mode says.
const EnvForce = "EASTWEST_FORWARDER"

// Options configures a Forwarder. The zero value is usable.
type Options struct {
	// Mode is the path policy. Zero is Auto.
	Mode Mode
	// QueueCap bounds, per direction of a pair, the bytes redirected by
	// the kernel but not yet taken by the peer's send queue. A pair that
	// would pass it moves to user space, where TCP flow control bounds
	// memory. Bytes; zero means 4 MiB.
	QueueCap int
	// BulkRate is the sustained rate, in bytes per second over at least
	// BulkWindow, above which Auto moves a pair to user space (splice-like
	// copying is faster than sockmap for bulk flows on this kernel). Zero
	// means 64 MiB/s; negative disables the rule.
	BulkRate int64
	// Logger receives the one line saying the kernel path is off, and
	// debug lines for pair endings. Nil discards.
	Logger *slog.Logger
}

const (
	defaultQueueCap = 4 << 20
	defaultBulkRate = 64 << 20
)

// populate applies defaults and the environment switch and validates.
func (o Options) populate() (Options, error) {
	if o.QueueCap == 0 {
		o.QueueCap = defaultQueueCap
	}
	if o.QueueCap < 64<<10 {
		return o, fmt.Errorf("ebpf: QueueCap %d below 64 KiB", o.QueueCap)
	}
	if o.BulkRate == 0 {
		o.BulkRate = defaultBulkRate
	}
	if o.Mode < Auto || o.Mode > Splice {
		return o, fmt.Errorf("ebpf: invalid mode %d", int(o.Mode))
	}
	if os.Getenv(EnvForce) == "splice" {
		o.Mode = Splice
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
