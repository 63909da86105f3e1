package sef

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
)

// listenPrefix starts the fd-store names of the sockets Listen manages.
const listenPrefix = "listen:"

// ErrAddrInUse: Listen found the address taken by something it must not
// replace (a live server's unix socket, or a file that is not a socket).
var ErrAddrInUse = errors.New("address in use")

// StoreFD hands rs a copy of f to keep in this service's fd store under
// name. rs gives it back in Init.FDs on every restart, so a listening
// socket stays open, with its backlog, while the service is reincarnated.
// The caller keeps f. Standalone, it does nothing.
// rs keeps at most msg.MaxStoredFDs names per service and takes one
// more for a fault; StoreFD refuses it instead.
func (s *Service) StoreFD(name string, f *os.File) error {
	if s.conn == nil {
		return nil
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	return s.storeLocked(name, f)
}

func (s *Service) storeLocked(name string, f *os.File) error {
	if _, ok := s.stored[name]; !ok && len(s.stored) >= msg.MaxStoredFDs {
		return fmt.Errorf("store fd %q: the fd store is full (%d fds)", name, msg.MaxStoredFDs)
	}
	if err := s.conn.Send(&msg.Message{Kind: msg.KindFDStore, Names: []string{name}}, f); err != nil {
		return fmt.Errorf("store fd %q: %w", name, err)
	}
	s.stored[name] = struct{}{}
	return nil
}

// handedFDs is how many fds rs hands with an init: the fd store's and
// the listeners.
func (s *Service) handedFDs() int {
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	return len(s.stored) + len(s.listeners)
}

// Listen returns a listener on network ("tcp", "tcp4", "tcp6" or "unix")
// and addr that survives restarts and live updates: the one rs holds for
// this service if there is one (stored by an earlier instance's Listen,
// or one of the config's `listen` sockets with that address), else a new
// one, which it stores in rs's fd store. The listener is the caller's:
// closing it leaves rs's copy (and its backlog) open. A unix socket's path
// is not removed on close, since the next instance serves on it; a stale
// one (nothing answers there) is replaced, anything else is
// ErrAddrInUse. Standalone, it just listens. In a new instance that rs
// holds until a group update's commit (Committed), Accept waits for the
// commit: the connections wait in the backlog meanwhile.
func (s *Service) Listen(network, addr string) (net.Listener, error) {
	ln, err := s.listen(network, addr)
	if err != nil {
		return nil, err
	}
	return s.gateListener(ln), nil
}

func (s *Service) listen(network, addr string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("listen %s %s: network not supported", network, addr)
	}
	name := listenPrefix + network + ":" + addr
	if len(name) > msg.MaxString {
		return nil, fmt.Errorf("listen %s: address too long", network)
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	if f, ok := s.kept[name]; ok {
		return fileListener(f)
	}
	for n := range s.listeners {
		f, ok := s.kept[n]
		if !ok {
			continue
		}
		ln, err := fileListener(f)
		if err != nil {
			continue
		}
		if sameAddr(ln.Addr(), network, addr) {
			return ln, nil
		}
		ln.Close()
	}
	if network == "unix" {
		if err := removeStaleSocket(addr); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	keepPath(ln)
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s %s: %w", network, addr, err)
	}
	if s.conn != nil {
		if err := s.storeLocked(name, f); err != nil {
			f.Close()
			ln.Close()
			return nil, err
		}
	}
	s.kept[name] = f
	return ln, nil
}

// fileListener makes a listener of a dup of f; f stays sef's.
func fileListener(f *os.File) (net.Listener, error) {
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited listener %s: %w", f.Name(), err)
	}
	keepPath(ln)
	return ln, nil
}

// sameAddr tells whether a listener bound to a serves network/addr.
func sameAddr(a net.Addr, network, addr string) bool {
	if network == "unix" {
		return a.Network() == "unix" && a.String() == addr
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	want, err := net.ResolveTCPAddr(network, addr)
	if err != nil || want.Port != ta.Port {
		return false
	}
	if want.IP == nil || want.IP.IsUnspecified() {
		return ta.IP.IsUnspecified()
	}
	return want.IP.Equal(ta.IP)
}

// removeStaleSocket removes a unix socket file left by a crash, but only
// if nothing answers on it: never take over a live server's path, and
// never remove something that is not a socket.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("listen unix %s: %w by a file that is not a socket", path, ErrAddrInUse)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("listen unix %s: %w: a server answers there", path, ErrAddrInUse)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// keepPath stops Close from unlinking a unix socket's path.
func keepPath(ln net.Listener) {
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
}

// dupFile duplicates f (close-on-exec): the rule that fds passed across
// sef's API are copies, so each side closes its own.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	return dupRaw(rc, f.Name())
}

func dupRaw(rc syscall.RawConn, name string) (*os.File, error) {
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	return os.NewFile(uintptr(nfd), name), nil
}
