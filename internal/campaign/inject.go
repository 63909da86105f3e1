package campaign

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// expect is what recovery from one fault must look like.
type expect struct {
	t0    time.Time // the injection: recovery time runs from here
	pid   int       // the instance before the fault
	same  bool      // pid must keep serving (a rolled-back update)
	not   []int     // pids that must not be the one serving (killed ones)
	crash bool      // rs saw a crash: its last_exit is worth recording
	// marker must still hold markerVal (state kept by an update or a
	// rollback).
	marker, markerVal string
	version           string // INFO version wanted; "" any
}

// An injector makes one fault happen to s, which status showed running
// as st. It returns what recovery must look like and, for the awkward
// moments, what actually happened.
type injector func(c *campaign, s *service, f fault, r *rand.Rand, st control.Status) (expect, string, error)

var injectors = map[Kind]injector{
	KindSigkill:             injectSigkill,
	KindKillDuringInit:      injectKillDuringInit,
	KindKillDuringPrepare:   injectKillDuringPrepare,
	KindKillNewDuringUpdate: injectKillNewDuringUpdate,
	KindFaultDuringStop:     injectFaultDuringStop,
	KindUpdateRollback:      injectUpdateRollback,
	KindUpdateOK:            injectUpdateOK,
}

func init() {
	for _, k := range KVKinds {
		injectors[k] = injectKV
	}
}

// Bounds of the waits inside an injection.
const (
	stepTimeout   = 5 * time.Second  // a step the fault waits for (a pid, a phase)
	updateTimeout = 15 * time.Second // an update's final reply
	prepareSleep  = 10.0             // seconds: far longer than prepareMax
	prepareMax    = 2 * time.Second  // maxtime of the update held in prepare
)

var (
	errStateLost  = errors.New("state lost")
	errUnexpected = errors.New("unexpected outcome")
)

// injectKV: DEBUG FAULT <kind>; kv answers +OK, then fails.
func injectKV(c *campaign, s *service, f fault, _ *rand.Rand, st control.Status) (expect, string, error) {
	exp := expect{t0: time.Now(), pid: st.Pid, not: []int{st.Pid}, crash: true}
	return exp, "", debugFault(s.addr, f.kind)
}

// injectSigkill: kill -9 at a random moment of the instance's life.
func injectSigkill(c *campaign, s *service, _ fault, r *rand.Rand, st control.Status) (expect, string, error) {
	ch, err := openChild(st.Pid, c.rs.pid)
	if err != nil {
		return expect{}, "", err
	}
	defer ch.close()
	time.Sleep(between(r, 0, 100*time.Millisecond)) // the random moment
	exp := expect{t0: time.Now(), pid: st.Pid, not: []int{st.Pid}, crash: true}
	if err := ch.signal(syscall.SIGKILL); err != nil {
		return exp, "", fmt.Errorf("kill -9 %d: %w", st.Pid, err)
	}
	return exp, "", nil
}

// injectKillDuringInit: kill -9, then kill -9 the next instance as soon
// as status names it, with or without a short random delay.
func injectKillDuringInit(c *campaign, s *service, _ fault, r *rand.Rand, st control.Status) (expect, string, error) {
	exp := expect{t0: time.Now(), pid: st.Pid, not: []int{st.Pid}, crash: true}
	if _, err := killChild(st.Pid, c.rs.pid); err != nil {
		return exp, "", fmt.Errorf("kill -9 %d: %w", st.Pid, err)
	}
	var delay time.Duration
	if r.IntN(2) == 1 {
		delay = between(r, 0, 3*time.Millisecond)
	}
	deadline := time.Now().Add(stepTimeout)
	for time.Now().Before(deadline) {
		rep, err := c.rs.status(s.label)
		if err != nil {
			return exp, "", err
		}
		next := rep.Services[0]
		if next.Pid == 0 || next.Pid == st.Pid {
			continue // no sleep: the point is to catch it early
		}
		c.pids.add(next.Pid)
		exp.not = append(exp.not, next.Pid)
		time.Sleep(delay)
		alive, err := killChild(next.Pid, c.rs.pid)
		switch {
		case err != nil:
			return exp, "missed: " + err.Error(), nil
		case !alive:
			return exp, "missed: it had exited already", nil
		case next.State == control.StateStarting:
			return exp, "killed while starting", nil
		default:
			return exp, "killed just after it was " + next.State, nil
		}
	}
	return exp, "", fmt.Errorf("no new instance after the kill within %v", stepTimeout)
}

// injectFaultDuringStop: `service restart` and kill -9 the instance while
// it stops. Half the time the instance is frozen (SIGSTOP) first so that
// it stays `stopping` until the kill; the other half the kill races the
// stop after a random delay of up to 1ms.
func injectFaultDuringStop(c *campaign, s *service, f fault, r *rand.Rand, st control.Status) (expect, string, error) {
	exp := expect{pid: st.Pid, not: []int{st.Pid}}
	ch, err := openChild(st.Pid, c.rs.pid)
	if err != nil {
		return exp, "", err
	}
	defer ch.close()
	frozen := r.IntN(2) == 0
	if frozen {
		if err := ch.signal(syscall.SIGSTOP); err != nil {
			return exp, "", fmt.Errorf("kill -STOP %d: %w", st.Pid, err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.rs.ctl.Do(control.Request{Op: control.OpRestart, Label: s.label}, nil)
		done <- err
	}()
	outcome := ""
	if frozen {
		deadline := time.Now().Add(stepTimeout)
		for outcome == "" {
			rep, err := c.rs.status(s.label)
			if err != nil {
				return exp, "", err
			}
			switch now := rep.Services[0]; {
			case now.State == control.StateStopping && now.Pid == st.Pid:
				outcome = "frozen, killed while stopping"
			case now.Pid != st.Pid:
				outcome = "frozen, missed: replaced before the stop (" + now.State + ")"
			case time.Now().After(deadline):
				return exp, "", fmt.Errorf("not stopping within %v of the restart", stepTimeout)
			default:
				time.Sleep(time.Millisecond)
			}
		}
		time.Sleep(between(r, 0, 100*time.Millisecond)) // within the first stop_grace
	} else {
		time.Sleep(between(r, 0, time.Millisecond))
	}
	exp.t0 = time.Now()
	alive := !ch.zombie()
	if err := ch.signal(syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return exp, "", fmt.Errorf("kill -9 %d: %w", st.Pid, err)
	}
	if !frozen {
		outcome = "raced, it had exited already"
		if alive {
			outcome = "raced, killed before it exited"
		}
	}
	select {
	case err := <-done:
		if err != nil {
			return exp, outcome, fmt.Errorf("restart: %w", err)
		}
	case <-time.After(updateTimeout):
		return exp, outcome, fmt.Errorf("restart: no reply within %v", updateTimeout)
	}
	return exp, outcome, nil
}

// normalise makes a reason countable: no label, no numbers.
func normalise(s, label string) string {
	s = strings.TrimPrefix(s, "update "+label+" ")
	s = strings.ReplaceAll(s, label, "<svc>")
	var b strings.Builder
	digits := false
	for _, r := range s {
		if r >= '0' && r <= '9' {
			if !digits {
				b.WriteByte('N')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > 120 {
		out = out[:120] + "…"
	}
	return out
}
