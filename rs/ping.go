package rs

import (
	"fmt"
	"time"

	"rs/msg"
)

// Pings are paced per period, not per instance: every instance with the
// same period is pinged in one pass of the loop at one tick. A thousand
// services cost one timer, not two timers, two goroutines and two loop
// events per ping each. The deadline of a ping is judged at the ticks
// too when it is a period or more (the default is one period); a shorter
// one gets its own timer.

type pingGroup struct {
	period  time.Duration
	members map[*instance]struct{}
	timer   Timer
}

type evPingTick struct{ g *pingGroup }

// pingJoin starts pinging a running instance.
func (s *Server) pingJoin(inst *instance) {
	period := inst.svc.spec.Period
	if period <= 0 || inst.pingGroup != nil {
		return
	}
	g := s.pingGroups[period]
	if g == nil {
		g = &pingGroup{period: period, members: map[*instance]struct{}{}}
		s.pingGroups[period] = g
		s.armPingGroup(g)
	}
	g.members[inst] = struct{}{}
	inst.pingGroup = g
}

// pingLeave stops pinging an instance (stopping, faulty or gone).
func (s *Server) pingLeave(inst *instance) {
	g := inst.pingGroup
	if g == nil {
		return
	}
	inst.pingGroup = nil
	stopTimer(&inst.timers[timerPingDeadline])
	delete(g.members, inst)
}

func (s *Server) armPingGroup(g *pingGroup) {
	g.timer = s.clock.AfterFunc(g.period, func() { s.post(evPingTick{g}) })
}

// pingTick: one pass over a period's instances.
func (s *Server) pingTick(g *pingGroup) {
	if s.pingGroups[g.period] != g {
		return
	}
	if len(g.members) == 0 {
		delete(s.pingGroups, g.period)
		return
	}
	now := s.clock.Now()
	for inst := range g.members {
		inst.pingCheck(now)
	}
	s.armPingGroup(g)
}

// pingCheck judges the outstanding ping, if any, and sends the next.
func (inst *instance) pingCheck(now time.Time) {
	spec := inst.svc.spec
	if inst.pingOut {
		if spec.PingTimeout >= spec.Period && now.Sub(inst.pingAt) >= spec.PingTimeout {
			inst.faulty("no-heartbeat", fmt.Errorf("ping %d unanswered after %v", inst.pingSeq, spec.PingTimeout))
		}
		return // judged by its own deadline timer, or not late yet
	}
	inst.pingSeq++
	inst.pingOut = true
	inst.pingAt = now
	inst.pingSent = time.Now()
	if err := inst.conn.TrySend(&msg.Message{Kind: msg.KindPing, Seq: inst.pingSeq}); err != nil {
		inst.sendFailed(err)
		return
	}
	if spec.PingTimeout < spec.Period {
		inst.arm(timerPingDeadline, spec.PingTimeout, inst.pingSeq)
	}
}
