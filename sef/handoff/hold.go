package handoff

import (
	"io"
	"net"
)

// HoldUntil makes the Group's listeners accept nothing, and its
// connections (adopted ones above all) read nothing, until committed is
// closed: pass s.Committed(). A group update's new instance is held
// after its init until every member's init succeeded; meanwhile the
// old instance keeps its own copies of the sockets, and the bytes
// clients send wait in the kernel for whichever instance wins the
// update, so a rollback loses nothing. Call it before Adopt and
// Listener; outside a hold (committed already closed) it costs a
// closed channel's check per Read and Accept.
func (g *Group) HoldUntil(committed <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = committed
}

// waitHold waits for the commit of a held instance; gone is closed when
// the waiter's connection or listener is. nil: go on.
func (g *Group) waitHold(gate, gone <-chan struct{}) error {
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	default:
	}
	select {
	case <-gate:
		return nil
	case <-g.done:
		return io.EOF
	case <-gone:
		return net.ErrClosed
	}
}

// holdGate is the channel a new Conn or Listener waits on.
func (g *Group) holdGate() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hold
}
