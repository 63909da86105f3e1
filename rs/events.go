package rs

import (
	"os"
	"time"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// event is what the loop takes. The interface is sealed (only this
// package's types have isEvent), and the loop's switch has a default that
// logs an event it has no case for and counts it (status reports the
// count as unknown_events, and the tests fail on any).
type event interface{ isEvent() }

type (
	// evStart adds the configured services and starts them.
	evStart struct{ specs []Spec }
	// evRequest is one control request; the reply goes to reply,
	// progress lines to prog.
	evRequest struct {
		req   control.Request
		peer  control.Peer // who asked; zero for rs's own callers
		reply chan<- control.Reply
		prog  chan<- string
	}
	// evReload: the config file, read again and checked off the loop
	// (specs, or err why not), to be applied (reload.go).
	evReload struct {
		specs []Spec
		err   error
		peer  control.Peer
		reply chan<- reloadPlan
	}
	// evLogTargets asks which services' logs a logs request reads, and
	// where (the reading is the connection's, off the loop).
	evLogTargets struct {
		req   control.Request
		peer  control.Peer
		reply chan<- logTargets
	}
	// evShutdown stops everything; reply gets the answer when rs stops.
	evShutdown struct{ reply chan<- control.Reply }
	// evSpawned: an instance's process has been started, or could not be
	// (err). From the instance's process goroutine.
	evSpawned struct {
		inst *instance
		proc *proc.Process
		drv  driver
		err  error
		// listeners: the service's `listen` sockets, made by this spawn
		// (its first); the service holds them from now on.
		listeners []heldListener
	}
	// evSignal is what a driver without a channel of its own (the
	// simple driver) has to say of its instance, from its goroutine.
	evSignal struct {
		inst *instance
		sig  signal
	}
	// evNotify is one datagram of a notify instance, from its driver's
	// reader (hello: the reader runs; nothing came yet). mainFD is the
	// pidfd of a MAINPID= checked by the reader, or mainErr why not.
	evNotify struct {
		drv     *notifyDriver
		hello   bool
		m       notifyMsg
		files   []*os.File
		at      time.Time
		mainFD  *os.File
		mainErr error
	}
	// evMainExited: the MAINPID= of a notify instance exited.
	evMainExited struct {
		drv *notifyDriver
		pid int
	}
	// evReaped: an instance's process has been reaped (its group killed).
	// From the instance's process goroutine, after evSpawned.
	evReaped struct {
		inst *instance
		exit proc.Exit
	}
	// evPackets is one pass of the Mux over every channel.
	evPackets []packet
	// evTimer: a timer fired; fired tells whether it still counts.
	evTimer struct {
		owner timerOwner
		kind  timerKind
		gen   uint64
	}
	// evWatch adds a watcher of lifecycle events (observe.go); evUnwatch
	// removes it and closes its channel.
	evWatch struct {
		w     *Watcher
		peer  control.Peer
		reply chan<- error // nil: the watcher is added; else why not
	}
	evUnwatch struct{ w *Watcher }
	// evProbe runs f in the loop: tests send it to look at the table,
	// LoopProbe and WaitSettled (startup.go) to ask the loop.
	evProbe struct {
		f    func()
		done chan struct{}
	}
)

// packet is one delivery of the Mux: a message, or the end of a channel
// (err set: EOF, or a malformed packet).
type packet struct {
	drv   *sefDriver
	m     msg.Message
	files []*os.File // ours, also with err
	err   error
	at    time.Time // when the service sent it (the kernel's stamp)
	// exiting: at the end of a channel, whether /proc showed the process
	// exiting, read by the Mux's goroutine, not the loop.
	exiting bool
}

func (evStart) isEvent()      {}
func (evRequest) isEvent()    {}
func (evReload) isEvent()     {}
func (evShutdown) isEvent()   {}
func (evLogTargets) isEvent() {}
func (evSpawned) isEvent()    {}
func (evReaped) isEvent()     {}
func (evSignal) isEvent()     {}
func (evPackets) isEvent()    {}
func (evTimer) isEvent()      {}
func (evProbe) isEvent()      {}
func (evWatch) isEvent()      {}
func (evUnwatch) isEvent()    {}
func (evNotify) isEvent()     {}
func (evMainExited) isEvent() {}
