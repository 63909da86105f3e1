package rs

import (
	"errors"
	"os"
	"time"
)

// The protocol seam. The lifecycle (lifecycle.go) speaks of an instance
// that said hello, is ready, failed its init, is alive, stored an fd,
// handed over its state or refused to; it asks an instance for its init,
// a sign of life, a safe state, to carry on, to stop. A driver turns
// those into one protocol and back: the sef driver (sefdriver.go) into
// the msg channel, and a second protocol (systemd's notify, say) is
// another driver, with nothing in the lifecycle to change. Only the
// driver knows the wire, which fd the channel is, and the order its
// messages must come in.

// driver is one instance's protocol, as the lifecycle uses it. Every
// method is called on the loop and must not block.
type driver interface {
	// attach starts hearing the instance, once its process runs. A
	// driver without a channel of its own marks inst.ended: its
	// reaping alone ends it.
	attach(s *Server, inst *instance) error
	// init gives the instance its init: why it starts, and the fds it
	// gets back (its fd store, and for a live update the old instance's
	// state and fds), named.
	init(kind initKind, label string, restarts int, names []string, files []*os.File) error
	// ping asks for a sign of life, numbered seq.
	ping(seq uint64) error
	// prepare asks the instance to reach state and hand over its state
	// and fds, within maxTime.
	prepare(state int, maxTime time.Duration) error
	// cancel tells an instance asked to prepare that the update is off.
	cancel() error
	// stop asks it to stop gracefully.
	stop() error
	// close lets go of the instance: it is gone.
	close()
}

// holder is a driver whose protocol can hold a live update's new
// instance after its init until the update takes (sef's): a group
// update's members, so that one whose init succeeded answers nothing a
// rollback would lose (group.go).
type holder interface {
	// holdNext makes the next init ask the instance to hold; its
	// sigReady then says whether it does (held).
	holdNext()
	// release tells a held instance that the update took: it serves.
	release() error
}

// initKind says why an instance starts.
type initKind uint8

const (
	initFresh   initKind = iota + 1 // first start
	initRestart                     // reincarnation, restart or a standby's take-over
	initUpdate                      // live update: the old instance's state comes along
)

func (k initKind) String() string {
	switch k {
	case initFresh:
		return "fresh"
	case initRestart:
		return "restart"
	case initUpdate:
		return "live-update"
	}
	return "init?"
}

// A driver reports what an instance said as a signal.
type sigKind uint8

const (
	sigNone       sigKind = iota // nothing for the lifecycle
	sigHello                     // exec and start-up done: it can be given its init
	sigReady                     // its init succeeded
	sigInitFailed                // its init failed (err)
	sigAlive                     // the answer to the last ping, sent at at
	sigStoreFD                   // keep files[0] in the fd store as names[0]
	sigState                     // the state asked for is reached: state and fds in files, named
	sigRefused                   // it will not prepare (err)
	sigFault                     // it broke the protocol (reason, err)
	sigBaseDone                  // the pre-copy base is streamed (bytes); it heads for the state

	// The notify protocol's (notifydriver.go).
	sigStatus    // its status text is text
	sigErrno     // it reports errno n
	sigStopping  // it stops by itself
	sigReloading // it reloads (n 1) or is done reloading (n 0)
	sigExtend    // the deadline being waited is to be at least d from now
	sigMainPID   // its main process is pid n (files[0] its pidfd), or err
	sigRemoveFD  // drop text from the fd store
)

type signal struct {
	kind   sigKind
	err    error
	reason string // sigFault: the first word of last_exit, "faulty"
	names  []string
	files  []*os.File // the lifecycle's from here on
	at     time.Time
	bytes  uint64 // sigBaseDone: the base's size
	// sigReady after a live update's init: what it was handed and did not
	// take (leftState, leftFDs), and whether it holds until released
	// (asked by holder.holdNext).
	left []string
	held bool
	// The notify protocol's signals.
	text string
	n    int
	d    time.Duration
}

// What an instance can leave untaken of a live update's init.
const (
	leftState = "state" // the old instance's state and handed-over fds
	leftFDs   = "fds"   // the fd store
)

// What a driver's send can fail with, beyond a fault of its own.
var (
	// errDeaf: the instance does not read what rs sends it.
	errDeaf = errors.New("does not read its channel")
	// errPeerGone: the instance's end is closed; the end of the channel
	// follows as its own event.
	errPeerGone = errors.New("channel closed by the service")
)
