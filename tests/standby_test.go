package tests

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/reincarnation/rs/rs/control"
)

// TestStandby: a warm standby takes over a crashed kv at once, a new
// standby follows, and clone/unclone, down/up and update keep the standby
// in step with the service.
func TestStandby(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, `standby = true`))
	st := r.waitFor2("kv", func(st control.Status) bool { return st.State == control.StateRunning && st.StandbyPid != 0 })
	if !st.Standby {
		t.Fatalf("standby not reported as wanted: %+v", st)
	}

	// Crash: the standby becomes the instance.
	syscall.Kill(st.Pid, syscall.SIGKILL)
	// The standby takes over as soon as the channel closes, before the
	// reap; last_exit is filled in when the exit is reaped.
	next := r.waitFor2("kv", func(n control.Status) bool {
		return n.State == control.StateRunning && n.Pid != st.Pid && n.LastExit != "exiting (its exit status follows)"
	})
	if next.Pid != st.StandbyPid || next.LastExit != "terminated: SIGKILL" || next.Restarts != 1 {
		t.Fatalf("after the crash: %+v; want pid %d (the standby)", next, st.StandbyPid)
	}
	// The standby takes over at the end of the dead instance's channel:
	// before the reap when the end comes first ("replaced=true" in the
	// log), else as the reap is judged. Which comes first is the
	// scheduler's; rs.TestStandbyTakesOverAtChannelEnd drives the first.
	r.waitFor("the log to say the standby took over", func() bool {
		return strings.Contains(r.log.String(), fmt.Sprintf(`msg="standby takes over" label=kv pid=%d`, st.StandbyPid))
	})
	if kvPid(t, addr) != next.Pid {
		t.Fatal("the promoted standby does not serve")
	}
	next = r.waitFor2("kv", func(n control.Status) bool { return n.StandbyPid != 0 && n.StandbyPid != st.StandbyPid })

	// A standby that dies on its own is replaced; the service is untouched.
	syscall.Kill(next.StandbyPid, syscall.SIGKILL)
	again := r.waitFor2("kv", func(n control.Status) bool { return n.StandbyPid != 0 && n.StandbyPid != next.StandbyPid })
	if again.Pid != next.Pid || again.Restarts != next.Restarts {
		t.Fatalf("a dying standby disturbed the service: %+v", again)
	}

	// unclone ends the standby; clone brings one back.
	r.mustService("unclone", "kv")
	if st := r.status("kv"); st.StandbyPid != 0 || st.Standby {
		t.Fatalf("after unclone: %+v", st)
	}
	r.waitFor("the dropped standby to go", func() bool { return !alive(again.StandbyPid) })
	if out := r.mustService("clone", "kv"); !strings.Contains(out, "standby pid") {
		t.Errorf("clone said %q", out)
	}
	cloned := r.status("kv")
	if cloned.StandbyPid == 0 || !alive(cloned.StandbyPid) {
		t.Fatalf("after clone: %+v", cloned)
	}

	// down takes the standby along; up brings both back.
	r.mustService("down", "kv")
	r.waitFor("the standby to stop with the service", func() bool { return !alive(cloned.StandbyPid) })
	r.mustService("up", "kv")
	r.waitFor2("kv", func(n control.Status) bool { return n.StandbyPid != 0 })

	// An update replaces the standby with one of the new binary.
	r.mustService("update", "--binary", bin("kv-b"), "kv")
	up := r.waitFor2("kv", func(n control.Status) bool { return n.StandbyPid != 0 && n.Binary == bin("kv-b") })
	exe, err := readExe(up.StandbyPid)
	if err != nil || exe != bin("kv-b") {
		t.Fatalf("standby after update runs %q (%v), want %s", exe, err, bin("kv-b"))
	}
	if out, errOut, code := r.service("clone", "nosuch"); code == 0 || !strings.Contains(errOut, "unknown service") {
		t.Errorf("clone of an unknown label: %q %q %d", out, errOut, code)
	}
}
