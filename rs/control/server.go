package control

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Listen creates the control socket, mode 0600. A stale socket file from a
// dead rs is replaced; a live rs on the same path is an error.
func Listen(path string) (*net.UnixListener, error) {
	if c, err := net.DialTimeout("unixpacket", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen %s: another rs is running there", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	old := unix.Umask(0o177) // no window in which the socket is open to others
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln, nil
}

// Handler answers one request: it returns the final reply and may call
// progress, from its own goroutine, until then. It runs on the
// connection's goroutine, so it may wait.
type Handler func(req Request, progress func(string)) Reply

// requestTimeout bounds how long a client may take to send its request,
// and each reply packet to be taken.
const requestTimeout = 5 * time.Second

// Server serves the control socket: one goroutine per connection, each
// bounded by deadlines, so a client that sends nothing blocks nobody.
type Server struct {
	Handler Handler
	Log     *slog.Logger
	conns   sync.WaitGroup
}

// Serve accepts connections until ln is closed.
func (s *Server) Serve(ln *net.UnixListener) error {
	var delay time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of fds, say: keep serving once some are back, as
			// net/http does, rather than go deaf for good.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log().Error("control socket: accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.serveConn(c)
		}()
	}
}

// Wait waits, at most d, for the connections in progress to get their
// replies out: `service shutdown` must hear that rs stopped before rs
// exits.
func (s *Server) Wait(d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// serveConn answers one connection: check the peer, read one request,
// hand it to the handler, send progress and the final reply.
func (s *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	var mu sync.Mutex // progress may come from another goroutine than the final reply
	send := func(r Reply) {
		mu.Lock()
		defer mu.Unlock()
		c.SetWriteDeadline(time.Now().Add(requestTimeout))
		if err := writeReply(c, &r); err != nil {
			s.log().Warn("control socket: reply lost", "err", err)
		}
	}
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	buf := make([]byte, MaxRequest+1)
	n, err := c.Read(buf)
	// The request is read even from a refused peer: closing a socket with
	// unread data resets it, and the peer would never see why.
	if perr := checkPeer(c); perr != nil {
		s.log().Warn("control client refused", "err", perr)
		send(Failure(perr))
		return
	}
	if err != nil {
		send(Failure(fmt.Errorf("%w: %v", ErrInvalid, err)))
		return
	}
	req, err := DecodeRequest(buf[:n])
	if err != nil {
		send(Failure(err))
		return
	}
	r := s.Handler(req, func(p string) { send(Reply{Progress: p}) })
	r.Done = true
	send(r)
}

// checkPeer lets in only our own uid and root.
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("%w: uid %d may not control this rs", ErrPermission, cred.Uid)
	}
	return nil
}
