package rs

import (
	"fmt"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Lifecycle events: what the loop tells its watchers (`service events`,
// metrics, hooks) as it happens. The names are lower-case words joined
// by '-'.
const (
	EventSpawned         = "spawned"          // an instance's process started (Detail: its role when not the primary)
	EventStartFailed     = "start-failed"     // an instance's process could not be started (Reason)
	EventReady           = "ready"            // the primary is running: its init succeeded
	EventFault           = "fault"            // rs found an instance faulty and kills it (Reason)
	EventStopping        = "stopping"         // rs asked the primary to stop
	EventExited          = "exited"           // the primary ended unexpectedly (Reason, Kind)
	EventStopped         = "stopped"          // the primary ended as asked
	EventReincarnating   = "reincarnating"    // a new primary is being started after an exit
	EventBackoff         = "backoff"          // the restart waits (Detail: the delay)
	EventFailed          = "failed"           // too many restarts, or it never started (Reason: the last exit)
	EventStandbyTakeover = "standby-takeover" // a standby became the primary
	EventUpdateStarted   = "update-started"   // an update's new instance is starting (Detail: binary)
	EventUpdateCommitted = "update-committed" // the new instance replaced the old one
	EventUpdateRollback  = "update-rolled-back"
	EventAdopted         = "adopted"    // a running instance taken over by a new rs (update-self)
	EventRemoved         = "removed"    // taken out of the table (service remove, or gone from the config at a reload)
	EventRSStopped       = "rs-stopped" // rs stopped every service and ends; the last event (no label)
	// EventReloadPrefix + a reload's action for the service (added,
	// removed, unchanged, applied, restarted, updated, kept, left-alone,
	// busy): what `service reload` did to it, Detail in words.
	EventReloadPrefix = "reload-"
	// EventPong is a ping's round trip (Watcher.RTT): only watchers that
	// asked for pings get it, and it is never streamed.
	EventPong = "pong"
)

// watcherBuffer is how many events a watcher may be behind before it
// misses some (counted in the next one it gets: Event.Missed).
const watcherBuffer = 1024

// A Watcher gets the loop's lifecycle events in its channel, C, in the
// order they happened, until it is closed (Close, or rs ending). A
// watcher that reads too slowly misses events rather than slow the loop;
// the next event it gets counts them.
type Watcher struct {
	C <-chan control.Event

	s      *Server
	ch     chan control.Event
	label  string // only this service's ("" every service's)
	pings  bool   // also EventPong
	missed int    // owned by the loop
}

// Watch returns a watcher of every service's events; with pings, also
// every ping's round trip (EventPong, whose RTT is in Event.RTT). It
// sees every event of what the loop handles after the events already
// queued when Watch was called. nil if rs has ended.
func (s *Server) Watch(pings bool) *Watcher {
	w, _ := s.watchFor(control.Peer{}, "", pings)
	return w
}

// watchFor adds a watcher for peer (refused if it is a service's process
// that may not control rs) of label's events ("": every service's).
func (s *Server) watchFor(peer control.Peer, label string, pings bool) (*Watcher, error) {
	ch := make(chan control.Event, watcherBuffer)
	w := &Watcher{C: ch, s: s, ch: ch, label: label, pings: pings}
	reply := make(chan error, 1)
	select {
	case s.events <- evWatch{w: w, peer: peer, reply: reply}:
	case <-s.done:
		return nil, control.ErrShutdown
	}
	select {
	case err := <-reply:
		if err != nil {
			return nil, err
		}
		return w, nil
	case <-s.done:
		return nil, control.ErrShutdown
	}
}

// Close stops the events; C is closed by the loop (or was, when rs
// ended). It does not wait.
func (w *Watcher) Close() {
	go w.s.post(evUnwatch{w}) // never waits on a busy loop
}

func (s *Server) watch(ev evWatch) {
	err := s.refused(control.OpEvents, ev.peer)
	if l := ev.w.label; err == nil && l != "" && s.services[l] == nil {
		err = fmt.Errorf("%w %q", control.ErrUnknown, l)
	}
	if err == nil {
		s.watchers[ev.w] = struct{}{}
		s.watching.Add(1)
	}
	ev.reply <- err // room for it: never blocks
}

// streamEvents answers `service events`: each event as the loop tells
// it, in pieces of what is there at once, until the client goes or rs
// ends.
func (s *Server) streamEvents(req control.Request, peer control.Peer, out *control.Stream) control.Reply {
	w, err := s.watchFor(peer, req.Label, false)
	if err != nil {
		return control.Failure(err)
	}
	defer w.Close()
	const most = 256 // events in one piece
	for {
		var batch []control.Event
		select {
		case ev, ok := <-w.C:
			if !ok {
				return control.Reply{Message: "rs stopped"}
			}
			batch = append(batch, ev)
		case <-out.Gone():
			return control.Reply{}
		}
	more:
		for len(batch) < most {
			select {
			case ev, ok := <-w.C:
				if !ok {
					break more
				}
				batch = append(batch, ev)
			default:
				break more
			}
		}
		if err := out.Send(control.Reply{Events: batch}); err != nil {
			return control.Reply{}
		}
	}
}

func (s *Server) unwatch(w *Watcher) {
	if _, ok := s.watchers[w]; ok {
		delete(s.watchers, w)
		s.watching.Add(-1)
		close(w.ch)
	}
}

func (s *Server) unwatchAll() {
	for w := range s.watchers {
		s.unwatch(w)
	}
}

// emit tells every watcher of ev, on the loop: it never waits. The time,
// the service's state and restarts, and the reason's kind are filled in
// here.
func (s *Server) emit(ev control.Event) {
	if len(s.watchers) == 0 {
		return
	}
	ev.Time = time.Now().UTC()
	if svc := s.services[ev.Label]; svc != nil && ev.Label != "" {
		if ev.Event != EventExited {
			// An exit is judged after it is told: the next event says
			// what comes of it (reincarnating, backoff, failed).
			ev.State = svc.state()
		}
		ev.Restarts = svc.restarts
	}
	if ev.Kind == "" && ev.Reason != "" {
		ev.Kind = reasonKind(ev.Reason)
	}
	for w := range s.watchers {
		if (ev.Event == EventPong && !w.pings) || (w.label != "" && ev.Label != "" && w.label != ev.Label) {
			continue
		}
		e := ev
		e.Missed = w.missed
		select {
		case w.ch <- e:
			w.missed = 0
		default:
			w.missed++
		}
	}
}

// reasonKind is a reason's first word: what kind of end it was
// (terminated, no-heartbeat, init-timeout, faulty, oom-killed, ...).
func reasonKind(reason string) string {
	if i := strings.IndexAny(reason, ": ("); i >= 0 {
		return reason[:i]
	}
	return reason
}

// roleDetail names an instance's role in an event when it is not the
// service's own instance.
func roleDetail(r role) string {
	if r == rolePrimary {
		return ""
	}
	return r.String()
}
