package campaign

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// update runs one update in the background and reports its progress
// lines as they come.
type update struct {
	done    chan error
	mu      sync.Mutex
	lines   []string
	arrived chan struct{} // a line arrived (capacity 1: a nudge)
	newPid  int           // from "new instance started: pid N"
}

func (c *campaign) startUpdate(label, binary string, state int, maxTime time.Duration) *update {
	u := &update{done: make(chan error, 1), arrived: make(chan struct{}, 1)}
	go func() {
		_, err := c.rs.ctl.Do(control.Request{Op: control.OpUpdate, Label: label, Binary: binary, State: state, MaxTime: maxTime}, func(p string) {
			u.mu.Lock()
			u.lines = append(u.lines, p)
			if rest, ok := strings.CutPrefix(p, "new instance started: pid "); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					u.newPid, _ = strconv.Atoi(f[0])
				}
			}
			u.mu.Unlock()
			select {
			case u.arrived <- struct{}{}:
			default:
			}
		})
		u.done <- err
	}()
	return u
}

// waitLine waits for a progress line starting with prefix. If the update
// ends first its error is returned (nil if it succeeded).
func (u *update) waitLine(prefix string) (bool, error) {
	t := time.NewTimer(stepTimeout)
	defer t.Stop()
	for {
		u.mu.Lock()
		for _, l := range u.lines {
			if strings.HasPrefix(l, prefix) {
				u.mu.Unlock()
				return true, nil
			}
		}
		u.mu.Unlock()
		select {
		case <-u.arrived:
		case err := <-u.done:
			u.done <- err // for wait
			return false, err
		case <-t.C:
			return false, fmt.Errorf("no %q progress within %v", prefix, stepTimeout)
		}
	}
}

// phase names the update's phase from the last step it reported.
func (u *update) phase() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.lines) == 0 {
		return "before it started"
	}
	last := u.lines[len(u.lines)-1]
	switch {
	case strings.HasPrefix(last, "new instance started"):
		return "before its hello"
	case strings.HasPrefix(last, "preparing"), strings.HasPrefix(last, "pre-copy base streamed"):
		return "while the old one prepared"
	case strings.HasPrefix(last, "ready"):
		return "in its live-update init"
	}
	p, _, _ := strings.Cut(last, ":")
	return "after " + strings.TrimSpace(p)
}

// pid is the new instance's, once the update has said it.
func (u *update) pid() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.newPid
}

// wait returns the update's final result.
func (u *update) wait() error {
	t := time.NewTimer(updateTimeout)
	defer t.Stop()
	select {
	case err := <-u.done:
		return err
	case <-t.C:
		return fmt.Errorf("update: no reply within %v", updateTimeout)
	}
}

