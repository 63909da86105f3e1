package tests

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/rs/control"
)

// fdSlack is what rs's fd count may move by for reasons of its own: a
// control connection just closing, a reaped process's pidfd.
const fdSlack = 8

func fdRoleConfig(role string) string {
	return fmt.Sprintf(`
[service.s]
binary = "$BIN/roles"
args = ["-role", %q]
period = "0s"
restart = "always"
init_timeout = "5s"
`, role)
}

// restartWorks: `service restart` brings the service up again, with a
// new pid.
func (r *rsProc) restartWorks(label string) {
	r.t.Helper()
	before := r.status(label)
	r.mustService("restart", label)
	r.waitState(label, control.StateRunning, before.Pid)
}

// TestFDStoreCapDuringUpdate: an update's new instance that stores 300
// fds is faulty at the fd store's cap, the update rolls back, rs's fd
// count does not grow, and restarts work afterwards. (Before, the 300
// were not counted: the update committed, rs held 300 more fds, and every
// later restart failed with "too many fds", blamed on the service.)
func TestFDStoreCapDuringUpdate(t *testing.T) {
	r := startRS(t, fdRoleConfig("store-300-on-update"))
	st := r.waitState("s", control.StateRunning, 0)
	base := fdCount(t, r.cmd.Process.Pid)
	_, errOut, code := r.service("update", "s")
	if code == 0 || !strings.Contains(errOut, "rolled back: new instance faulty: fd store full") {
		t.Fatalf("update: exit %d, stderr %q, want a rollback for a full fd store", code, errOut)
	}
	if now := r.status("s"); now.Pid != st.Pid || now.State != control.StateRunning {
		t.Fatalf("after the update: %+v, want pid %d running", now, st.Pid)
	}
	fdsBackTo(t, r.cmd.Process.Pid, base+fdSlack, "after the rolled-back update")
	for i := 0; i < 3; i++ {
		r.restartWorks("s")
	}
	fdsBackTo(t, r.cmd.Process.Pid, base+fdSlack, "after the restarts")
}

// TestFDBudgetAtHandOver: a service with a full fd store (64) that hands
// 252 fds with its state at lu-ready (253 in the packet, the most the
// kernel passes; 317 would not fit the new instance's init) is over its
// fd budget: it is the faulty one and is reincarnated, rs's fd count
// stays bounded, and restarts work. (Before, rs took the fds and then
// failed the new instance's init with "too many fds", blaming it.)
func TestFDBudgetAtHandOver(t *testing.T) {
	r := startRS(t, fdRoleConfig("store-64-hand-252"))
	st := r.waitState("s", control.StateRunning, 0)
	base := fdCount(t, r.cmd.Process.Pid)
	_, errOut, code := r.service("update", "s")
	if code == 0 || !strings.Contains(errOut, "rolled back") {
		t.Fatalf("update: exit %d, stderr %q, want a rollback", code, errOut)
	}
	now := r.waitState("s", control.StateRunning, st.Pid) // reincarnated
	if want := fmt.Sprintf("over its fd budget of %d", msg.MaxFDs); !strings.Contains(now.LastExit, want) {
		t.Fatalf("last_exit %q, want it faulty for going %s", now.LastExit, want)
	}
	fdsBackTo(t, r.cmd.Process.Pid, base+fdSlack, "after the hand-over over budget")
	r.restartWorks("s")
	fdsBackTo(t, r.cmd.Process.Pid, base+fdSlack, "after the restart")
}

// TestSEFKeepsWithinTheFDBudget: sef refuses a 65th name in the fd store
// (the role checks that) and, with a full store, refuses to hand over
// more fds than the new instance's init can carry: the update is refused
// by the old instance, which carries on.
func TestSEFKeepsWithinTheFDBudget(t *testing.T) {
	r := startRS(t, fdRoleConfig("sef-hand-300"))
	st := r.waitState("s", control.StateRunning, 0)
	base := fdCount(t, r.cmd.Process.Pid)
	_, errOut, code := r.service("update", "--maxtime", "5s", "s")
	if code == 0 || !strings.Contains(errOut, "refused by the old instance") {
		t.Fatalf("update: exit %d, stderr %q, want it refused by the old instance", code, errOut)
	}
	if now := r.status("s"); now.Pid != st.Pid || now.State != control.StateRunning {
		t.Fatalf("after the refused update: %+v, want pid %d running", now, st.Pid)
	}
	fdsBackTo(t, r.cmd.Process.Pid, base+fdSlack, "after the refused update")
	r.restartWorks("s")
}

