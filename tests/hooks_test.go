package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// hookScript is a hook that says on both streams that it ran, and
// appends what it was told to $DIR/calls, one line per run:
// kind|RS_LABEL|RS_REASON|RS_RESTARTS|RS_STATE|pwd|HOOKENV|uid:gid.
const hookScript = `#!/bin/sh
echo "hook $1 out"
echo "hook $1 err" >&2
printf '%s|%s|%s|%s|%s|%s|%s|%s:%s\n' "$1" "$RS_LABEL" "$RS_REASON" "$RS_RESTARTS" "$RS_STATE" "$(pwd)" "$HOOKENV" "$(id -u)" "$(id -g)" >> "$(dirname "$0")/calls"
`

// writeScript writes an executable script into dir.
func writeScript(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// hookCalls reads $DIR/calls: each run's fields.
func hookCalls(dir string) [][]string {
	b, _ := os.ReadFile(filepath.Join(dir, "calls"))
	var out [][]string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if strings.HasSuffix(l, "\n") {
			out = append(out, strings.Split(strings.TrimSuffix(l, "\n"), "|"))
		}
	}
	return out
}

func (r *rsProc) waitCalls(n int) [][]string {
	r.t.Helper()
	var calls [][]string
	r.waitFor(strconv.Itoa(n)+" hook runs", func() bool {
		calls = hookCalls(r.dir)
		return len(calls) >= n
	})
	return calls
}

// TestHookOnExit: a SIGKILL runs on_exit with the RS_* variables (the
// state once rs decided: reincarnated at once, starting), the service's
// env and workdir; its output is in the service's log. A stop rs asked
// for runs no hook.
func TestHookOnExit(t *testing.T) {
	r := startRS(t, `
[service.sl]
type = "simple"
binary = "/bin/sleep"
args = ["1000"]
workdir = "$DIR"
env = { HOOKENV = "from-env" }
on_exit = ["$DIR/hook.sh", "exit"]
`)
	writeScript(t, r.dir, "hook.sh", hookScript)
	st := r.waitState("sl", control.StateRunning, 0)
	r.mustService("signal", "SIGKILL", "sl")
	calls := r.waitCalls(1)
	want := []string{"exit", "sl", "terminated: SIGKILL", "1", "starting", r.dir, "from-env", "0:0"}
	if strings.Join(calls[0], "|") != strings.Join(want, "|") {
		t.Fatalf("hook run\n got %q\nwant %q", calls[0], want)
	}
	r.waitLog("sl", func(l [][2]string) bool {
		var out, errs bool
		for _, e := range l {
			out = out || e == [2]string{"out", "hook exit out"}
			errs = errs || e == [2]string{"err", "hook exit err"}
		}
		return out && errs
	})
	st = r.waitState("sl", control.StateRunning, st.Pid)

	// A stop rs asked for is no exit for on_exit; the next kill is.
	r.mustService("down", "sl")
	r.mustService("up", "sl")
	r.waitState("sl", control.StateRunning, st.Pid)
	r.mustService("signal", "SIGKILL", "sl")
	calls = r.waitCalls(2)
	if len(calls) != 2 || calls[1][2] != "terminated: SIGKILL" {
		t.Fatalf("hook runs after down, up and a kill: %q", calls)
	}
}

// TestHookOnFailure: a service that crash-loops past max_restarts runs
// on_failure with RS_STATE failed, after the on_exit of its last exit;
// its output reaches the log although a failed service gives its pipes
// back.
func TestHookOnFailure(t *testing.T) {
	r := startRS(t, `
[service.bad]
type = "simple"
binary = "/bin/sh"
# The first instance waits for the hook, which the test writes once rs
# runs; every one exits 3.
args = ["-c", "while [ ! -x $DIR/hook.sh ]; do sleep 0.01; done; exit 3"]
backoff_base = "10ms"
backoff_cap = "10ms"
max_restarts = 2
failed_retry = "0s"
on_failure = ["$DIR/hook.sh", "failure"]
on_exit = ["$DIR/hook.sh", "exit"]
`)
	writeScript(t, r.dir, "hook.sh", hookScript)
	r.waitState("bad", control.StateFailed, 0)
	var calls [][]string
	r.waitFor("on_failure", func() bool {
		calls = hookCalls(r.dir)
		return len(calls) > 0 && calls[len(calls)-1][0] == "failure"
	})
	c := calls[len(calls)-1]
	if c[1] != "bad" || c[2] != "terminated: exit 3" || c[4] != "failed" {
		t.Fatalf("on_failure run: %q", c)
	}
	// on_exit ran for an exit before (with the state that followed it);
	// the last exit's, if it ran, came before on_failure.
	if e := calls[0]; e[0] != "exit" || e[2] != "terminated: exit 3" || (e[4] != "starting" && e[4] != "backoff" && e[4] != "failed") {
		t.Fatalf("first hook run: %q (runs %q)", e, calls)
	}
	if n, err := strconv.Atoi(c[3]); err != nil || n != r.status("bad").Restarts {
		t.Fatalf("RS_RESTARTS %q, status says %d", c[3], r.status("bad").Restarts)
	}
	r.waitLog("bad", func(l [][2]string) bool {
		for _, e := range l {
			if e == [2]string{"out", "hook failure out"} {
				return true
			}
		}
		return false
	})
}

