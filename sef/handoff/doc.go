// Package handoff moves a network service's open connections to the new
// instance of a live update, with nothing lost: the goroutines that read
// the network park at the update's safe point, the parked connections
// (their sockets, the bytes read and not yet used, and any state of the
// service's protocol) go into the state the old instance saves, and the
// new instance adopts them and reads on where the old one stopped. If the
// update is rolled back, the parked goroutines resume as if nothing
// happened.
//
// A Group tracks a service's listeners and connections. Wrap each
// listener with g.Listener: its Accept parks during an update (new
// clients wait in the backlog, which the listener in rs's fd store keeps
// for the new instance) and returns connections the Group tracks. A
// connection parks in one of two ways, by the Group's Mode:
//
//   - Checkpoints: the service's connection goroutine calls c.Park at its
//     safe point (nothing in flight: before it reads the next request),
//     with what it holds. A Read that an update interrupts returns
//     ErrInterrupted; go to the safe point then. kv works this way.
//   - IdleReads: the connection parks inside Read, whenever the reader
//     has marked it idle (c.SetIdle) and has not been handed a byte
//     since. For a reader that is not the service's own code, such as
//     net/http's server (see sef/sefhttp).
//
// Wire the Group into sef with g.Callbacks (Begin when preparing starts,
// End on a rollback, Ready as LUPrepare); the Group calls sef's Reached
// when the last goroutine parks, so readiness never waits for another
// wake-up of the receive loop. In LUStateSave, AppendState adds the
// parked connections to the service's state (copies of their sockets go
// along through the StateWriter); in the new instance Decode reads them
// back, and Adopt (Checkpoints) or Listener.Inject (IdleReads) puts them
// to work. At the commit the old instance just exits: closing its
// copies of the sockets sends nothing to the clients.
//
// A group update's new instance is held after its init until the whole
// group commits (sef's Committed): call g.HoldUntil(s.Committed()) before
// Adopt and Listener, and until then the Group's listeners accept
// nothing and its connections read nothing, not even the bytes handed
// over with them, so a rollback loses nothing (sef/sefhttp does it).
//
// Deadlines: the Group wakes blocked reads and accepts with a read
// deadline in the past, so it owns the listeners' deadlines; a Conn's own
// deadlines (SetReadDeadline, SetDeadline) still work, and come back when
// an update ends.
//
// Lifetime: a parked goroutine waits until the update ends (Park and the
// parked Read or Accept go on) or until g.Close (they return false, io.EOF
// or net.ErrClosed), which the service calls when it stops.
package handoff
