package msg

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The channel's non-blocking calls go to the kernel as raw system calls,
// without the runtime's bookkeeping for calls that may block: that
// bookkeeping wakes the runtime's monitor thread (sysmon) whenever it
// sleeps, and at a thousand services pinged every second those wake-ups
// and the monitor's polling after each cost as much as a tenth of rs's
// CPU. Only calls that cannot block may come here: MSG_DONTWAIT sends and
// receives, epoll_wait with a zero timeout.

// rawSendmsg sends one packet with MSG_DONTWAIT added to flags.
func rawSendmsg(fd int, p, oob []byte, flags int) error {
	_, _, err := rawMsg(unix.SYS_SENDMSG, fd, p, oob, flags)
	return err
}

// rawRecvmsg receives one packet with MSG_DONTWAIT added to flags.
func rawRecvmsg(fd int, p, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	n, h, err := rawMsg(unix.SYS_RECVMSG, fd, p, oob, flags)
	if err != nil {
		return 0, 0, 0, err
	}
	return n, int(h.Controllen), int(h.Flags), nil
}

// rawMsg makes sendmsg or recvmsg (trap) on one buffer and its control
// data, and returns the header as the kernel left it.
func rawMsg(trap uintptr, fd int, p, oob []byte, flags int) (int, *unix.Msghdr, error) {
	var h unix.Msghdr
	var iov unix.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		h.Iov = &iov
		h.SetIovlen(1)
	}
	if len(oob) > 0 {
		h.Control = &oob[0]
		h.SetControllen(len(oob))
	}
	r, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&h)), uintptr(flags|unix.MSG_DONTWAIT))
	if e != 0 {
		return 0, nil, e
	}
	return int(r), &h, nil
}

// rawEpollPoll is epoll_wait with a zero timeout: what is ready now.
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