// nofile reads a process's RLIMIT_NOFILE from /proc.
func nofile(t *testing.T, pid int) (soft, hard uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				soft, err1 := strconv.ParseUint(f[0], 10, 64)
				hard, err2 := strconv.ParseUint(f[1], 10, 64)
				if err1 == nil && err2 == nil {
					return soft, hard
				}
			}
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits:\n%s", pid, b)
	return 0, 0
}

// TestNofileLimits: rs runs with its soft RLIMIT_NOFILE raised to the
// hard limit (Go's runtime does it at start, to hard-1), and the services
// it starts get the soft limit rs itself was started with, not rs's.
// (This held before issue 10 too; the test keeps it so.)
func TestNofileLimits(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	const low = 1000
	if old.Max < 2*low {
		t.Skipf("hard RLIMIT_NOFILE %d is too low to tell the limits apart", old.Max)
	}
	// rs inherits this soft limit from the test.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: low, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	// A service written in Go raises its own soft limit at start, as rs
	// does: the child here is sleep, which never says hello, read while
	// rs waits for it.
	r := startRS(t, `
[service.s]
binary = "/bin/sleep"
args = ["3600"]
period = "0s"
restart = "never"
init_timeout = "1m"
`)
	st := r.waitFor2("s", func(st control.Status) bool { return st.Pid != 0 })
	if soft, hard := nofile(t, r.cmd.Process.Pid); hard != old.Max || soft+1 < hard {
		t.Errorf("rs runs with open files %d/%d, want the soft limit raised to the hard %d", soft, hard, old.Max)
	}
	if soft, _ := nofile(t, st.Pid); soft != low {
		t.Errorf("the service runs with a soft open files limit of %d, want %d, the one rs was started with", soft, low)
	}
}

// TestFDBudgetCountsClosing: a service that replaces a lingering socket
// in its fd store again and again leaves rs a close that takes a minute
// each time. Those fds count in its budget until they are closed: past
// it the service is faulty, and rs holds no more than the budget for it.
// (Before, each replacement left rs one more fd and one more goroutine
// for a minute, without bound.)
func TestFDBudgetCountsClosing(t *testing.T) {
	// A peer that never accepts nor reads, with a small window.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := startRS(t, fmt.Sprintf(`
[service.s]
binary = "$BIN/roles"
args = ["-role", "linger-flood", %q]
period = "0s"
restart = "never"
`, ln.Addr().String()))
	// Last cleanup first: closing the listener resets the connections in
	// its backlog, which ends the lingering closes before rs is stopped.
	t.Cleanup(func() { ln.Close() })
	st := r.waitFor2("s", func(st control.Status) bool { return st.State == control.StateDown || st.State == control.StateFailed })
	if want := fmt.Sprintf("over its fd budget of %d", msg.MaxFDs); !strings.Contains(st.LastExit, want) {
		t.Fatalf("last_exit %q, want it faulty for going %s", st.LastExit, want)
	}
	rep, err := r.client().Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Daemon.Closing > msg.MaxFDs {
		t.Errorf("rs is closing %d fds of the service, more than its budget of %d", rep.Daemon.Closing, msg.MaxFDs)
	}
}

// TestFDStoreCountsEachNameOnce: an update's new instance that stores
// again, under the same names, the 64 fds it was given is within the cap
// (each name counts once); the commit replaces the old store with its
// own, and rs is back to the fds it held before.
func TestFDStoreCountsEachNameOnce(t *testing.T) {
	r := startRS(t, fdRoleConfig("store-64"))
	st := r.waitState("s", control.StateRunning, 0)
	base := fdCount(t, r.cmd.Process.Pid)
	for i := 0; i < 3; i++ {
		if _, errOut, code := r.service("update", "s"); code != 0 {
			t.Fatalf("update %d: exit %d, stderr %q", i, code, errOut)
		}
		st = r.waitState("s", control.StateRunning, st.Pid)
	}
	fdsBackTo(t, r.cmd.Process.Pid, base+fdSlack, "after the updates")
	r.restartWorks("s")
}
