package sef

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/reincarnation/rs/msg"
)

// A held instance: a group update's new instance (`service update a b
// c`) whose init succeeded waits for every member's, and serves only at
// rs's lu-commit. Until then it must answer nothing a rollback would
// lose: Receive delivers no work (pings are answered), the listeners
// Listen returns accept nothing, and sef/handoff's connections read
// nothing (handoff.Group.HoldUntil(s.Committed())). Clients' bytes and
// connections wait in the kernel for whichever instance wins: the old
// one has its own copies of every socket.

// closedChan is Committed's answer for an instance that is not held.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// holdState is the hold's part of a Service.
type holdState struct {
	committed  chan struct{} // closed at lu-commit (closedChan when not held)
	commitOnce sync.Once
}

// Committed is closed once this instance may serve: at once, unless it
// is a group update's new instance, which rs holds after its init until
// the whole group's commit (lu-commit). If the group rolls back rs kills
// the instance; if the channel to rs ends first the service stops, as
// ever: wait on Done too.
func (s *Service) Committed() <-chan struct{} { return s.committed }

// held tells whether the instance waits for lu-commit.
func (s *Service) held() bool {
	select {
	case <-s.committed:
		return false
	default:
		return true
	}
}

// startHold sets the hold up from the init: hold asked by rs (only in a
// live update's init).
func (s *Service) startHold(hold bool) {
	if hold {
		s.committed = make(chan struct{})
		return
	}
	s.committed = closedChan
}

// onCommit handles lu-commit, on the channel's reader so that the gates
// open even while the main loop is busy; it tells whether m was one.
func (s *Service) onCommit(m msg.Message, files []*os.File) bool {
	if m.Kind != msg.KindLUCommit {
		return false
	}
	msg.CloseFiles(files)
	if !s.held() {
		s.log.Warn("unexpected lu-commit: this instance is not held")
		return true
	}
	s.commitOnce.Do(func() {
		close(s.committed)
		s.log.Info("live update committed; serving")
	})
	return true
}

// holdListener is a listener whose Accept waits for the commit.
type holdListener struct {
	net.Listener
	s      *Service
	closed chan struct{}
	once   sync.Once
}

// gateListener returns ln, gated until the commit when the instance is
// held.
func (s *Service) gateListener(ln net.Listener) net.Listener {
	if !s.held() {
		return ln
	}
	return &holdListener{Listener: ln, s: s, closed: make(chan struct{})}
}

func (l *holdListener) Accept() (net.Conn, error) {
	select {
	case <-l.s.committed:
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.s.done:
		return nil, fmt.Errorf("accept before the commit: %w", l.s.stopErr)
	}
	return l.Listener.Accept()
}

func (l *holdListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// SetDeadline sets the listener's deadline (sef/handoff wakes a blocked
// Accept with it).
func (l *holdListener) SetDeadline(t time.Time) error {
	d, ok := l.Listener.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return errors.New("listener has no deadline")
	}
	return d.SetDeadline(t)
}

// File returns a copy of the listener's socket, as a *net.TCPListener's
// or *net.UnixListener's File does.
func (l *holdListener) File() (*os.File, error) {
	f, ok := l.Listener.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, errors.New("listener has no file")
	}
	return f.File()
}
