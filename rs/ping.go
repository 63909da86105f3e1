package rs

import (
	"fmt"
	"time"
)

// Pings are paced per period, not per instance: the instances that share
// a period share one timer. The period is cut into at most pingSlots
// slots, none shorter than minPingSlot; an instance joins the slot with
// the fewest members and is visited once per period, and the timer stops
// only at slots that have members, so one service costs one wake-up per
// period. The deadline of a ping is judged at the instance's next visit
// when it is a period or more (the default is one period); a shorter one
// gets its own timer.
//
// Why four slots: one burst of a thousand pings wakes a thousand
// processes at once, which queue for the CPUs (round trips read 4-18 ms)
// and hold up everything else on the machine for those milliseconds.
// Finer slots cut that, but the pongs then stop arriving in batches and
// each wakes rs: measured at 1000 services pinged every second (make
// bench -scenario scale), rs's CPU was 2.0-2.2% of a core with 1, 2 or 4
// slots, 2.6% with 8 and 3.5% with 32.

const (
	pingSlots   = 4
	minPingSlot = 10 * time.Millisecond
)

type pingGroup struct {
	period time.Duration
	slot   time.Duration            // period / len(slots)
	slots  []map[*instance]struct{} // members by slot
	count  int                      // members in all slots
	at     int                      // the slot visited last (or first joined)
	atTime time.Time                // when, by the schedule
	next   int                      // the slot the timer is set for
	nextAt time.Time                // when
	t      timers                   // tTick
}

func (g *pingGroup) timerSlots() *timers { return &g.t }

func newPingGroup(period time.Duration) *pingGroup {
	n := pingSlots
	if period/time.Duration(n) < minPingSlot {
		n = max(1, int(period/minPingSlot))
	}
	g := &pingGroup{period: period, slot: period / time.Duration(n), slots: make([]map[*instance]struct{}, n)}
	for i := range g.slots {
		g.slots[i] = map[*instance]struct{}{}
	}
	return g
}

// when is the time of slot i's next visit, one period at most after the
// last visit.
func (g *pingGroup) when(i int) time.Time {
	n := len(g.slots)
	d := (i - g.at + n) % n
	if d == 0 {
		d = n
	}
	return g.atTime.Add(time.Duration(d) * g.slot)
}

// join adds inst to the least filled slot. It reports whether the timer
// must be set (again) for g.nextAt.
func (g *pingGroup) join(inst *instance, now time.Time) bool {
	best := 0
	for i := range g.slots {
		if len(g.slots[i]) < len(g.slots[best]) {
			best = i
		}
	}
	g.slots[best][inst] = struct{}{}
	inst.pingGroup, inst.pingSlot = g, best
	g.count++
	if g.count == 1 {
		// The first member: its first ping one period from now.
		g.at, g.atTime = best, now
		g.next, g.nextAt = best, now.Add(g.period)
		return true
	}
	if t := g.when(best); t.Before(g.nextAt) {
		g.next, g.nextAt = best, t
		return true
	}
	return false
}

// leave removes inst; it reports whether the group is now empty.
func (g *pingGroup) leave(inst *instance) bool {
	delete(g.slots[inst.pingSlot], inst)
	inst.pingGroup = nil
	g.count--
	return g.count == 0
}

// visit moves the schedule to the slot due now and returns its members;
// g.next and g.nextAt are then the next slot that has members. A loop
// that fell more than a slot behind restarts the schedule from now
// rather than catch up with a burst.
func (g *pingGroup) visit(now time.Time) map[*instance]struct{} {
	g.at, g.atTime = g.next, g.nextAt
	if now.Sub(g.atTime) > g.slot {
		g.atTime = now
	}
	due := g.slots[g.at]
	n := len(g.slots)
	for d := 1; d <= n; d++ {
		if i := (g.at + d) % n; len(g.slots[i]) > 0 {
			g.next, g.nextAt = i, g.when(i)
			break
		}
	}
	return due
}

// pingJoin starts pinging a running instance.
func (s *Server) pingJoin(inst *instance) {
	period := inst.spec.pingPeriod()
	if period <= 0 || inst.pingGroup != nil {
		return
	}
	g := s.pingGroups[period]
	if g == nil {
		g = newPingGroup(period)
		s.pingGroups[period] = g
	}
	if g.join(inst, s.clock.Now()) {
		s.arm(g, tTick, g.nextAt.Sub(s.clock.Now()))
	}
}

// pingLeave stops pinging an instance (stopping, faulty or gone).
func (s *Server) pingLeave(inst *instance) {
	g := inst.pingGroup
	if g == nil {
		return
	}
	s.disarm(inst, tPing)
	if g.leave(inst) {
		s.disarm(g, tTick)
		delete(s.pingGroups, g.period)
	}
}

// pingTick: one visit of a slot.
func (s *Server) pingTick(g *pingGroup) {
	// Pings are sent and judged by the schedule's time, not the loop's:
	// a timer that fired a little late must not make the next visit, one
	// period on by the schedule, find the ping a little short of its
	// deadline and let a hung service live a period longer.
	due := g.visit(s.clock.Now())
	for inst := range due {
		s.pingCheck(inst, g.atTime)
	}
	if g.count > 0 { // pingCheck may have made members faulty
		s.arm(g, tTick, g.nextAt.Sub(s.clock.Now()))
	}
}

// pingCheck judges the outstanding ping, if any, and sends the next.
func (s *Server) pingCheck(inst *instance, now time.Time) {
	if s.self != nil {
		return // frozen for update-self: the next rs pings
	}
	period, deadline := inst.spec.pingPeriod(), inst.spec.pingDeadline()
	if inst.pingOut {
		if deadline >= period && now.Sub(inst.pingAt) >= deadline {
			s.fault(inst, "no-heartbeat", fmt.Errorf("ping %d unanswered after %v", inst.pingSeq, deadline))
		}
		return // judged by its own deadline timer, or not late yet
	}
	inst.pingSeq++
	inst.pingOut = true
	inst.pingAt = now
	inst.pingSent = time.Now()
	if err := inst.drv.ping(inst.pingSeq); err != nil {
		s.sendFailed(inst, err)
		return
	}
	if deadline < period {
		s.arm(inst, tPing, deadline)
	}
}
