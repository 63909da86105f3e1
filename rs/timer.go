package rs

import "time"

// Clock is the time source of the table loop, injected so that backoff and
// ping deadlines can be tested without sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, unless stopped.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Timers. Everything in the table that waits for time (an instance's
// deadlines, a service's backoff, an update's step, a ping group's next
// slot) has one slot per kind, and one mechanism arms them: arm gives the
// slot a new generation and has the clock post evTimer with it; the loop
// takes an evTimer only if its slot is still armed with that generation
// (fired). A timer stopped or armed again while its event was on the way
// is thereby dropped in one place, whoever owns it.

type timerKind uint8

const (
	tInit    timerKind = iota // instance: its init must succeed by then
	tPing                     // instance: its ping must be answered by then (a timeout shorter than the period)
	tEnded                    // instance: its channel ended; its process must be reaped by then
	tReaped                   // instance: it was reaped; its channel must have ended by then
	tBackoff                  // service: the restart delay is over
	tStandby                  // service: time to start a standby again
	tRetry                    // service: time to try a failed one again (failed_retry)
	tUpdate                   // update: its present step must be done by then
	tTick                     // ping group: its next slot is due
	tStopBy                   // instance: it said STOPPING=1; it must be gone by then
	nTimers
)

type timerSlot struct {
	t   Timer
	gen uint64
}

// timers are an owner's slots, one per kind (most owners use a few).
type timers [nTimers]timerSlot

// timerOwner is anything in the table with timers.
type timerOwner interface{ timerSlots() *timers }

// arm sets o's timer of kind k to fire after d, replacing any.
func (s *Server) arm(o timerOwner, k timerKind, d time.Duration) {
	sl := &o.timerSlots()[k]
	if sl.t != nil {
		sl.t.Stop()
	}
	s.timerGen++
	ev := evTimer{owner: o, kind: k, gen: s.timerGen}
	sl.gen = ev.gen
	sl.t = s.clock.AfterFunc(max(0, d), func() { s.post(ev) })
}

// disarm stops o's timer of kind k, if armed.
func (s *Server) disarm(o timerOwner, k timerKind) {
	sl := &o.timerSlots()[k]
	if sl.t != nil {
		sl.t.Stop()
		sl.t = nil
	}
}

// disarmAll stops every timer of o.
func (s *Server) disarmAll(o timerOwner) {
	for k := range nTimers {
		s.disarm(o, k)
	}
}

// armed tells whether o's timer of kind k is set.
func armed(o timerOwner, k timerKind) bool { return o.timerSlots()[k].t != nil }

// fired is the one staleness check: it reports whether ev is the timer
// its slot is armed with now, and if so clears the slot.
func fired(ev evTimer) bool {
	sl := &ev.owner.timerSlots()[ev.kind]
	if sl.t == nil || sl.gen != ev.gen {
		return false
	}
	sl.t = nil
	return true
}