// injectKillDuringPrepare: a DEBUG SLEEP keeps kv from being
// request-free, so an update to state 2 waits in prepare; kill -9 the old
// instance meanwhile. The update must fail, and the service come back as
// after any crash.
func injectKillDuringPrepare(c *campaign, s *service, f fault, r *rand.Rand, st control.Status) (expect, string, error) {
	exp := expect{pid: st.Pid, not: []int{st.Pid}, crash: true}
	ch, err := openChild(st.Pid, c.rs.pid)
	if err != nil {
		return exp, "", err
	}
	defer ch.close()
	sl, err := sleeper(s.addr, prepareSleep)
	if err != nil {
		return exp, "", err
	}
	defer sl.Close()
	deadline := time.Now().Add(stepTimeout)
	for {
		n, err := blocked(s.addr)
		if err != nil {
			return exp, "", err
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			return exp, "", fmt.Errorf("DEBUG SLEEP not in flight within %v", stepTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	u := c.startUpdate(s.label, "", 2, prepareMax)
	if ok, err := u.waitLine("preparing"); !ok {
		exp.t0 = time.Now()
		return exp, "", fmt.Errorf("%w: the update ended before prepare: %v", errUnexpected, err)
	}
	time.Sleep(between(r, 0, 20*time.Millisecond))
	exp.t0 = time.Now()
	if err := ch.signal(syscall.SIGKILL); err != nil {
		return exp, "", fmt.Errorf("kill -9 %d: %w", st.Pid, err)
	}
	err = u.wait()
	if err == nil {
		return exp, "", fmt.Errorf("%w: the update succeeded though its old instance was killed in prepare", errUnexpected)
	}
	return exp, "update: " + normalise(err.Error(), s.label), nil
}

// injectKillNewDuringUpdate: update to a build that hangs in its
// live-update init, and kill -9 the new instance after a random delay
// (in whichever phase the update is then), or, one time in eight, let its
// init time out. Either way the update rolls back and the old instance
// keeps serving.
func injectKillNewDuringUpdate(c *campaign, s *service, f fault, r *rand.Rand, st control.Status) (expect, string, error) {
	exp := expect{pid: st.Pid, same: true, marker: fmt.Sprintf("campaign:marker:%d", f.n), markerVal: strconv.FormatUint(f.seed, 36)}
	if err := setMarker(s.addr, exp.marker, exp.markerVal); err != nil {
		return exp, "", err
	}
	exp.t0 = time.Now()
	u := c.startUpdate(s.label, filepath.Join(c.cfg.Bin, "kv-luhang"), 1, 0)
	if ok, err := u.waitLine("new instance started"); !ok {
		return exp, "", fmt.Errorf("%w: the update ended before starting the new instance: %v", errUnexpected, err)
	}
	pid := u.pid()
	c.pids.add(pid)
	exp.not = []int{pid}
	if r.IntN(8) == 0 {
		// Now and then nobody kills it: its init times out.
		err := u.wait()
		if err == nil {
			return exp, "", fmt.Errorf("%w: the update to kv-luhang succeeded", errUnexpected)
		}
		return exp, "left alone; update: " + normalise(err.Error(), s.label), nil
	}
	time.Sleep(between(r, 0, 30*time.Millisecond))
	phase := u.phase()
	alive, kerr := killChild(pid, c.rs.pid)
	err := u.wait()
	if err == nil {
		return exp, "", fmt.Errorf("%w: the update to kv-luhang succeeded", errUnexpected)
	}
	outcome := "killed " + phase
	switch {
	case kerr != nil:
		outcome = "missed (" + kerr.Error() + ")"
	case !alive:
		outcome = "missed (it had exited already)"
	}
	return exp, outcome + "; update: " + normalise(err.Error(), s.label), nil
}

// injectUpdateRollback: update to a build whose live-update init fails;
// the update must fail and the old instance keep its pid and state.
func injectUpdateRollback(c *campaign, s *service, f fault, r *rand.Rand, st control.Status) (expect, string, error) {
	exp := expect{pid: st.Pid, same: true, marker: fmt.Sprintf("campaign:marker:%d", f.n), markerVal: strconv.FormatUint(f.seed, 36)}
	if err := setMarker(s.addr, exp.marker, exp.markerVal); err != nil {
		return exp, "", err
	}
	bin := []string{"kv-lurestore", "kv-luexit"}[r.IntN(2)]
	exp.t0 = time.Now()
	u := c.startUpdate(s.label, filepath.Join(c.cfg.Bin, bin), 1, 0)
	err := u.wait()
	c.pids.add(u.pid())
	if err == nil {
		return exp, "", fmt.Errorf("%w: the update to %s succeeded", errUnexpected, bin)
	}
	if !strings.Contains(err.Error(), "rolled back") {
		return exp, "", fmt.Errorf("%w: update to %s: %v", errUnexpected, bin, err)
	}
	return exp, bin + ": " + normalise(err.Error(), s.label), nil
}

// injectUpdateOK: update to the other version; it must succeed, a new
// pid must serve, with the new version and the old state.
func injectUpdateOK(c *campaign, s *service, f fault, r *rand.Rand, st control.Status) (expect, string, error) {
	exp := expect{pid: st.Pid, not: []int{st.Pid}, marker: fmt.Sprintf("campaign:marker:%d", f.n), markerVal: strconv.FormatUint(f.seed, 36)}
	if err := setMarker(s.addr, exp.marker, exp.markerVal); err != nil {
		return exp, "", err
	}
	next, version := "kv-a", "a"
	if filepath.Base(st.Binary) == "kv-a" {
		next, version = "kv-b", "b"
	}
	exp.version = version
	exp.t0 = time.Now()
	u := c.startUpdate(s.label, filepath.Join(c.cfg.Bin, next), 1, 0)
	err := u.wait()
	c.pids.add(u.pid())
	if err != nil {
		return exp, "", fmt.Errorf("update to %s: %w", next, err)
	}
	return exp, "", nil
}
