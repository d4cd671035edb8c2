//go:build !linux

package proxy

import (
	"net"
	"syscall"
	"time"
)

func reusePort(syscall.RawConn) error { return nil }

// idleFor is not measured off Linux: connections never idle out there.
func idleFor(a, b *net.TCPConn) time.Duration { return 0 }

// bytesReceived is not measured off Linux: counters advance at close.
func bytesReceived(client, upstream *net.TCPConn) (int64, int64, bool) { return 0, 0, false }