// TestHookTimeout: a hook that outlives hook_timeout is killed with its
// whole process group; the service was reincarnated meanwhile, and rs
// serves on and runs the next hook.
func TestHookTimeout(t *testing.T) {
	r := startRS(t, `
[service.sl]
type = "simple"
binary = "/bin/sleep"
args = ["1000"]
hook_timeout = "2s"
on_exit = ["$DIR/slow.sh"]
`)
	writeScript(t, r.dir, "slow.sh", `#!/bin/sh
sleep 1000 &
echo "$$ $!" > "$(dirname "$0")/pids.tmp"
mv "$(dirname "$0")/pids.tmp" "$(dirname "$0")/pids"
wait
`)
	st := r.waitState("sl", control.StateRunning, 0)
	r.mustService("signal", "SIGKILL", "sl")
	var pids []int
	r.waitFor("the hook's pids", func() bool {
		b, err := os.ReadFile(filepath.Join(r.dir, "pids"))
		if err != nil {
			return false
		}
		pids = nil
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return len(pids) == 2
	})
	// Reincarnated while the hook still runs.
	r.waitState("sl", control.StateRunning, st.Pid)
	for _, p := range pids {
		if !alive(p) {
			t.Fatalf("hook process %d gone before its bound: reincarnation waited for it", p)
		}
	}
	r.waitFor("the hook and its child killed", func() bool { return !alive(pids[0]) && !alive(pids[1]) })
	r.waitFor("the kill logged", func() bool { return strings.Contains(r.log.String(), "hook killed: it ran past hook_timeout") })
	if got := r.status("sl"); got.State != control.StateRunning || got.Restarts != 1 {
		t.Fatalf("after the hook's kill: %s, %d restarts", got.State, got.Restarts)
	}
}

// TestHookAsServiceUser: the hook runs as the service's user and group;
// `service up` takes the hook as a flag, split on spaces, and refuses a
// relative program.
func TestHookAsServiceUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	r := startRS(t, "")
	// nobody must reach the script and write calls beside it.
	for _, d := range []string{r.dir, filepath.Dir(r.dir)} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	writeScript(t, r.dir, "hook.sh", hookScript)
	up := []string{"up", "--type", "simple", "--binary", "/bin/sleep", "--args", "1000", "--user", "nobody"}
	if _, errs, code := r.service(append(up, "--on-exit", "hook.sh exit", "sl")...); code == 0 || !strings.Contains(errs, "absolute path") {
		t.Fatalf("relative hook: exit %d: %s", code, errs)
	}
	r.mustService(append(up, "--on-exit", filepath.Join(r.dir, "hook.sh")+" exit", "sl")...)
	r.waitState("sl", control.StateRunning, 0)
	r.mustService("signal", "SIGKILL", "sl")
	calls := r.waitCalls(1)
	if got := calls[0][7]; got != "65534:65534" {
		t.Fatalf("hook ran as %s, want 65534:65534 (nobody)", got)
	}
}

