package ebpf

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// wakeEpoll is a private epoll set with an eventfd in it under id 0, so the
// one goroutine waiting on the set can be woken (to stop, or to look again).
// The kernel watcher and the user-path parker each own one.
type wakeEpoll struct {
	epfd, wakefd int
}

func newWakeEpoll() (wakeEpoll, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return wakeEpoll{}, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return wakeEpoll{}, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	putID(&ev, 0, 0)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return wakeEpoll{}, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	return wakeEpoll{epfd: epfd, wakefd: wakefd}, nil
}

func (w wakeEpoll) wake() {
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(w.wakefd, one[:])
}

// drainWake consumes a wakeup, after the set reported id 0.
func (w wakeEpoll) drainWake() {
	var b [8]byte
	_, _ = unix.Read(w.wakefd, b[:])
}

func (w wakeEpoll) close() {
	unix.Close(w.wakefd)
	unix.Close(w.epfd)
}
