package rs

import (
	"errors"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Held listeners of a service that is failed or down. rs keeps a
// service's fd store while it has no instance so that a restart refuses
// no client: connections wait in the backlog for the next instance. A
// service that is `failed`, or `down` because its restart policy left it
// so, has no next instance coming, and its clients would wait for ever.
// So from then on its listening sockets turn clients away, and once an
// instance is spawned again (`service restart`, `up`, failed_retry) the
// same sockets serve again, before the instance gets them:
//
//   - TCP (and MPTCP): shutdown(SHUT_RD) takes the socket out of the listening state:
//     connections in its backlog are reset and new ones refused
//     (ECONNREFUSED). The socket keeps its address; a port the kernel
//     chose (bound to port 0), which it lets go with the listening state,
//     is bound again at once. listen() with the old backlog resumes it.
//   - Any other listening socket (AF_UNIX stream or seqpacket): Linux
//     cannot resume a unix listener once it is shut down (the shutdown
//     flag stays; listen does not clear it), so rs accepts every
//     connection and closes it at once (the client reads EOF), in one
//     goroutine per socket on a dup of it. That goroutine is ended, and
//     the socket's blocking mode put back, before any instance gets the
//     fd store.
//
// Only listening sockets (SO_ACCEPTCONN) of type stream or seqpacket are
// touched; every other stored fd is left alone. What runs on the loop
// (getsockopt, shutdown, bind, listen, fcntl) does not block; the accept
// loop runs in its goroutine. `service down` itself shuts every held
// listener down on the loop (refuseListening) before it replies, and
// closes the fd store off it.

// pausedListener is one held listening socket that turns clients away.
type pausedListener struct {
	name string
	f    *os.File // the fd store's file

	// TCP: shut down, to be listened on again.
	tcp     bool
	addr    unix.Sockaddr
	backlog int
	unbound bool // its port could not be taken back when it was shut down

	// Otherwise: drained by a goroutine accepting on ln, a dup.
	ln       net.Listener
	stop     chan struct{}
	done     chan struct{}
	nonblock bool // the socket's O_NONBLOCK before (the dup shares it)
}

// defaultBacklog is the backlog a resumed TCP listener gets when its old
// one cannot be read; the kernel caps it at net.core.somaxconn.
const defaultBacklog = 4096

// drainRetry paces the accept loop after an accept error (rs out of
// fds, say), so that it does not spin.
const drainRetry = 50 * time.Millisecond

// withFD runs fn on f's descriptor without making f blocking (as Fd
// would); a closed f is an error, not someone else's fd.
func withFD(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// listening tells whether fd is a listening stream or seqpacket socket,
// and whether it is a TCP one.
func listening(fd int) (ok, tcp bool) {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return false, false
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM && typ != unix.SOCK_SEQPACKET {
		return false, false
	}
	dom, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	proto, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	// Go listens with MPTCP where the kernel has it (since Go 1.24);
	// an MPTCP listener falls back to TCP and shuts down as one.
	tcp = err1 == nil && err2 == nil && (dom == unix.AF_INET || dom == unix.AF_INET6) &&
		typ == unix.SOCK_STREAM && (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_MPTCP)
	return true, tcp
}

// pauseListeners makes the service's held listeners turn clients away.
func (s *Server) pauseListeners(svc *service) {
	if len(svc.paused) > 0 {
		return // paused already (a store with no listener is looked at again: cheap)
	}
	names, files := storeNames(svc.fdstore)
	for _, l := range svc.listeners { // and the sockets of its listen
		names, files = append(names, l.name), append(files, l.f)
	}
	for i, name := range names {
		p := &pausedListener{name: name, f: files[i]}
		var isListener bool
		err := withFD(p.f, func(fd int) error {
			isListener, p.tcp = listening(fd)
			if !isListener {
				return nil
			}
			if p.tcp {
				return p.shutTCP(fd)
			}
			return p.startDrain(fd)
		})
		switch {
		case err != nil:
			s.log.Warn("held listener left as it is", "label", svc.spec.Label, "name", name, "err", err)
		case isListener:
			svc.paused = append(svc.paused, p)
		}
	}
	if len(svc.paused) > 0 {
		s.log.Info("held listeners turn clients away", "label", svc.spec.Label, "state", svc.state(), "listeners", len(svc.paused))
	}
}

// shutTCP stops a TCP listener listening, keeping its address.
func (p *pausedListener) shutTCP(fd int) error {
	addr, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	p.addr, p.backlog = addr, defaultBacklog
	if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && ti.Sacked > 0 {
		p.backlog = int(ti.Sacked) // a listener's tcpi_sacked is its backlog
	}
	if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
		return err
	}
	// EINVAL: still bound (a port given explicitly stays with the socket).
	if err := unix.Bind(fd, addr); err != nil && !errors.Is(err, unix.EINVAL) {
		p.unbound = true
	}
	return nil
}

// startDrain starts accepting and closing at once on a dup of fd.
func (p *pausedListener) startDrain(fd int) error {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	p.nonblock = flags&unix.O_NONBLOCK != 0
	ln, err := net.FileListener(p.f) // its own dup, made non-blocking (the flag is the socket's)
	if err != nil {
		unix.SetNonblock(fd, p.nonblock)
		return err
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // the path is the service's
	}
	p.ln, p.stop, p.done = ln, make(chan struct{}), make(chan struct{})
	go p.drain()
	return nil
}

func (p *pausedListener) drain() {
	defer close(p.done)
	defer p.ln.Close() // the dup only
	for {
		c, err := p.ln.Accept()
		if err == nil {
			c.Close()
			continue
		}
		select {
		case <-p.stop:
			return
		case <-time.After(drainRetry):
		}
	}
}

// endDrain ends the accept loop. It returns at once: the loop waits only
// in Accept, which the past deadline ends.
func (p *pausedListener) endDrain() bool {
	close(p.stop)
	if d, ok := p.ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
	select {
	case <-p.done:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// resumeListeners makes the paused listeners serve again, before an
// instance gets them.
func (s *Server) resumeListeners(svc *service) {
	if len(svc.paused) == 0 {
		return
	}
	for _, p := range svc.paused {
		err := withFD(p.f, func(fd int) error {
			if !p.tcp {
				if !p.endDrain() {
					return errors.New("its accept loop did not end: a bug in rs")
				}
				return unix.SetNonblock(fd, p.nonblock)
			}
			if p.unbound {
				if err := unix.Bind(fd, p.addr); err != nil && !errors.Is(err, unix.EINVAL) {
					return err // listening now would pick another port
				}
			}
			return unix.Listen(fd, p.backlog)
		})
		if err != nil {
			s.log.Error("held listener cannot serve again", "label", svc.spec.Label, "name", p.name, "err", err)
		}
	}
	s.log.Info("held listeners serve again", "label", svc.spec.Label, "listeners", len(svc.paused))
	svc.paused = nil
}

// refuseListening shuts down the listening sockets among files
// (SHUT_RD), which refuses clients at once: a TCP listener leaves the
// listening state, a unix one refuses connects (ECONNREFUSED). It runs
// on the loop, where shutdown does not block, so that what follows it
// (the reply to `down`, say) comes after the clients are turned away;
// the close of the fds, which can block on one a service handed over,
// stays off the loop (closeHeld). Errors are ignored: a socket shut down
// already (paused) stays so.
func refuseListening(files ...*os.File) {
	for _, f := range files {
		withFD(f, func(fd int) error {
			if ok, _ := listening(fd); ok {
				return unix.Shutdown(fd, unix.SHUT_RD)
			}
			return nil
		})
	}
}

// releaseListeners ends what pauseListeners started, for an fd store
// about to be closed.
func (s *Server) releaseListeners(svc *service) {
	for _, p := range svc.paused {
		if !p.tcp && !p.endDrain() {
			s.log.Error("accept loop did not end: a bug in rs", "label", svc.spec.Label, "name", p.name)
		}
	}
	svc.paused = nil
}