// TestHooksDoNotPileUp: while a hook runs, a crash-looping service's
// further exits queue one more run and drop the rest, and the service
// loops on meanwhile.
func TestHooksDoNotPileUp(t *testing.T) {
	r := startRS(t, `
[service.loop]
type = "simple"
binary = "/bin/sh"
args = ["-c", "[ -e $DIR/ran ] || { touch $DIR/ran; exec sleep 1000; }; exit 1"]
backoff_base = "10ms"
backoff_cap = "10ms"
max_restarts = -1
on_exit = ["$DIR/gate.sh"]
`)
	writeScript(t, r.dir, "gate.sh", `#!/bin/sh
d=$(dirname "$0")
echo run >> "$d/calls"
while [ ! -e "$d/open" ]; do sleep 0.02; done
`)
	// The first instance runs until killed: the exits after it are
	// crashes of a service that ran, not a first start that failed.
	r.waitState("loop", control.StateRunning, 0)
	r.mustService("signal", "SIGKILL", "loop")
	r.waitFor("exits while the first hook waits", func() bool { return r.status("loop").Restarts >= 10 })
	if n := len(hookCalls(r.dir)); n != 1 {
		t.Fatalf("%d hooks started while the first runs, want 1", n)
	}
	if !strings.Contains(r.log.String(), "hook dropped") {
		t.Fatal("no hook dropped after 10 exits with one hook running")
	}
	if err := os.WriteFile(filepath.Join(r.dir, "open"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.waitCalls(2) // the one queued runs
	r.mustService("down", "loop")
}

// TestShutdownWaitsForHook: rs's shutdown waits for a running hook up to
// its bound, kills it and its group there, and only then exits.
func TestShutdownWaitsForHook(t *testing.T) {
	r := startRS(t, `
[service.sl]
type = "simple"
binary = "/bin/sleep"
args = ["1000"]
hook_timeout = "1s"
on_exit = ["$DIR/slow.sh"]
`)
	writeScript(t, r.dir, "slow.sh", `#!/bin/sh
sleep 1000 &
echo "$$ $!" > "$(dirname "$0")/pids.tmp"
mv "$(dirname "$0")/pids.tmp" "$(dirname "$0")/pids"
wait
`)
	r.waitState("sl", control.StateRunning, 0)
	r.mustService("signal", "SIGKILL", "sl")
	var pids []int
	r.waitFor("the hook's pids", func() bool {
		b, err := os.ReadFile(filepath.Join(r.dir, "pids"))
		pids = nil
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return err == nil && len(pids) == 2
	})
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(waitTimeout):
		t.Fatal("rs did not exit on SIGTERM with a hook running")
	}
	log := r.log.String()
	killed, stopped := strings.Index(log, "hook killed: it ran past hook_timeout"), strings.Index(log, "rs stopped")
	if killed < 0 || stopped < 0 || killed > stopped {
		t.Fatalf("rs stopped before its hook's end (killed at %d, stopped at %d)", killed, stopped)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("hook process %d outlived rs", p)
		}
	}
}

// TestHookMissingProgram: a hook whose program is missing at run time is
// one log line with the label; the service goes on as without a hook.
func TestHookMissingProgram(t *testing.T) {
	r := startRS(t, `
[service.sl]
type = "simple"
binary = "/bin/sleep"
args = ["1000"]
on_exit = ["$DIR/missing.sh"]
`)
	st := r.waitState("sl", control.StateRunning, 0)
	r.mustService("signal", "SIGKILL", "sl")
	r.waitFor("the hook's log line", func() bool {
		for _, l := range strings.Split(r.log.String(), "\n") {
			if strings.Contains(l, `msg="hook not run"`) && strings.Contains(l, "label=sl") && strings.Contains(l, "missing.sh") {
				return true
			}
		}
		return false
	})
	if got := r.waitState("sl", control.StateRunning, st.Pid); got.Restarts != 1 {
		t.Fatalf("restarts %d after one kill", got.Restarts)
	}
}

// TestHookOutputAfterRemove: a hook still running when its service is
// removed keeps its stdout and stderr: the line it writes after the
// removal reaches the service's log file.
func TestHookOutputAfterRemove(t *testing.T) {
	r := startRS(t, `
[service.sl]
type = "simple"
binary = "/bin/sleep"
args = ["1000"]
on_exit = ["$DIR/late.sh"]
`)
	// It says it runs, waits (at most 20 s) for the test's go-ahead,
	// then writes a line on each stream.
	writeScript(t, r.dir, "late.sh", `#!/bin/sh
d=$(dirname "$0")
touch "$d/started"
i=0
while [ ! -e "$d/go" ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done
echo "late out"
echo "late err" >&2
`)
	r.waitState("sl", control.StateRunning, 0)
	r.mustService("signal", "SIGKILL", "sl")
	r.waitFor("the hook to start", func() bool {
		_, err := os.Stat(filepath.Join(r.dir, "started"))
		return err == nil
	})
	r.mustService("remove", "sl")
	if err := os.WriteFile(filepath.Join(r.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.waitLog("sl", func(l [][2]string) bool {
		var out, errs bool
		for _, e := range l {
			out = out || e == [2]string{"out", "late out"}
			errs = errs || e == [2]string{"err", "late err"}
		}
		return out && errs
	})
}
