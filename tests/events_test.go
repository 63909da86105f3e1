package tests

import (
	"encoding/json"
	"fmt"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// watchEvents runs `service events args...` until the test ends, waits
// until rs counts its watcher, and returns its output's lines.
func (r *rsProc) watchEvents(args ...string) <-chan string {
	r.t.Helper()
	before := r.watchers()
	lines := r.follow(append([]string{"events"}, args...)...)
	r.waitFor("the events watcher", func() bool { return r.watchers() > before })
	return lines
}

func (r *rsProc) watchers() int64 {
	r.t.Helper()
	rep, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil || rep.Daemon == nil {
		r.t.Fatalf("status: %v", err)
	}
	return rep.Daemon.Watchers
}

// nextEvent reads --json lines until one is event ev of label.
func nextEvent(t *testing.T, lines <-chan string, label, ev string) control.Event {
	t.Helper()
	return nextEventOnly(t, lines, label, ev, false)
}

// nextEventOnly is nextEvent; with only, an event of another label
// before it fails the test.
func nextEventOnly(t *testing.T, lines <-chan string, label, ev string, only bool) control.Event {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("service events ended before %s %s", label, ev)
			}
			var e control.Event
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("service events --json: %v: %q", err, l)
			}
			if e.Time.IsZero() || e.Event == "" {
				t.Fatalf("an event without time or name: %q", l)
			}
			if only && e.Label != label {
				t.Fatalf("an event of %s in a watch of %s: %q", e.Label, label, l)
			}
			if e.Label == label && e.Event == ev {
				return e
			}
		case <-timeout:
			t.Fatalf("no event %s of %s", ev, label)
		}
	}
}

// A crash and an update, as `service events --json` tells them: the
// exit with its reason, the reincarnation, the new instance ready; the
// update's start and commit with the new pid; and in text form the same
// steps, one line each.
func TestEventsCrashAndUpdate(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, ""))
	first := r.waitState("kv", control.StateRunning, 0)
	js := r.watchEvents("--json")
	text := r.watchEvents("kv")

	syscall.Kill(first.Pid, syscall.SIGKILL)
	ex := nextEvent(t, js, "kv", "exited")
	if ex.Pid != first.Pid || ex.Kind != "terminated" || !regexp.MustCompile(`SIGKILL|killed`).MatchString(ex.Reason) {
		t.Errorf("exited: %+v", ex)
	}
	re := nextEvent(t, js, "kv", "reincarnating")
	if re.Restarts != 1 {
		t.Errorf("reincarnating: restarts %d, want 1", re.Restarts)
	}
	sp := nextEvent(t, js, "kv", "spawned")
	rd := nextEvent(t, js, "kv", "ready")
	if sp.Pid == first.Pid || rd.Pid != sp.Pid || rd.State != control.StateRunning {
		t.Errorf("spawned %+v, ready %+v", sp, rd)
	}

	r.mustService("update", "kv")
	us := nextEvent(t, js, "kv", "update-started")
	uc := nextEvent(t, js, "kv", "update-committed")
	if us.Pid == rd.Pid || uc.Pid != us.Pid {
		t.Errorf("update-started %+v, update-committed %+v", us, uc)
	}

	line := func(ev string, pid int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z kv %s pid=%d `, ev, pid))
	}
	nextLine(t, text, line("exited", first.Pid), nil)
	nextLine(t, text, regexp.MustCompile(`^\S+ kv reincarnating state=starting reason="terminated: .*" restarts=1$`), nil)
	nextLine(t, text, line("ready", rd.Pid), nil)
	nextLine(t, text, line("update-committed", uc.Pid), nil)
}

// A watcher of one label sees only that service's events; a label rs
// does not know is refused.
func TestEventsOfOneService(t *testing.T) {
	r := startRS(t, `
[service.a]
binary = "$BIN/roles"
args = ["-role", "say"]

[service.b]
binary = "$BIN/roles"
args = ["-role", "say"]
`)
	a := r.waitState("a", control.StateRunning, 0)
	b := r.waitState("b", control.StateRunning, 0)
	lines := r.watchEvents("--json", "b")
	syscall.Kill(a.Pid, syscall.SIGKILL)
	r.waitState("a", control.StateRunning, a.Pid)
	syscall.Kill(b.Pid, syscall.SIGKILL)
	// a's crash and reincarnation came first; none of it may show.
	nextEventOnly(t, lines, "b", "exited", true)
	if ev := nextEventOnly(t, lines, "b", "ready", true); ev.Pid == b.Pid {
		t.Errorf("b ready again with its old pid: %+v", ev)
	}
	if _, stderr, code := r.service("events", "nosuch"); code == 0 || !regexp.MustCompile(`unknown.*nosuch`).MatchString(stderr) {
		t.Errorf("events of an unknown label: exit %d, %q", code, stderr)
	}
}

// allEvents reads --json lines until it has seen each of want ("label
// event"), in any order.
func allEvents(t *testing.T, lines <-chan string, want ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, w := range want {
		left[w] = true
	}
	timeout := time.After(waitTimeout)
	for len(left) > 0 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("service events ended before %v", left)
			}
			var e control.Event
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("service events --json: %v: %q", err, l)
			}
			delete(left, e.Label+" "+e.Event)
		case <-timeout:
			t.Fatalf("no events %v", left)
		}
	}
}
