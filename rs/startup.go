package rs

import (
	"fmt"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// For a supervisor above rs (systemd's READY=1 and WATCHDOG=1,
// cmd/rs/systemd.go): when the configured services are up, and whether
// the loop still answers. Both ask the loop with a probe (evProbe) from
// the caller's goroutine and never make the loop wait.

// LoopProbe hands the loop a no-op and returns a channel that is closed
// once the loop has run it. The hand-over is in a goroutine of its own,
// so a loop that takes no events does not hold up the caller: its
// channel just stays open. It is never closed after Run returned.
func (s *Server) LoopProbe() <-chan struct{} {
	done := make(chan struct{})
	go s.post(evProbe{f: func() {}, done: done})
	return done
}

// WaitSettled waits until every service of labels (the config's) has
// settled, and returns a one-line summary of their states: a service has
// settled once it reached running (whatever it did after), is failed
// (its first start failed, or it ran out of restarts), was taken down,
// or waits for a dependency that has settled without running (it may
// never start: waiting for it would hang). It asks the loop at growing
// intervals, from 10ms to 200ms. false: stop was closed or rs ended
// first.
func (s *Server) WaitSettled(labels []string, stop <-chan struct{}) (string, bool) {
	delay := 10 * time.Millisecond
	for {
		var ok bool
		var summary string
		done := make(chan struct{})
		go s.post(evProbe{f: func() { ok, summary = s.settled(labels) }, done: done})
		select {
		case <-done:
		case <-stop:
			return "", false
		case <-s.done:
			return "", false
		}
		if ok {
			return summary, true
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return "", false
		case <-s.done:
			t.Stop()
			return "", false
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// settled, on the loop: whether every service of labels has settled (see
// WaitSettled), and a summary of their states.
func (s *Server) settled(labels []string) (bool, string) {
	all := true
	running, failed, other := 0, 0, 0
	for _, l := range labels {
		svc, ok := s.services[l]
		if !ok {
			continue // gone from the table: nothing to wait for
		}
		if !s.hasSettled(svc, map[string]bool{}) {
			all = false
		}
		switch svc.state() {
		case control.StateRunning:
			running++
		case control.StateFailed:
			failed++
		default:
			other++
		}
	}
	return all, fmt.Sprintf("%d running, %d failed, %d other of %d configured", running, failed, other, len(labels))
}

func (s *Server) hasSettled(svc *service, seen map[string]bool) bool {
	if svc.ranOnce || svc.failed || svc.stopWant {
		return true
	}
	if !svc.waiting || seen[svc.spec.Label] {
		return false
	}
	seen[svc.spec.Label] = true
	for _, d := range svc.spec.Depends {
		dep, ok := s.services[d]
		if !ok {
			return true // it waits for a label that is not there
		}
		if dep.state() != control.StateRunning && s.hasSettled(dep, seen) {
			return true
		}
	}
	return false
}
