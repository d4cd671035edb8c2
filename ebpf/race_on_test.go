//go:build race

package ebpf

// sync.Pool drops items at random under the race detector, so pooled
// buffers get allocated again: allocation counts mean nothing then.
const raceEnabled = true
